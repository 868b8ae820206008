/**
 * The thread pool on its own (csrc/common/thread_pool.cpp), through the C++ program
 * test/native/thread_pool_check.cpp: every task once, exceptions, nested loops, several callers with
 * resizes, and a loop that finishes while its worker is paused (not yet scheduled by the OS), after
 * which the late worker touches neither the finished loop nor the next one. Needs Linux and a C++17
 * compiler (CXX, default c++); skipped without them.
 */
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { tmpDir } from './helpers/checkpoints';

const ROOT = path.join(__dirname, '..', '..');
const CXX = process.env.CXX || 'c++';
const compiler = spawnSync(CXX, ['--version'], { encoding: 'utf8' });
const runs = process.platform === 'linux' && compiler.status === 0;

(runs ? test : test.skip)(`the pool's own checks pass${runs ? '' : ` (skipped: needs Linux and a C++ compiler, ${CXX})`}`, (t) => {
  const dir = tmpDir('sa-pool-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const exe = path.join(dir, 'thread_pool_check');
  const sources = ['test/native/thread_pool_check.cpp', 'csrc/common/thread_pool.cpp'].map((f) => path.join(ROOT, f));
  const build = spawnSync(CXX, ['-std=c++17', '-O2', '-pthread', '-I', path.join(ROOT, 'csrc'), ...sources, '-o', exe], { encoding: 'utf8' });
  t.is(build.status, 0, build.stderr);
  const run = spawnSync(exe, [], { encoding: 'utf8', timeout: 120_000 });
  t.is(run.status, 0, run.stdout + run.stderr);
  t.is(run.stdout.trim(), 'ok');
});
