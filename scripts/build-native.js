#!/usr/bin/env node
'use strict';
// Builds the addon (and the CUDA backend where nvcc is present) with cmake-js into build/Release.
//
// It is run three ways:
// - by hand or `npm run build:native`;
// - by node-gyp, through the action of binding.gyp, when `npm install` finds no prebuild that loads
//   (node-gyp-build's install script runs `node-gyp rebuild`);
// - by prebuildify as its --node-gyp program (see scripts/prebuild.js), with node-gyp's arguments
//   (`rebuild --target=... --devdir=... --arch=x64 --release`). The addon uses Node-API, so it does
//   not depend on the Node version: --target and --devdir are ignored; `rebuild` removes the old
//   outputs first, so that a stale CUDA backend is never picked up next to a new addon.
//
// Environment:
//   SAFETY_ARITHMETIC_NO_CUDA=1     build the CPU backend only, even where nvcc is found
//   SAFETY_ARITHMETIC_BUILD_DIR=dir build in dir/cmake, write the outputs to dir/Release
//                                   (default: build/ in the package root)
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { nvccFindable } = require('./nvcc');

const root = path.resolve(__dirname, '..');
const buildDir = path.resolve(process.env.SAFETY_ARITHMETIC_BUILD_DIR || path.join(root, 'build'));
const out = path.join(buildDir, 'Release');
const argv = process.argv.slice(2);
const OUTPUTS = ['safety_arithmetic.node', 'libsafety_arithmetic_cuda.so'];

function fail(message, code = 1) {
  console.error('safety-arithmetic: ' + message);
  process.exit(code);
}

const archArg = argv.find((a) => a.startsWith('--arch='));
if (archArg && archArg.slice('--arch='.length) !== process.arch) {
  fail(`cannot build for ${archArg.slice('--arch='.length)} on ${process.arch}: cross-compilation is not supported`);
}

// cmake-js and node-addon-api are development dependencies: a package installed from the registry
// uses its prebuild and never needs them. Only a build from source does, and then it says so.
function resolveTool(request) {
  try {
    return require.resolve(request, { paths: [root] });
  } catch {
    return null;
  }
}
const cmakeJs = resolveTool('cmake-js/bin/cmake-js');
const addonApi = resolveTool('node-addon-api');
if (!cmakeJs || !addonApi) {
  let dev = {};
  try {
    dev = require(path.join(root, 'package.json')).devDependencies || {};
  } catch {}
  const want = [!cmakeJs && 'cmake-js', !addonApi && 'node-addon-api'].filter(Boolean);
  const specs = want.map((n) => (dev[n] ? `${n}@${dev[n]}` : n)).join(' ');
  fail(
    `no prebuilt binary loads on this machine (${process.platform}-${process.arch}, Node ${process.version}), ` +
      `and building from source needs ${want.join(' and ')}, which ${want.length > 1 ? 'are' : 'is'} not installed ` +
      '(development dependencies of safety-arithmetic are not installed with it).\n' +
      `  Install ${want.length > 1 ? 'them' : 'it'} in your project, then rebuild:\n` +
      `    npm install --save-dev ${specs}\n` +
      '    npm rebuild safety-arithmetic\n' +
      '  Building also needs cmake >= 3.18, make or ninja, and a C++17 compiler (g++ >= 9 or clang >= 10);\n' +
      '  nvcc (CUDA toolkit) is optional and adds the CUDA backend.'
  );
}

if (argv.includes('rebuild')) {
  for (const f of OUTPUTS) fs.rmSync(path.join(out, f), { force: true });
}

const withCuda = process.env.SAFETY_ARITHMETIC_NO_CUDA === '1' ? 'OFF' : 'ON';
const cmakeDir = path.join(buildDir, 'cmake');
// check_language(CUDA) caches a failed search for nvcc, so a build folder configured without nvcc
// would never get the CUDA backend: configure afresh once nvcc can be found.
const cache = path.join(cmakeDir, 'CMakeCache.txt');
if (withCuda === 'ON' && fs.existsSync(cache) && /^CMAKE_CUDA_COMPILER:\w+=(.*-)?NOTFOUND$/m.test(fs.readFileSync(cache, 'utf8')) && nvccFindable()) {
  console.log('safety-arithmetic: nvcc is now available; configuring afresh to build the CUDA backend');
  fs.rmSync(cache);
}

const args = [
  cmakeJs, 'compile', '-d', root, '-O', cmakeDir,
  '--CDSA_OUTPUT_DIR=' + out,
  // Always explicit: the CMake cache would otherwise keep the value of an earlier build.
  '--CDSA_WITH_CUDA=' + withCuda,
  '-p', String(os.availableParallelism()),
];
if (!process.stdout.isTTY) args.push('-l', 'warn');
const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root });
if (r.status !== 0 || !fs.existsSync(path.join(out, OUTPUTS[0]))) {
  fail(
    'the native build failed (cmake-js). It needs cmake >= 3.18 and a C++17 compiler; nvcc is optional ' +
      '(CUDA backend; set SAFETY_ARITHMETIC_NO_CUDA=1 to build without it).',
    r.status || 1
  );
}
