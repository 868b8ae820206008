/**
 * The output policy (lib/io/output.ts) through every command and API function that writes: no input
 * is ever written into, over or inside (after resolving links), nothing is replaced without force,
 * and nothing is left behind. Every case checks that each input is byte-identical afterwards.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { align } from '../lib/align';
import { SafetyArithmeticError, type ErrorCode } from '../lib/errors';
import { writeControlVectorGguf } from '../lib/gguf';
import { removeHarmDirection } from '../lib/hdr';
import { computeIcv, loadIcv, saveIcv } from '../lib/icv';
import { LanguageModel } from '../lib/model/model';
import { leftovers, snapshotTree, tinyModel, tmpDir, writeCheckpoint, writeLargeF32Checkpoint } from './helpers/checkpoints';
import { loadCheckpointTensors } from './helpers/safetensors';

const ROOT = path.join(__dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'safety-arithmetic.js');
const TOY = path.join(ROOT, 'demo', 'toy-demo');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, SAFETY_ARITHMETIC_DEVICE: 'cpu' }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A copy of the toy family (base, harmful, sft) in a fresh folder X, as the reproduction has it. */
function toyCopy(t: ExecutionContext): string {
  const x = tmpDir('sa-policy-');
  t.teardown(() => fs.rmSync(x, { recursive: true, force: true }));
  for (const m of ['base', 'harmful', 'sft']) fs.cpSync(path.join(TOY, m), path.join(x, m), { recursive: true });
  fs.copyFileSync(path.join(TOY, 'demos.jsonl'), path.join(x, 'demos.jsonl'));
  return x;
}

/** Runs fn and checks that every path in `guarded` is byte-identical afterwards. */
async function unchanged<T>(t: ExecutionContext, guarded: string[], fn: () => Promise<T> | T): Promise<T> {
  const before = guarded.map((p) => snapshotTree(p));
  const result = await fn();
  guarded.forEach((p, i) => t.deepEqual(snapshotTree(p), before[i], `${p} is unchanged`));
  return result;
}

function expectCli(t: ExecutionContext, r: Run, code: ErrorCode, message: RegExp): void {
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, new RegExp(`\\[${code}\\]`));
  t.regex(r.stderr, message);
  t.notRegex(r.stderr, /\n\s+at /, 'no stack trace');
}

async function expectApi(t: ExecutionContext, fn: () => Promise<unknown> | unknown, code: ErrorCode, message: RegExp): Promise<void> {
  const err = await t.throwsAsync<SafetyArithmeticError>(async () => fn(), { instanceOf: SafetyArithmeticError });
  t.is(err?.code, code, err?.message);
  t.regex(err?.message ?? '', message);
}

test('align: --out that contains, or is, an input is refused even with --force (CLI and API)', async (t) => {
  const x = toyCopy(t);
  const models = { base: path.join(x, 'base'), harmful: path.join(x, 'harmful'), target: path.join(x, 'sft') };
  const guarded = [models.base, models.harmful, models.target];
  const flags = ['--base', models.base, '--harmful', models.harmful, '--target', models.target];
  await unchanged(t, guarded, async () => {
    expectCli(t, cli(['align', ...flags, '--out', x, '--force']), 'SA_OUTPUT_INSIDE_INPUT', /contains the (base|harmful|target) folder/);
    expectCli(t, cli(['align', ...flags, '--out', models.target, '--force']), 'SA_OUTPUT_INSIDE_INPUT', /is the target folder/);
    expectCli(t, cli(['align', ...flags, '--out', path.join(models.base, 'aligned')]), 'SA_OUTPUT_INSIDE_INPUT', /inside the base folder/);
    expectCli(t, cli(['align', ...flags, '--demos', path.join(x, 'demos.jsonl'), '--out', path.join(x, 'demos.jsonl'), '--force']), 'SA_OUTPUT_INSIDE_INPUT', /demonstrations file/);
    await expectApi(t, () => align({ ...models, out: x, force: true, device: 'cpu' }), 'SA_OUTPUT_INSIDE_INPUT', /contains the/);
    await expectApi(t, () => align({ ...models, out: models.harmful, force: true, device: 'cpu' }), 'SA_OUTPUT_INSIDE_INPUT', /is the harmful folder/);
  });
  t.deepEqual(fs.readdirSync(x).sort(), ['base', 'demos.jsonl', 'harmful', 'sft']);
});

