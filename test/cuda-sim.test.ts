/**
 * The CUDA backend's kernels and host code without a GPU: csrc/cuda/tests/engine_ops_check.cu (its
 * table's version, its HDR ops bit for bit and every engine op against the CPU's, and batch
 * invariance) and model_check.cu (the whole forward pass on the tiny fixture, CUDA ops against CPU
 * ops), compiled with the CUDA sources as C++ against the CPU
 * simulator of csrc/cuda/tests/cuda_sim.h (-DSA_CUDA_SIM, which skips the large cases), must pass every
 * case. The same sources also make a simulated CUDA library that the addon loads
 * (SAFETY_ARITHMETIC_CUDA_LIBRARY), so that whole HDR runs with --device cuda go through the job's
 * workers and the backend's lanes. Needs x86-64 Linux and a C++20 compiler ($CXX, else g++);
 * skipped without them.
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { hdrFixture, tinyModel, tmpDir } from './helpers/checkpoints';
import { cannotBuildNative, cmakeSourceFlags, compileObjects, linkProgram, ROOT, runProgram, type Finished, type Unit } from './helpers/native-build';

const why = process.arch !== 'x64' ? `needs x86-64, this is ${process.arch}` : cannotBuildNative();
// Position-independent, so that the CUDA objects also link into a shared library.
const FLAGS = ['-std=c++20', '-O1', '-ffp-contract=off', '-pthread', '-fPIC', '-I', path.join(ROOT, 'csrc')];
const LINK = ['-pthread', '-ldl'];

const sim = (source: string): Unit => ({ source, flags: ['-DSA_CUDA_SIM'] });
// The CUDA library's sources but the steering C API (steer_api.cu, which the checks do not use).
const CUDA = fs
  .readdirSync(path.join(ROOT, 'csrc/cuda'))
  .filter((f) => f.endsWith('.cu') && f !== 'steer_api.cu')
  .map((f) => sim(`csrc/cuda/${f}`));
/** The CPU backend (every source of csrc/cpu and csrc/cpu/gemm, each with its flags from CMakeLists.txt) and what it needs. */
function cpuUnits(): Unit[] {
  const perFile = cmakeSourceFlags();
  const cpu = ['csrc/cpu', 'csrc/cpu/gemm'].flatMap((dir) =>
    fs.readdirSync(path.join(ROOT, dir)).filter((f) => f.endsWith('.cpp')).map((f) => `${dir}/${f}`),
  );
  return [...cpu, 'csrc/backend/table_ops.cpp', 'csrc/common/thread_pool.cpp'].map((source) => ({ source, flags: perFile.get(source) }));
}
const ENGINE = ['csrc/engine/model.cpp', 'csrc/engine/sampling.cpp', 'csrc/io/file_io.cpp'].map((source) => ({ source }));

interface Programs {
  engineOps: string;
  model: string;
  cudaLibrary: string;
}

let dir: string | undefined;
let building: Promise<Programs> | undefined;
function build(): Promise<Programs> {
  building ??= (async () => {
    dir = tmpDir('sa-cuda-sim-');
    const checks = [sim('csrc/cuda/tests/engine_ops_check.cu'), sim('csrc/cuda/tests/model_check.cu')];
    const objects = await compileObjects(dir, [...checks, ...CUDA, ...cpuUnits(), ...ENGINE], FLAGS);
    const [opsCheck, modelCheck] = objects;
    const shared = objects.slice(checks.length, objects.length - ENGINE.length);
    const engine = objects.slice(objects.length - ENGINE.length);
    return {
      engineOps: await linkProgram(dir, 'engine_ops_sim', [opsCheck!, ...shared], LINK),
      model: await linkProgram(dir, 'model_sim', [modelCheck!, ...engine, ...shared], LINK),
      cudaLibrary: await linkProgram(dir, 'libsafety_arithmetic_cuda.so', shared.slice(0, CUDA.length), ['-shared', ...LINK]),
    };
  })();
  return building;
}

