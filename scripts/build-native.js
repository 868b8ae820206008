#!/usr/bin/env node
'use strict';
// Builds the addon (and the CUDA backend where nvcc is present) with cmake-js into build/Release.
// Also serves as prebuildify's --node-gyp program: its node-gyp arguments are accepted and ignored,
// since the addon uses Node-API and is independent of the Node version.
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const root = path.resolve(__dirname, '..');
const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
const out = path.join(root, 'build', 'Release');
const args = [cmakeJs, 'compile', '-d', root, '-O', path.join(root, 'build', 'cmake'), '--CDSA_OUTPUT_DIR=' + out, '-p', String(require('node:os').availableParallelism())];
if (process.env.SAFETY_ARITHMETIC_NO_CUDA === '1') args.push('--CDSA_WITH_CUDA=OFF');
if (!process.stdout.isTTY) args.push('-l', 'warn');
const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root });
if (r.status !== 0) {
  console.error('safety-arithmetic: the native build failed (cmake-js). It needs cmake >= 3.18 and a C++17 compiler; nvcc is optional (CUDA backend).');
  process.exit(r.status ?? 1);
}