test('icv, forward and export-gguf never write into or over the model folder', async (t) => {
  const x = toyCopy(t);
  const m = path.join(x, 'sft');
  const weights = path.join(m, 'model.safetensors');
  const icvFile = path.join(x, 'sft.icv.safetensors');
  t.is(cli(['icv', '--model', m, '--out', icvFile]).code, 0);
  await unchanged(t, [m], () => {
    expectCli(t, cli(['icv', '--model', m, '--out', weights, '--force']), 'SA_OUTPUT_INSIDE_INPUT', /is inside the model folder/);
    expectCli(t, cli(['icv', '--model', m, '--out', path.join(m, 'extra.safetensors')]), 'SA_OUTPUT_INSIDE_INPUT', /is inside the model folder/);
    expectCli(t, cli(['forward', '--model', m, '--tokens', '1,2,3', '--out', weights, '--force']), 'SA_OUTPUT_INSIDE_INPUT', /is inside the model folder/);
    expectCli(t, cli(['export-gguf', '--model', m, '--icv', icvFile, '--out', weights, '--force']), 'SA_OUTPUT_INSIDE_INPUT', /is inside the model folder/);
    expectCli(t, cli(['export-gguf', '--model', m, '--icv', icvFile, '--out', icvFile, '--force']), 'SA_OUTPUT_INSIDE_INPUT', /is the ICV file/);
  });
  t.deepEqual(leftovers(weights), []);
});

test('the API: saveIcv and writeControlVectorGguf refuse to overwrite without force, and never write into the model', async (t) => {
  const x = toyCopy(t);
  const m = path.join(x, 'sft');
  const model = await LanguageModel.load(m, { device: 'cpu' });
  t.teardown(() => model.dispose());
  const icv = await computeIcv(model, [{ unsafe: 'how do i make a weapon', safe: 'i can not help with that' }]);
  const file = path.join(x, 'icv.safetensors');
  fs.writeFileSync(file, 'precious');
  await unchanged(t, [m, file], async () => {
    await expectApi(t, () => saveIcv(file, icv), 'SA_OUTPUT_EXISTS', /already exists; pass --force/);
    await expectApi(t, () => saveIcv(path.join(m, 'icv.safetensors'), icv, { force: true }), 'SA_OUTPUT_INSIDE_INPUT', /inside the model folder/);
    await expectApi(t, () => writeControlVectorGguf(file, { modelHint: 'llama', layerCount: 2, directions: new Map([[1, new Float32Array(4)]]) }), 'SA_OUTPUT_EXISTS', /already exists/);
    await expectApi(t, () => writeControlVectorGguf(path.join(m, 'cv.gguf'), { modelHint: 'llama', layerCount: 2, directions: new Map([[1, new Float32Array(4)]]) }, { inputs: [{ path: m, role: 'model' }] }), 'SA_OUTPUT_INSIDE_INPUT', /inside the model folder/);
  });
  t.is(saveIcv(file, icv, { force: true }), file);
  t.deepEqual(Array.from(loadIcv(file).vectors), Array.from(icv.vectors));
  t.deepEqual(leftovers(file), []);
});

/**
 * A Hugging Face cache: models--org--name/{blobs/<sha>, snapshots/<rev>/<file> -> ../../blobs/<sha>}.
 * Returns the snapshot folder.
 */
function hfCache(root: string, name: string, source: string): { snapshot: string; blobs: string } {
  const repo = path.join(root, `models--org--${name}`);
  const blobs = path.join(repo, 'blobs');
  const snapshot = path.join(repo, 'snapshots', '0123abcd');
  fs.mkdirSync(blobs, { recursive: true });
  fs.mkdirSync(snapshot, { recursive: true });
  fs.mkdirSync(path.join(repo, 'refs'));
  fs.writeFileSync(path.join(repo, 'refs', 'main'), '0123abcd');
  for (const f of fs.readdirSync(source)) {
    const sha = `${name}-${f.replace(/[^a-z0-9]/gi, '')}-blob`;
    fs.copyFileSync(path.join(source, f), path.join(blobs, sha));
    fs.symlinkSync(path.join('..', '..', 'blobs', sha), path.join(snapshot, f));
  }
  return { snapshot, blobs };
}

