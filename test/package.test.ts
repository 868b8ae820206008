// The npm package as users get it: `npm run prebuild` writes prebuilds/<platform>-<arch>/ (the addon
// and the CUDA backend beside it), `npm pack` ships it, and a project that installs the tarball loads
// the addon from there with no compiler, no cmake-js and no install script.
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const MAX_TARBALL_BYTES = 150 * 1024 * 1024;
const CUDA_LIBRARY = 'libsafety_arithmetic_cuda.so';

function packageRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file) && (JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string }).name === 'safety-arithmetic') return dir;
    if (path.dirname(dir) === dir) throw new Error(`no safety-arithmetic package.json above ${__dirname}`);
  }
}

const root = packageRoot();
const pkgName = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string }).name;
const tuple = `${process.platform}-${process.arch}`;
const addonFile = `${pkgName}.node`;

interface RunResult {
  code: number | null;
  output: string;
}

// Child npm processes must not inherit the npm_* variables of the `npm test` that runs ava: they
// would point them at this package instead of the folder they run in.
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return { ...env, ...extra };
}

function run(command: string, args: string[], cwd: string, env = cleanEnv()): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

const tail = (s: string, n = 4000) => (s.length > n ? '...' + s.slice(-n) : s);

function newestMtime(p: string): number {
  if (!fs.existsSync(p)) return 0;
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = 0;
  for (const e of fs.readdirSync(p)) newest = Math.max(newest, newestMtime(path.join(p, e)));
  return newest;
}

function nvccAvailable(): boolean {
  if (process.env.SAFETY_ARITHMETIC_NO_CUDA === '1') return false;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { nvccFindable } = require(path.join(root, 'scripts', 'nvcc.js')) as { nvccFindable: () => boolean };
  return nvccFindable();
}

/** Why prebuilds/<tuple> must be (re)made, or null when it is up to date. */
function prebuildStale(dir: string, wantCuda: boolean): string | null {
  const files = [addonFile].concat(wantCuda ? [CUDA_LIBRARY] : []).map((f) => path.join(dir, f));
  const missing = files.filter((f) => !fs.existsSync(f));
  if (missing.length) return `missing ${missing.map((f) => path.relative(root, f)).join(', ')}`;
  const built = Math.min(...files.map((f) => fs.statSync(f).mtimeMs));
  const sources = ['csrc', 'CMakeLists.txt', 'binding.gyp', 'scripts/build-native.js', 'scripts/prebuild.js'];
  const changed = sources.filter((s) => newestMtime(path.join(root, s)) > built);
  return changed.length ? `older than ${changed.join(', ')}` : null;
}

interface LoadReport {
  addon: string;
  backends: { name: string; available: boolean; reason: string; library: string }[];
  doctor: { addon?: string; backends: { name: string; available: boolean; reason: string }[] } | null;
  hasCmakeJs: boolean;
}

