/**
 * Every CPU kernel variant this machine runs (chosen at load through SAFETY_ARITHMETIC_CPU, so each
 * runs in its own child process): golden logits, a prompt alone and inside a ragged batch bit for
 * bit, in float32, bf16 and f16 weights; the AVX2 and AVX-512 kernels agree bit for bit; a variant
 * that does not exist or that this CPU cannot run is a clear error at model load.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cpuKernel } from '../lib/device';
import { bf16Bytes, tmpDir } from './helpers/checkpoints';
import { loadTensors, toFloat32, writeSafetensors } from './helpers/safetensors';

const G = path.join(__dirname, '..', '..', 'test', 'fixtures', 'llama-tiny');
const MODEL = path.join(G, 'model');
const TOL = 1e-4; // as test/engine.test.ts
const VARIANTS = ['baseline', 'avx2', 'avx512'];
const kernels = cpuKernel();

/** float32 -> float16 by truncation, flushing what is below the normal range (test data only). */
function f16Bytes(values: Float32Array): Buffer {
  const out = Buffer.alloc(values.length * 2);
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const sign = (u[i]! >>> 16) & 0x8000, exp = ((u[i]! >>> 23) & 0xff) - 112;
    out.writeUInt16LE(exp <= 0 ? sign : exp >= 31 ? sign | 0x7c00 : sign | (exp << 10) | ((u[i]! >>> 13) & 0x3ff), i * 2);
  }
  return out;
}

/** The llama-tiny model with every weight converted to dtype. */
function convertedModel(dtype: 'BF16' | 'F16'): string {
  const dir = tmpDir(`cpu-variants-${dtype}-`);
  for (const f of ['config.json', 'generation_config.json']) fs.copyFileSync(path.join(MODEL, f), path.join(dir, f));
  const tensors = [...loadTensors(path.join(MODEL, 'model.safetensors'))].map(([name, t]) => {
    const v = toFloat32(t);
    return { name, dtype, shape: t.shape, bytes: dtype === 'BF16' ? bf16Bytes(v) : f16Bytes(v) };
  });
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  return dir;
}

// Runs in the child: loads each model, prints what the parent checks as one line of JSON.
const CHILD = `
const path = require('node:path');
const [root, fixtures, ...halfModels] = process.argv.slice(1);
const { LanguageModel } = require(path.join(root, 'lib/model/model'));
const { cpuKernel } = require(path.join(root, 'lib/device'));
const { loadTensors, toFloat32 } = require(path.join(root, 'test/helpers/safetensors'));
const { maxRelativeError } = require(path.join(root, 'test/helpers/compare'));
const same = (a, b) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
(async () => {
  const seqs = require(path.join(fixtures, 'manifest.json')).forward.sequences;
  const golden = loadTensors(path.join(fixtures, 'forward.safetensors'));
  const out = { kernel: cpuKernel().chosen, models: [] };
  for (const [dir, weights] of [[path.join(fixtures, 'model'), 'float32'], ...halfModels.map((d) => [d, 'auto'])]) {
    let m;
    try {
      m = await LanguageModel.load(dir, { device: 'cpu', weights, tokenizer: false });
    } catch (err) {
      out.error = { code: err.code, message: err.message };
      break;
    }
    const together = await m.forward(seqs);
    const r = { dir, goldenError: [], aloneEqualsBatch: [], logits0: Buffer.from(together[0].logits.buffer, together[0].logits.byteOffset, together[0].logits.byteLength).toString('base64') };
    for (let i = 0; i < seqs.length; i++) {
      const [alone] = await m.forward([seqs[i]]);
      r.aloneEqualsBatch.push(same(alone.logits, together[i].logits));
      r.goldenError.push(maxRelativeError(together[i].logits, toFloat32(golden.get('seq' + i + '.logits'))));
    }
    out.models.push(r);
    m.dispose();
  }
  process.stdout.write(JSON.stringify(out) + '\\n');
})().catch((e) => { console.error(e); process.exit(1); });
`;

interface ChildResult {
  kernel: string | null;
  error?: { code: string; message: string };
  models: { dir: string; goldenError: number[]; aloneEqualsBatch: boolean[]; logits0: string }[];
}

function runChild(variant: string, halfModels: string[] = []): ChildResult {
  const env = { ...process.env, SAFETY_ARITHMETIC_CPU: variant };
  const r = spawnSync(process.execPath, ['-e', CHILD, path.join(__dirname, '..'), G, ...halfModels], { env, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`child for ${variant} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
}

const halfModels = { BF16: '', F16: '' };
test.before(() => {
  halfModels.BF16 = convertedModel('BF16');
  halfModels.F16 = convertedModel('F16');
});
test.after.always(() => {
  for (const dir of Object.values(halfModels)) if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const results = new Map<string, ChildResult>();
for (const name of VARIANTS) {
  const v = kernels.variants.find((x) => x.name === name);
  if (!v) {
    test.skip(`${name}: skipped, not a kernel variant of this build (${process.arch})`, () => {});
    continue;
  }
  if (!v.supported) {
    test.skip(`${name}: skipped, this CPU lacks ${v.missing ?? 'what it needs'}`, () => {});
    continue;
  }
  test.serial(`${name}: golden logits within ${TOL}; alone and in a ragged batch bit-identical (f32, bf16, f16 weights)`, (t) => {
    const r = runChild(name, [halfModels.BF16, halfModels.F16]);
    results.set(name, r);
    t.is(r.error, undefined);
    t.is(r.kernel, name);
    t.is(r.models.length, 3);
    const [f32, ...half] = r.models;
    f32!.goldenError.forEach((err, i) => t.true(err <= TOL, `seq${i}: relative error ${err}`));
    // The converted weights are the golden ones rounded: close, not equal.
    for (const m of half) m.goldenError.forEach((err, i) => t.true(err <= 0.05, `${m.dir} seq${i}: relative error ${err}`));
    for (const m of r.models) t.deepEqual(m.aloneEqualsBatch, m.aloneEqualsBatch.map(() => true), m.dir);
  });
}

test.serial('avx2 and avx512 give bit-identical logits (same order of operations)', (t) => {
  const a = results.get('avx2'), b = results.get('avx512');
  if (!a || !b) {
    t.log('skipped: this CPU does not run both');
    t.pass();
    return;
  }
  a.models.forEach((m, i) => t.is(m.logits0, b.models[i]!.logits0, m.dir));
});

test('an unknown variant name is a clear SA_DEVICE_UNAVAILABLE error at model load', (t) => {
  const r = runChild('avx9');
  t.is(r.error?.code, 'SA_DEVICE_UNAVAILABLE');
  t.regex(r.error?.message ?? '', /SAFETY_ARITHMETIC_CPU is "avx9".*use baseline/);
});

const unsupported = kernels.variants.find((v) => !v.supported);
(unsupported ? test : test.skip)(
  unsupported ? `asking for ${unsupported.name}, which this CPU cannot run, is a clear error` : 'asking for a variant this CPU cannot run: skipped, this CPU runs every variant',
  (t) => {
    const r = runChild(unsupported!.name);
    t.is(r.error?.code, 'SA_DEVICE_UNAVAILABLE');
    t.regex(r.error?.message ?? '', new RegExp(`SAFETY_ARITHMETIC_CPU=${unsupported!.name} .*does not support`));
  },
);
