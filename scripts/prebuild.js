#!/usr/bin/env node
'use strict';
// `npm run prebuild`: writes prebuilds/<platform>-<arch>/ with the Node-API addon
// (<name>.node) and, beside it, the CUDA backend (libsafety_arithmetic_cuda.so), which the addon
// finds next to itself at run time. The folder ships inside the npm tarball (package.json "files"),
// and node-gyp-build loads from it when there is no build/Release.
//
// prebuildify does the packaging: it runs scripts/build-native.js as its --node-gyp program, takes
// the .node it finds in <cwd>/build/Release, and copies the .so files found next to it. It works in
// a staging folder (build/prebuild) so that build/Release, which a development checkout and its
// tests load, is left alone.
//
// Options:
//   --cpu-only   allow a prebuild without the CUDA backend (also implied by SAFETY_ARITHMETIC_NO_CUDA=1);
//                without it, a build that produced no CUDA backend (no nvcc) is an error.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const pkg = require(path.join(root, 'package.json'));
const cpuOnly = process.argv.includes('--cpu-only') || process.env.SAFETY_ARITHMETIC_NO_CUDA === '1';
const tuple = `${process.platform}-${process.arch}`;
const dest = path.join(root, 'prebuilds', tuple);
const staging = path.join(root, 'build', 'prebuild');
const buildNative = path.join(__dirname, 'build-native.js');
const addonFile = `${pkg.name.replace(/\//g, '+')}.node`; // prebuildify's name for a --napi build
const cudaFile = 'libsafety_arithmetic_cuda.so';
// CMakeLists.txt builds SASS for these and PTX for the newest, for newer GPUs to JIT.
const WANT_SASS = [75, 80, 86, 89, 90];
const WANT_PTX = 90;

function fail(message) {
  console.error('prebuild: ' + message);
  process.exit(1);
}

if (process.platform !== 'linux') fail(`only linux prebuilds are supported (this is ${process.platform})`);

// Start clean: nothing stale may be shipped.
fs.rmSync(dest, { recursive: true, force: true });
fs.rmSync(path.join(staging, 'build', 'Release'), { recursive: true, force: true });
fs.mkdirSync(staging, { recursive: true });
// prebuildify spawns its --node-gyp program directly, so it must be executable.
const mode = fs.statSync(buildNative).mode;
if ((mode & 0o111) !== 0o111) fs.chmodSync(buildNative, mode | 0o755);

const prebuildify = require.resolve('prebuildify/bin.js', { paths: [root] });
const args = [
  prebuildify,
  '--napi',
  '--strip',
  `--node-gyp=${buildNative}`,
  `--name=${pkg.name}`,
  `--cwd=${staging}`, // where the build is made: <staging>/build/Release
  `--out=${root}`, // where prebuilds/ is written
];
const env = { ...process.env, SAFETY_ARITHMETIC_BUILD_DIR: path.join(staging, 'build') };
if (cpuOnly) env.SAFETY_ARITHMETIC_NO_CUDA = '1';
console.log(`prebuild: ${process.execPath} ${args.join(' ')}`);
const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root, env });
if (r.status !== 0) fail(`prebuildify failed (exit ${r.status ?? r.signal})`);

// Check what was written.
const files = fs.existsSync(dest) ? fs.readdirSync(dest).sort() : [];
if (!files.includes(addonFile)) fail(`${path.relative(root, dest)} has no ${addonFile} (found: ${files.join(', ') || 'nothing'})`);
if (!files.includes(cudaFile)) {
  if (!cpuOnly) {
    fail(`the CUDA backend was not built (no nvcc found?), so ${path.relative(root, dest)} has no ${cudaFile}. ` +
      'Put nvcc on PATH (or set CUDACXX), or pass --cpu-only to make a CPU-only prebuild.');
  }
  console.warn('prebuild: warning: CPU-only prebuild (no CUDA backend)');
} else {
  const { sass, ptx } = fatbinArchs(path.join(dest, cudaFile));
  console.log(`prebuild: CUDA backend has SASS for sm_${sass.join(', sm_')} and PTX for compute_${ptx.join(', compute_')}`);
  const missing = WANT_SASS.filter((a) => !sass.includes(a)).map((a) => 'sm_' + a);
  if (!ptx.includes(WANT_PTX)) missing.push('compute_' + WANT_PTX + ' (PTX)');
  if (missing.length) fail(`the CUDA backend lacks ${missing.join(', ')}; check CUDA_ARCHITECTURES in CMakeLists.txt`);
}