test('a Hugging Face cache layout (snapshots linking into blobs) patches correctly, and no blob can be an output', async (t) => {
  const root = tmpDir('sa-hfcache-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const plain = path.join(root, 'plain');
  const dirs = { base: path.join(plain, 'base'), harmful: path.join(plain, 'harmful'), target: path.join(plain, 'target') };
  writeCheckpoint(dirs.base, tinyModel(1));
  writeCheckpoint(dirs.harmful, tinyModel(2));
  writeCheckpoint(dirs.target, tinyModel(3), 2);
  const cache = path.join(root, 'hub');
  const base = hfCache(cache, 'base', dirs.base), harmful = hfCache(cache, 'harmful', dirs.harmful), target = hfCache(cache, 'target', dirs.target);
  const reference = path.join(root, 'reference');
  await removeHarmDirection({ ...dirs, out: reference, device: 'cpu' });

  const patched = path.join(root, 'patched');
  await unchanged(t, [cache], async () => {
    await removeHarmDirection({ base: base.snapshot, harmful: harmful.snapshot, target: target.snapshot, out: patched, device: 'cpu' });
    for (const blobs of [target.blobs, base.blobs, harmful.blobs]) {
      await expectApi(t, () => removeHarmDirection({ base: base.snapshot, harmful: harmful.snapshot, target: target.snapshot, out: blobs, force: true, device: 'cpu' }),
        'SA_OUTPUT_INSIDE_INPUT', /contains the (target|base|harmful)'s file .*-> /);
    }
    const blob = fs.realpathSync(path.join(target.snapshot, 'model-00001-of-00002.safetensors'));
    await expectApi(t, () => removeHarmDirection({ base: base.snapshot, harmful: harmful.snapshot, target: target.snapshot, out: dirs.base, saveHarmVector: blob, force: true, device: 'cpu' }),
      'SA_OUTPUT_INSIDE_INPUT', /saveHarmVector/);
    expectCli(t, cli(['hdr', '--base', base.snapshot, '--harmful', harmful.snapshot, '--target', target.snapshot, '--out', target.blobs, '--force']), 'SA_OUTPUT_INSIDE_INPUT', /blobs/);
  });
  const ours = loadCheckpointTensors(patched), ref = loadCheckpointTensors(reference);
  t.is(ours.size, ref.size);
  for (const [name, tensor] of ref) t.true(Buffer.compare(ours.get(name)!.bytes, tensor.bytes) === 0, name);
  t.false(fs.lstatSync(path.join(patched, 'model-00001-of-00002.safetensors')).isSymbolicLink(), 'the output holds real files');
});

test('a harm vector file inside --out, or at --out itself, is refused before anything is written', async (t) => {
  const x = tmpDir('sa-hvpolicy-');
  t.teardown(() => fs.rmSync(x, { recursive: true, force: true }));
  const base = path.join(x, 'base'), harmful = path.join(x, 'harmful'), target = path.join(x, 'target');
  writeCheckpoint(base, tinyModel(1));
  writeCheckpoint(harmful, tinyModel(2));
  writeCheckpoint(target, tinyModel(3));
  const o = path.join(x, 'O');
  await removeHarmDirection({ base, harmful, target, out: o, device: 'cpu' });
  const flags = ['--base', base, '--harmful', harmful, '--target', target];
  await unchanged(t, [base, harmful, target, o], () => {
    expectCli(t, cli(['hdr', ...flags, '--out', o, '--force', '--save-harm-vector', path.join(o, 'hv.safetensors')]), 'SA_INVALID_ARGUMENT', /saveHarmVector .* is inside out/);
    const p = path.join(x, 'P');
    expectCli(t, cli(['hdr', ...flags, '--out', p, '--save-harm-vector', p]), 'SA_INVALID_ARGUMENT', /is also given as/);
    t.false(fs.existsSync(p), 'P was not left behind');
    t.deepEqual(leftovers(p), []);
  });
  t.deepEqual(fs.readdirSync(x).sort(), ['O', 'base', 'harmful', 'target']);
  const hv = path.join(x, 'hv.safetensors');
  const r = cli(['hdr', ...flags, '--out', o, '--force', '--save-harm-vector', hv]);
  t.is(r.code, 0, r.stderr);
  t.true(fs.statSync(hv).size > 0, 'the harm vector reported saved is there');
});

test('staging left by a killed process is removed by the next run; a replaced output moved aside is put back', async (t) => {
  const x = tmpDir('sa-stale-');
  t.teardown(() => fs.rmSync(x, { recursive: true, force: true }));
  const base = path.join(x, 'base'), harmful = path.join(x, 'harmful');
  writeCheckpoint(base, tinyModel(1));
  writeCheckpoint(harmful, tinyModel(2));
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  const out = path.join(x, 'out');
  const stale = path.join(x, `.out.partial-${dead}-0123abcd`);
  fs.mkdirSync(stale);
  fs.writeFileSync(path.join(stale, 'model.safetensors'), Buffer.alloc(4096));
  const other = path.join(x, `.other.partial-${dead}-0123abcd`);
  fs.mkdirSync(other);
  await removeHarmDirection({ base, harmful, target: base, out, device: 'cpu' });
  t.false(fs.existsSync(stale), 'the dead process staging folder is gone');
  t.true(fs.existsSync(other), 'staging of another destination is left alone');
  t.deepEqual(leftovers(out), []);

  // A run killed between moving the old output aside and renaming the new one into place.
  const aside = path.join(x, `.out.partial-${dead}-89abcdef.old`);
  fs.renameSync(out, aside);
  const before = snapshotTree(aside);
  const hv = path.join(x, 'hv.safetensors');
  await removeHarmDirection({ base, harmful, target: base, out: path.join(x, 'elsewhere'), saveHarmVector: hv, device: 'cpu' });
  t.true(fs.existsSync(aside), 'only runs writing the same destination touch its staging');
  await t.throwsAsync(() => removeHarmDirection({ base, harmful, target: base, out, device: 'cpu' }), { code: 'SA_OUTPUT_EXISTS' } as never);
  t.deepEqual(snapshotTree(out), before, 'the previous output was put back, and not replaced without force');
  t.deepEqual(leftovers(out), []);
});

test.serial('SIGKILL during hdr leaves a staging folder that the next run removes', async (t) => {
  const x = tmpDir('sa-sigkill-');
  t.teardown(() => fs.rmSync(x, { recursive: true, force: true }));
  const base = path.join(x, 'base'), harmful = path.join(x, 'harmful'), out = path.join(x, 'out');
  writeLargeF32Checkpoint(base, 64 << 20, 1);
  writeLargeF32Checkpoint(harmful, 64 << 20, 2);
  const args = ['hdr', '--base', base, '--harmful', harmful, '--target', base, '--out', out, '--buffer-size', '4MB', '--device', 'cpu'];
  const killed = await new Promise<{ sawStaging: boolean; signal: NodeJS.Signals | null }>((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: 'ignore' });
    let sawStaging = false;
    const started = Date.now();
    const poll = () => {
      if (child.exitCode !== null) return;
      sawStaging = leftovers(out).length > 0;
      if (sawStaging || Date.now() - started > 5000) child.kill('SIGKILL');
      else setTimeout(poll, 2);
    };
    child.on('close', (_code, signal) => resolve({ sawStaging, signal }));
    poll();
  });
  t.is(killed.signal, 'SIGKILL');
  t.true(killed.sawStaging, 'the run was killed with its staging folder in place');
  t.true(leftovers(out).length > 0, 'SIGKILL leaves the staging folder (nothing can run then)');
  const r = cli(args);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(leftovers(out), [], 'the next run removed it');
  t.deepEqual(fs.readdirSync(x).sort(), ['base', 'harmful', 'out']);
});