test.serial('npm pack ships the prebuilt addon and CUDA backend, and the installed package loads them without compiling', async (t) => {
  t.timeout(10 * 60e3);
  const wantCuda = nvccAvailable();
  const prebuildDir = path.join(root, 'prebuilds', tuple);

  // 1. The prebuild.
  const stale = prebuildStale(prebuildDir, wantCuda);
  if (stale) {
    t.log(`prebuilds/${tuple} is ${stale}: running npm run prebuild${wantCuda ? '' : ' -- --cpu-only (no nvcc here)'}`);
    const started = Date.now();
    const r = await run('npm', ['run', 'prebuild', ...(wantCuda ? [] : ['--', '--cpu-only'])], root);
    t.is(r.code, 0, `npm run prebuild failed:\n${tail(r.output)}`);
    if (r.code !== 0) return;
    t.log(`prebuild took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  }
  if (!wantCuda) t.log('no nvcc: the CUDA backend is neither built nor checked');

  // 2. The tarball.
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-package-test-'));
  t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));
  const packDir = path.join(work, 'pack');
  fs.mkdirSync(packDir);
  // --ignore-scripts: dist/ was compiled by `npm test`'s pretest; prepack would recompile it under
  // the feet of the other test workers.
  const pack = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', packDir], root);
  t.is(pack.code, 0, `npm pack failed:\n${tail(pack.output)}`);
  const tarballs = fs.readdirSync(packDir).filter((f) => f.endsWith('.tgz'));
  t.is(tarballs.length, 1, `npm pack wrote ${tarballs.join(', ') || 'nothing'}`);
  if (tarballs.length !== 1) return;
  const tarball = path.join(packDir, tarballs[0]);
  const size = fs.statSync(tarball).size;
  t.log(`${tarballs[0]}: ${(size / 1048576).toFixed(1)} MiB`);
  t.true(size <= MAX_TARBALL_BYTES, `the tarball is ${size} bytes, over 150 MB`);

  const list = await run('tar', ['-tzf', tarball], work);
  t.is(list.code, 0, list.output);
  const entries = new Set(list.output.split('\n').map((l) => l.trim().replace(/^package\//, '')));
  const required = [`prebuilds/${tuple}/${addonFile}`, 'dist/lib/index.js', 'package.json'];
  if (wantCuda) required.push(`prebuilds/${tuple}/${CUDA_LIBRARY}`);
  for (const f of required) t.true(entries.has(f), `the tarball lacks ${f}`);
  t.false([...entries].some((f) => f.startsWith('build/')), 'the tarball must not ship build/');
  t.false([...entries].some((f) => f.startsWith('dist/test/')), 'the tarball must not ship the tests');

  // 3. A project that installs it: no install script, so no compiler is involved.
  const consumer = path.join(work, 'consumer');
  fs.mkdirSync(consumer);
  fs.writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'sa-consumer', version: '1.0.0', private: true }, null, 2));
  const install = await run('npm', ['install', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', tarball], consumer);
  t.is(install.code, 0, `npm install of the tarball failed:\n${tail(install.output)}`);
  if (install.code !== 0) return;
  const installed = path.join(consumer, 'node_modules', pkgName);

  const script = `
    const path = require('node:path');
    const sa = require(${JSON.stringify(pkgName)});
    const ngb = require('node-gyp-build');
    const dir = path.join(process.cwd(), 'node_modules', ${JSON.stringify(pkgName)});
    const report = {
      addon: ngb.resolve(dir),
      backends: ngb(dir).backends(),
      doctor: typeof sa.doctor === 'function' ? sa.doctor() : null,
      hasCmakeJs: (() => { try { require.resolve('cmake-js/package.json'); return true; } catch { return false; } })(),
    };
    process.stdout.write('\\n@@REPORT@@' + JSON.stringify(report) + '\\n');
  `;
  // A stray SAFETY_ARITHMETIC_CUDA_LIBRARY would hide where the addon looks by itself.
  const load = await run(process.execPath, ['-e', script], consumer, cleanEnv({ SAFETY_ARITHMETIC_CUDA_LIBRARY: '' }));
  t.is(load.code, 0, `loading the installed package failed:\n${tail(load.output)}`);
  const line = load.output.split('\n').find((l) => l.startsWith('@@REPORT@@'));
  t.truthy(line, `no report from the installed package:\n${tail(load.output)}`);
  if (!line) return;
  const report = JSON.parse(line.slice('@@REPORT@@'.length)) as LoadReport;
  t.log(`addon: ${path.relative(consumer, report.addon)}`);
  for (const b of report.backends) t.log(`backend ${b.name}: ${b.available ? 'available' : 'unavailable: ' + b.reason}`);

  const shipped = path.join(installed, 'prebuilds', tuple);
  t.is(report.addon, path.join(shipped, addonFile), 'the addon must be loaded from the shipped prebuild');
  t.false(fs.existsSync(path.join(installed, 'build')), 'nothing may be built in the installed package');
  t.false(report.hasCmakeJs, 'cmake-js (a devDependency) must not be installed with the package');
  const cpu = report.backends.find((b) => b.name === 'cpu');
  t.true(cpu?.available, 'the cpu backend must be available');
  if (report.doctor) {
    t.is(report.doctor.addon, report.addon, 'doctor() reports the addon it loaded');
    t.true(report.doctor.backends.find((b) => b.name === 'cpu')?.available, 'doctor() reports the cpu backend available');
  } else {
    t.log('the package exports no doctor(): checked the native binding only');
  }
  if (wantCuda) {
    const cuda = report.backends.find((b) => b.name === 'cuda');
    t.truthy(cuda, 'the addon reports a cuda backend');
    t.is(cuda?.library, path.join(shipped, CUDA_LIBRARY), 'the addon looks for the CUDA backend next to itself');
    if (cuda && !cuda.available) {
      t.notRegex(cuda.reason, /could not be loaded|does not export|backend ABI/, 'the shipped CUDA backend must load (only a driver or device may be missing)');
    }
  }

  // 4. The install script, as a real `npm install` runs it: it finds the prebuild and builds nothing
  // (it could not: cmake-js is not installed).
  const rebuild = await run('npm', ['rebuild', pkgName, '--foreground-scripts'], consumer);
  t.is(rebuild.code, 0, `the install script failed with the prebuild present:\n${tail(rebuild.output)}`);
  t.false(fs.existsSync(path.join(installed, 'build')), `the install script built something:\n${tail(rebuild.output)}`);
});
