/**
 * The CPU thread count changes nothing but speed: logits (prefill alone and in a batch, decode over a
 * long context, steered rows) and HDR output bytes are identical with 1, 2 and 3 threads; the
 * `threads` option, SAFETY_ARITHMETIC_THREADS and `--threads` are checked with clear errors.
 * The thread pool is process-wide, so these tests run serially.
 */
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { backends } from '../lib/device';
import { removeHarmDirection } from '../lib/hdr';
import { LanguageModel } from '../lib/model/model';
import type { NativeModel } from '../lib/native';
import { THREADS_ENV } from '../lib/threads';
import { tinyModel, tmpDir, writeCheckpoint } from './helpers/checkpoints';

const ROOT = path.join(__dirname, '..', '..');
const MODEL = path.join(ROOT, 'test', 'fixtures', 'llama-tiny', 'model');
const CLI = path.join(ROOT, 'bin', 'safety-arithmetic.js');
const COUNTS = [1, 2, 3];

/** Deterministic token ids in 3..383 (clear of the special ids). */
function promptOf(length: number, seed: number): number[] {
  let x = seed * 2654435761 + 1;
  return Array.from({ length }, () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return 3 + (x % 381);
  });
}

const cpuThreads = () => backends().find((b) => b.name === 'cpu')!.details.threads;
const nativeOf = (m: LanguageModel) => (m as unknown as { nativeModel: NativeModel }).nativeModel;
const sameBits = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
const opts = { lastOnly: false, layerOut: false, mlpOut: true };

/** Everything the engine computes here that threads could change, as named float arrays. */
async function engineOutputs(threads: number): Promise<Map<string, Float32Array>> {
  const m = await LanguageModel.load(MODEL, { device: 'cpu', threads });
  const out = new Map<string, Float32Array>();
  try {
    const nm = nativeOf(m);
    const long = promptOf(300, 1), other = promptOf(250, 2), short = promptOf(9, 3);
    const [alone] = await nm.forward([{ tokens: Int32Array.from(short) }], opts);
    out.set('alone', alone!.logits);
    // 559 rows: large enough for every row-parallel op (embed, norm, rope, add, SwiGLU) to split.
    const batch = await nm.forward([long, short, other].map((p) => ({ tokens: Int32Array.from(p) })), opts);
    batch.forEach((r, i) => {
      out.set(`batch${i}`, r.logits);
      out.set(`batch${i}.mlp`, r.mlpOut!);
    });
    const H = m.config.hiddenSize, L = m.config.numLayers;
    const vectors = Float32Array.from({ length: L * H }, (_, i) => Math.sin(i * 0.37));
    const icv = nm.addIcv(Int32Array.from({ length: L }, (_, i) => i), vectors);
    const steered = await nm.forward([long, other].map((p) => ({ tokens: Int32Array.from(p), steer: [[icv, 1.5]] as [number, number][] })), opts);
    steered.forEach((r, i) => out.set(`steered${i}`, r.logits));
    // Decode over a long context: one query row, few heads (attention splits positions when it can).
    const session = nm.createSession(long.length + 8);
    await nm.forward([{ tokens: Int32Array.from(long), session }], { ...opts, lastOnly: true });
    for (let i = 0; i < 6; i++) {
      const [r] = await nm.forward([{ tokens: Int32Array.of(10 + i), session }], opts);
      out.set(`decode${i}`, r!.logits);
    }
    session.dispose();
    checkAloneInBatch(out, short.length, m.config.vocabSize);
  } finally {
    m.dispose();
  }
  return out;
}

/** The short prompt's logits are its own whether alone or in the batch. */
function checkAloneInBatch(out: Map<string, Float32Array>, rows: number, vocab: number): void {
  if (!sameBits(out.get('alone')!, out.get('batch1')!.subarray(0, rows * vocab))) throw new Error('a prompt in a batch got other logits than alone');
}

test.serial('logits, MLP outputs, steered and decoded logits are bit-identical with 1, 2 and 3 threads', async (t) => {
  const runs = [];
  for (const n of COUNTS) {
    runs.push(await engineOutputs(n));
    t.is(cpuThreads(), n, `the pool runs ${n} threads`);
  }
  const [first, ...rest] = runs;
  rest.forEach((r, i) => {
    for (const [name, values] of first!) t.true(sameBits(values, r.get(name)!), `${name}: ${COUNTS[i + 1]} threads against 1`);
  });
});