test.after.always(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Asserts that a check program exited 0 and that every case it ran passed: each prints one line per
 * case ending in PASS or FAIL, then "N checks, M failed: ALL PASS" (or FAIL).
 */
function expectAllPass(t: ExecutionContext, name: string, r: Finished, atLeast: number): void {
  const lines = r.stdout.split('\n').map((l) => l.trimEnd());
  const passed = lines.filter((l) => /\sPASS$/.test(l) && !/^\d+ checks, /.test(l)).length;
  const failed = lines.filter((l) => /\bFAIL\b/.test(l));
  t.log(`${name}: ${passed} cases passed, ${failed.length} failed, in ${(r.ms / 1000).toFixed(1)} s`);
  t.deepEqual(failed, [], r.stderr);
  t.is(r.status, 0, `${r.signal ?? ''}\n${r.stdout.slice(-4000)}${r.stderr}`);
  const summary = /^(\d+) checks, 0 failed: ALL PASS$/m.exec(r.stdout);
  t.truthy(summary, `${name} ends with "N checks, 0 failed: ALL PASS"`);
  t.is(Number(summary?.[1]), passed, 'every check printed its PASS line');
  t.true(passed >= atLeast, `${passed} cases: expected at least ${atLeast}`);
}

const run = why ? test.skip : test.serial;
const skipped = why ? ` (skipped: ${why})` : '';

run(`CUDA engine ops on the simulator match the CPU ops${skipped}`, async (t) => {
  t.timeout(10 * 60_000);
  const started = Date.now();
  const p = await build();
  t.log(`compiled and linked in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  expectAllPass(t, 'engine_ops_check', await runProgram(p.engineOps, [], 8 * 60_000), 100);
});

// The forward pass on the simulator takes over eight minutes on 2 cores (each CUDA thread is a
// fiber; 46 forward passes): run only when asked.
const modelWhy = why ?? (process.env.SAFETY_ARITHMETIC_TEST_CUDA_SIM_MODEL === '1' ? null : 'slow (over 8 min on 2 cores); set SAFETY_ARITHMETIC_TEST_CUDA_SIM_MODEL=1');
(modelWhy ? test.skip : test.serial)(`the forward pass on the simulated CUDA ops matches the CPU ops (tiny Llama)${modelWhy ? ` (skipped: ${modelWhy})` : ''}`, async (t) => {
  t.timeout(10 * 60_000);
  const p = await build();
  const fixture = path.join(ROOT, 'test/fixtures/llama-tiny/model');
  const r = await runProgram(p.model, [fixture], 8 * 60_000, { ...process.env, TMPDIR: dir });
  // Two weight dtypes, each: 3 prompts x 3 comparisons, 3 alone-vs-batch, 1 decode-vs-prefill.
  expectAllPass(t, 'model_check', r, 2 * (9 + 3 + 1));
});

run(`HDR with --device cuda on the simulated library: one pass, three passes and a saved harm vector write the CPU's bytes${skipped}`, async (t) => {
  t.timeout(10 * 60_000);
  const p = await build();
  // Several region tensors of both dtypes, so that the workers take chunks at once; the target in two shards.
  const shapes = {
    'model.layers.0.self_attn.q_proj.weight': { shape: [32, 48] },
    'model.layers.0.mlp.down_proj.weight': { shape: [48, 40] },
    'model.layers.1.self_attn.q_proj.weight': { shape: [40, 48] },
    'model.layers.1.mlp.down_proj.weight': { shape: [48, 36] },
  };
  const f = hdrFixture(t, { target: 2 }, { base: tinyModel(1, shapes), harmful: tinyModel(2, shapes), target: tinyModel(3, shapes) });
  const cli = path.join(ROOT, 'bin', 'safety-arithmetic.js');
  const hdr = (device: string, name: string, extra: string[]) => {
    const out = path.join(f.root, `${name}-${device}`);
    const args = ['hdr', '--base', f.base, '--harmful', f.harmful, '--target', f.target, '--out', out, '--device', device, '--json', ...extra];
    const env = { ...process.env, SAFETY_ARITHMETIC_CUDA_LIBRARY: p.cudaLibrary };
    const child = spawnSync(process.execPath, [cli, ...args.map((a) => a.replace('{hv}', `${out}.harm.safetensors`))], { encoding: 'utf8', env });
    t.is(child.status, 0, child.stderr);
    return { out, summary: JSON.parse(child.stdout.trim().split('\n').pop()!) as { backend: string; passes: { ran: number } } };
  };
  for (const [name, extra, ran] of [['one', ['--passes', '1'], 1], ['three', ['--passes', '3'], 3], ['saved', ['--save-harm-vector', '{hv}'], 3]] as const) {
    const cpu = hdr('cpu', name, [...extra]), cuda = hdr('cuda', name, [...extra]);
    t.is(cuda.summary.backend, 'cuda');
    t.is(cuda.summary.passes.ran, ran, name);
    const files = fs.readdirSync(cpu.out).filter((file) => file !== 'safety_arithmetic.json').sort();
    t.deepEqual(fs.readdirSync(cuda.out).filter((file) => file !== 'safety_arithmetic.json').sort(), files);
    for (const file of files) t.true(fs.readFileSync(path.join(cuda.out, file)).equals(fs.readFileSync(path.join(cpu.out, file))), `${name}: ${file} differs`);
    if (name === 'saved') t.true(fs.readFileSync(`${cuda.out}.harm.safetensors`).equals(fs.readFileSync(`${cpu.out}.harm.safetensors`)), 'harm vectors differ');
  }
});