test('file-system failures at the destination are SA_IO or clear refusals, never stack traces', async (t) => {
  const x = toyCopy(t);
  const m = path.join(x, 'sft');
  const aFile = path.join(x, 'a-file');
  fs.writeFileSync(aFile, 'x');
  const dangling = path.join(x, 'dangling');
  fs.symlinkSync(path.join(x, 'nowhere'), dangling);
  const folder = path.join(x, 'a-folder');
  fs.mkdirSync(folder);
  const flags = ['--base', path.join(x, 'base'), '--harmful', path.join(x, 'harmful'), '--target', m];
  await unchanged(t, [m, aFile, folder], () => {
    expectCli(t, cli(['hdr', ...flags, '--out', path.join(aFile, 'out')]), 'SA_IO', /is not a folder/);
    expectCli(t, cli(['icv', '--model', m, '--out', path.join(x, 'missing', 'icv.safetensors')]), 'SA_IO', /does not exist; create it/);
    expectCli(t, cli(['icv', '--model', m, '--out', folder, '--force']), 'SA_INVALID_ARGUMENT', /is a folder; this output is a single file/);
    expectCli(t, cli(['hdr', ...flags, '--out', dangling]), 'SA_OUTPUT_EXISTS', /already exists/);
    const proc = cli(['hdr', ...flags, '--out', '/proc/sa-out']);
    t.is(proc.code, 1, proc.stderr);
    t.regex(proc.stderr, /\[SA_IO\].*\/proc/);
    t.notRegex(proc.stderr, /\n\s+at /);
  });
  const replaced = cli(['hdr', ...flags, '--out', dangling, '--force']);
  t.is(replaced.code, 0, replaced.stderr);
  t.true(fs.statSync(dangling).isDirectory(), 'with --force the dangling link is replaced by the output');
  t.false(fs.existsSync(path.join(x, 'nowhere')), 'nothing was written through the link');
});

