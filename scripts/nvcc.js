'use strict';
// Whether nvcc can be found where CMake's check_language(CUDA) looks: CUDACXX, PATH, then the
// default toolkit folder. Shared by the native build and the package test.
const fs = require('node:fs');
const path = require('node:path');

function executable(f) {
  try {
    fs.accessSync(f, fs.constants.X_OK);
    return fs.statSync(f).isFile();
  } catch {
    return false;
  }
}

function nvccFindable() {
  if (process.env.CUDACXX) return executable(process.env.CUDACXX);
  const dirs = (process.env.PATH || '').split(path.delimiter).concat('/usr/local/cuda/bin');
  return dirs.some((d) => d !== '' && executable(path.join(d, 'nvcc')));
}

module.exports = { nvccFindable };
