/**
 * The thread pool on its own (csrc/common/thread_pool.cpp), through the C++ program
 * test/native/thread_pool_check.cpp: every task once, exceptions, nested loops, several callers with
 * resizes, and a loop that finishes while its worker is paused (not yet scheduled by the OS), after
 * which the late worker touches neither the finished loop nor the next one. Needs Linux and a C++17
 * compiler ($CXX, else g++); skipped without them.
 */
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { tmpDir } from './helpers/checkpoints';
import { cannotBuildNative, compileObjects, linkProgram, ROOT, runProgram } from './helpers/native-build';

const why = cannotBuildNative();

(why ? test.skip : test)(`the pool's own checks pass${why ? ` (skipped: ${why})` : ''}`, async (t) => {
  const dir = tmpDir('sa-pool-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const units = [{ source: 'test/native/thread_pool_check.cpp' }, { source: 'csrc/common/thread_pool.cpp' }];
  const objects = await compileObjects(dir, units, ['-std=c++17', '-O2', '-pthread', '-I', path.join(ROOT, 'csrc')]);
  const exe = await linkProgram(dir, 'thread_pool_check', objects, ['-pthread']);
  const run = await runProgram(exe, [], 120_000);
  t.is(run.status, 0, run.stdout + run.stderr);
  t.is(run.stdout.trim(), 'ok');
});