/** Three small checkpoints for HDR, with ~0.8M elements in one tensor: several parallel blocks. */
function hdrInputs(t: { teardown(fn: () => void): void }): string {
  const dir = tmpDir('sa-threads-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const big = { 'model.layers.0.mlp.down_proj.weight': { shape: [640, 1280] } };
  for (const [name, seed] of [['base', 1], ['harmful', 2], ['target', 3]] as const) writeCheckpoint(path.join(dir, name), tinyModel(seed, big));
  return dir;
}

async function hdrBytes(dir: string, out: string, threads: number): Promise<Buffer> {
  await removeHarmDirection({ base: path.join(dir, 'base'), harmful: path.join(dir, 'harmful'), target: path.join(dir, 'target'), out: path.join(dir, out), device: 'cpu', threads });
  return fs.readFileSync(path.join(dir, out, 'model.safetensors'));
}

test.serial('HDR writes the same bytes with 1, 2 and 3 threads', async (t) => {
  const dir = hdrInputs(t);
  const outputs: Buffer[] = [];
  for (const threads of COUNTS) {
    outputs.push(await hdrBytes(dir, `out${threads}`, threads));
    t.is(cpuThreads(), threads);
  }
  t.true(outputs[0]!.equals(outputs[1]!), '2 threads against 1');
  t.true(outputs[0]!.equals(outputs[2]!), '3 threads against 1');
});

test.serial('an HDR run and the engine sharing the pool at the same time get what they get alone', async (t) => {
  const dir = hdrInputs(t);
  const hdrAlone = await hdrBytes(dir, 'alone', 3);
  const engineAlone = await engineOutputs(3);
  const [hdrShared, engineShared] = await Promise.all([hdrBytes(dir, 'shared', 3), engineOutputs(3)]);
  t.true(hdrShared.equals(hdrAlone), 'HDR bytes');
  for (const [name, values] of engineAlone) t.true(sameBits(values, engineShared.get(name)!), name);
});

test.serial('the threads option and SAFETY_ARITHMETIC_THREADS are checked, with errors that name them', async (t) => {
  for (const bad of [0, -2, 1.5, 5000, Number.NaN, '4'])
    await t.throwsAsync(LanguageModel.load(MODEL, { threads: bad as number }), { code: 'SA_INVALID_ARGUMENT', message: /^threads: must be a whole number of CPU threads from 1 to 1024/ });
  const dir = tmpDir('sa-threads-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  await t.throwsAsync(removeHarmDirection({ base: dir, harmful: dir, target: dir, out: path.join(dir, 'o'), threads: 0 }), { code: 'SA_INVALID_ARGUMENT', message: /^threads: / });

  const saved = process.env[THREADS_ENV];
  t.teardown(() => {
    if (saved === undefined) delete process.env[THREADS_ENV];
    else process.env[THREADS_ENV] = saved;
  });
  for (const bad of ['abc', '0', '2.5', '-1', '99999']) {
    process.env[THREADS_ENV] = bad;
    const err = await t.throwsAsync(LanguageModel.load(MODEL), { code: 'SA_INVALID_ARGUMENT', message: /^SAFETY_ARITHMETIC_THREADS: must be a whole number/ });
    t.true(err!.message.includes(JSON.stringify(bad)), err!.message);
  }
  process.env[THREADS_ENV] = '2';
  (await LanguageModel.load(MODEL)).dispose();
  t.is(cpuThreads(), 2, 'the variable sets the count');
  (await LanguageModel.load(MODEL, { threads: 3 })).dispose();
  t.is(cpuThreads(), 3, 'the option wins over the variable');
  process.env[THREADS_ENV] = '';
  (await LanguageModel.load(MODEL)).dispose();
  t.is(cpuThreads(), 3, 'without option or variable the count stays');
});

test.serial('generate --threads N gives the tokens it gives without; a bad count is refused', (t) => {
  const cli = (...args: string[]) => {
    const env: NodeJS.ProcessEnv = { ...process.env, SAFETY_ARITHMETIC_DEVICE: 'cpu' };
    delete env[THREADS_ENV];
    return spawnSync(process.execPath, [CLI, 'generate', '--model', MODEL, '--tokens', promptOf(20, 4).join(','), '--max-new-tokens', '8', '--json', ...args], { encoding: 'utf8', env });
  };
  const plain = cli(), two = cli('--threads', '2');
  t.is(plain.status, 0, plain.stderr);
  t.is(two.status, 0, two.stderr);
  t.deepEqual(JSON.parse(two.stdout.trim().split('\n').at(-1)!).tokens, JSON.parse(plain.stdout.trim().split('\n').at(-1)!).tokens);
  const zero = cli('--threads', '0');
  t.not(zero.status, 0);
  t.regex(zero.stderr, /threads: must be a whole number of CPU threads/);
  const word = cli('--threads', 'many');
  t.not(word.status, 0);
  t.regex(word.stderr, /--threads expects an integer/);
});