// Load it as node-gyp-build would, from prebuilds/, in a fresh process; the addon must find the CUDA
// backend next to itself (it is then reported as unavailable only for want of a driver or device).
const probe = spawnSync(process.execPath, ['-e', `
  const b = require(${JSON.stringify(path.join(dest, addonFile))});
  console.log(JSON.stringify(b.backends()));
`], { encoding: 'utf8', env: { ...process.env, SAFETY_ARITHMETIC_CUDA_LIBRARY: '' } });
if (probe.status !== 0) fail(`the prebuilt addon does not load:\n${probe.stderr}`);
const backends = JSON.parse(probe.stdout.trim().split('\n').pop());
for (const b of backends) {
  console.log(`prebuild: backend ${b.name}: ${b.available ? 'available' : 'unavailable'}${b.reason ? ' (' + b.reason + ')' : ''}`);
}
const cpu = backends.find((b) => b.name === 'cpu');
if (!cpu || !cpu.available) fail('the prebuilt addon reports no usable CPU backend');
const cuda = backends.find((b) => b.name === 'cuda');
if (files.includes(cudaFile) && cuda && !cuda.available && /could not be loaded|does not export|backend ABI/.test(cuda.reason)) {
  fail(`the prebuilt addon does not load the CUDA backend next to it: ${cuda.reason}`);
}

for (const f of files) {
  const size = fs.statSync(path.join(dest, f)).size;
  console.log(`prebuild: ${path.relative(root, path.join(dest, f))} ${(size / 1048576).toFixed(1)} MiB`);
}

// Lists the GPU code in a shared library's .nv_fatbin section: for each fat binary, its entries'
// kind (1 = PTX, 2 = ELF/SASS) and SM version. Only the headers are read; payloads may be compressed.
function fatbinArchs(file) {
  const buf = fs.readFileSync(file);
  const sass = new Set();
  const ptx = new Set();
  if (buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2 || buf[5] !== 1) return { sass: [], ptx: [] }; // ELF64 LE only
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const shstrndx = buf.readUInt16LE(0x3e);
  const section = (i) => {
    const o = shoff + i * shentsize;
    return { name: buf.readUInt32LE(o), offset: Number(buf.readBigUInt64LE(o + 0x18)), size: Number(buf.readBigUInt64LE(o + 0x20)) };
  };
  const names = section(shstrndx);
  const nameOf = (n) => buf.toString('latin1', names.offset + n, buf.indexOf(0, names.offset + n));
  const FATBIN_MAGIC = 0xba55ed50;
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (nameOf(s.name) !== '.nv_fatbin') continue;
    const end = s.offset + s.size;
    let p = s.offset;
    while (p + 16 <= end) {
      if (buf.readUInt32LE(p) !== FATBIN_MAGIC) {
        p += 8; // fat binaries are 8-byte aligned within the section
        continue;
      }
      const headerSize = buf.readUInt16LE(p + 6);
      const bodyEnd = p + headerSize + Number(buf.readBigUInt64LE(p + 8));
      for (let q = p + headerSize; q + 32 <= bodyEnd;) {
        const kind = buf.readUInt16LE(q);
        const entryHeader = buf.readUInt32LE(q + 4);
        const payload = Number(buf.readBigUInt64LE(q + 8));
        const arch = buf.readUInt32LE(q + 28);
        if (kind === 1) ptx.add(arch);
        else if (kind === 2) sass.add(arch);
        if (entryHeader === 0) break;
        q += entryHeader + payload;
      }
      p = Math.max(bodyEnd, p + 8);
    }
  }
  const sorted = (set) => [...set].sort((a, b) => a - b);
  return { sass: sorted(sass), ptx: sorted(ptx) };
}