/** A tmpfs of `bytes` at a fresh folder, or undefined where mounting is not permitted. */
function smallDisk(bytes: number): string | undefined {
  const dir = tmpDir('sa-full-');
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status === 0) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  return undefined;
}
const probe = process.platform === 'linux' ? smallDisk(4096) : undefined;
if (probe) {
  spawnSync('umount', [probe]);
  fs.rmSync(probe, { recursive: true, force: true });
}

(probe ? test.serial : test.skip)(`a full disk (ENOSPC) is SA_IO naming the path, and leaves nothing behind${probe ? '' : ' (cannot mount a tmpfs here)'}`, async (t) => {
  const disk = smallDisk(256 * 1024)!;
  t.teardown(() => {
    spawnSync('umount', [disk]);
    fs.rmSync(disk, { recursive: true, force: true });
  });
  const x = tmpDir('sa-enospc-');
  t.teardown(() => fs.rmSync(x, { recursive: true, force: true }));
  const base = path.join(x, 'base'), harmful = path.join(x, 'harmful'), small = path.join(x, 'small');
  writeLargeF32Checkpoint(base, 1 << 20, 1, 4);
  writeLargeF32Checkpoint(harmful, 1 << 20, 2, 4);
  // Shards that fit, and a tokenizer file that does not: the failure comes while copying companions.
  writeCheckpoint(small, tinyModel(3));
  fs.writeFileSync(path.join(small, 'tokenizer.json'), Buffer.alloc(512 * 1024, 0x20));
  writeCheckpoint(path.join(x, 'smallbase'), tinyModel(1));
  writeCheckpoint(path.join(x, 'smallharmful'), tinyModel(2));
  await unchanged(t, [base, harmful, small], async () => {
    const big = cli(['hdr', '--base', base, '--harmful', harmful, '--target', base, '--out', path.join(disk, 'out')]);
    expectCli(t, big, 'SA_IO', /disk is full/);
    t.true(big.stderr.includes(path.join(disk, 'out', 'model.safetensors')), `names the output, not its staging path: ${big.stderr}`);
    const companions = cli(['hdr', '--base', path.join(x, 'smallbase'), '--harmful', path.join(x, 'smallharmful'), '--target', small, '--out', path.join(disk, 'out')]);
    expectCli(t, companions, 'SA_IO', /out[/]tokenizer\.json: cannot copy the target's tokenizer\.json here: the disk is full/);
    const forward = cli(['forward', '--model', path.join(TOY, 'sft'), '--tokens', Array.from({ length: 200 }, (_, i) => 1 + (i % 20)).join(','), '--capture', 'layer_out,mlp_out', '--out', path.join(disk, 'f.safetensors')]);
    expectCli(t, forward, 'SA_IO', /f\.safetensors: cannot write: the disk is full/);
  });
  t.deepEqual(fs.readdirSync(disk), [], 'nothing left on the full disk');
});
