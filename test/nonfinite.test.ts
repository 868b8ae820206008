/**
 * Values that must be refused: NaN and infinities in HDR inputs, harm vectors and ICVs; a result that
 * overflows its dtype; a NaN or infinite steering vector or alpha. Each refusal names the file and
 * the tensor (or the field), leaves no output, and leaves every input byte-identical.
 */
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { readSafetensorsHeader } from '../lib/checkpoint/safetensors';
import { SafetyArithmeticError, type ErrorCode } from '../lib/errors';
import { removeHarmDirection, type HdrOptions } from '../lib/hdr';
import { ICV_FORMAT, ICV_VERSION, loadIcv, type InContextVector } from '../lib/icv';
import { LanguageModel } from '../lib/model/model';
import { steerActivations, steerWithIcv } from '../lib/steering';
import { hdrFixture, leftovers, snapshotTree, tinyModel, tmpDir, writeCheckpoint, type TensorSpec } from './helpers/checkpoints';
import { writeSafetensors } from './helpers/safetensors';

const F32_TENSOR = 'model.layers.0.mlp.down_proj.weight';
const BF16_TENSOR = 'model.layers.0.self_attn.q_proj.weight';
const POISON_AT = 5;
const BAD_VALUES = [
  { label: '+Inf', f32: Number.POSITIVE_INFINITY, bf16: 0x7f80 },
  { label: '-Inf', f32: Number.NEGATIVE_INFINITY, bf16: 0xff80 },
  { label: 'NaN', f32: Number.NaN, bf16: 0x7fc0 },
] as const;
type Role = 'base' | 'harmful' | 'target';
const SEEDS: Record<Role, number> = { base: 1, harmful: 2, target: 3 };

interface Fixture {
  root: string;
  dirs: Record<Role, string>;
  files: Record<Role, string>;
  out: string;
}

/** base, harmful and target checkpoints in a fresh folder (hdrFixture); `models` replaces the tensors of some. */
function fixture(t: ExecutionContext, models: Partial<Record<Role, TensorSpec[]>> = {}): Fixture {
  const fx = hdrFixture(t, {}, models);
  return {
    root: fx.root,
    dirs: { base: fx.base, harmful: fx.harmful, target: fx.target },
    files: { base: fx.files.base[0]!, harmful: fx.files.harmful[0]!, target: fx.files.target[0]! },
    out: fx.out,
  };
}

/** tinyModel(seed) with one element of `tensor` set to `write`'s value. */
function poisoned(seed: number, tensor: string, write: (bytes: Buffer) => void): TensorSpec[] {
  const tensors = tinyModel(seed);
  write(tensors.find((x) => x.name === tensor)!.bytes);
  return tensors;
}

interface Expected {
  code: ErrorCode;
  file?: string;
  tensor?: string;
  field?: string;
  message: RegExp;
}

/** Runs removeHarmDirection, expects the refusal, no output, and every input (`watch`) unchanged. */
async function expectRefused(t: ExecutionContext, options: HdrOptions, watch: string[], e: Expected): Promise<void> {
  const before = watch.map((p) => snapshotTree(p));
  const err = await t.throwsAsync<SafetyArithmeticError>(() => removeHarmDirection(options), { instanceOf: SafetyArithmeticError });
  if (!err) return;
  t.is(err.code, e.code, err.message);
  t.is(err.file, e.file, `err.file of: ${err.message}`);
  if (e.file !== undefined) t.true(err.message.includes(e.file), `the message names the file: ${err.message}`);
  t.is(err.tensor, e.tensor, `err.tensor of: ${err.message}`);
  if (e.tensor !== undefined) t.true(err.message.includes(`"${e.tensor}`), `the message names the tensor: ${err.message}`);
  if (e.field !== undefined) t.is(err.field, e.field);
  t.regex(err.message, e.message);
  t.false(fs.existsSync(options.out), 'no output');
  t.deepEqual(leftovers(options.out), [], 'no partial output');
  watch.forEach((p, i) => t.deepEqual(snapshotTree(p), before[i], `${p} unchanged`));
}

const INPUT_REFUSAL = /NaN or infinite values .*re-download/;

// ---------------------------------------------------------------------------------------------
// HDR inputs

for (const role of ['base', 'harmful', 'target'] as const) {
  for (const dtype of ['F32', 'BF16'] as const) {
    test(`HDR: +Inf, -Inf and NaN in a ${dtype} tensor of the ${role} checkpoint refused, naming the tensor and the file`, async (t) => {
      const tensor = dtype === 'F32' ? F32_TENSOR : BF16_TENSOR;
      for (const bad of BAD_VALUES) {
        const model = poisoned(SEEDS[role], tensor, (b) => (dtype === 'F32' ? b.writeFloatLE(bad.f32, 4 * POISON_AT) : b.writeUInt16LE(bad.bf16, 2 * POISON_AT)));
        const fx = fixture(t, { [role]: model });
        await expectRefused(t, { base: fx.dirs.base, harmful: fx.dirs.harmful, target: fx.dirs.target, out: fx.out, device: 'cpu' }, Object.values(fx.dirs), {
          code: 'SA_BAD_CHECKPOINT', file: fx.files[role], tensor, message: INPUT_REFUSAL,
        });
      }
    });
  }
}

test('HDR: a non-finite input is refused without trimming too (task-vector: the apply pass finds it)', async (t) => {
  for (const role of ['base', 'harmful'] as const) {
    const fx = fixture(t, { [role]: poisoned(SEEDS[role], F32_TENSOR, (b) => b.writeFloatLE(Number.POSITIVE_INFINITY, 0)) });
    await expectRefused(t, { base: fx.dirs.base, harmful: fx.dirs.harmful, target: fx.dirs.target, out: fx.out, device: 'cpu', mode: 'task-vector' }, Object.values(fx.dirs), {
      code: 'SA_BAD_CHECKPOINT', file: fx.files[role], tensor: F32_TENSOR, message: INPUT_REFUSAL,
    });
  }
});

test('HDR: with an edit mask, a non-finite harmful value outside the edited elements is refused too', async (t) => {
  // The target is the base with one element changed; the NaN sits at another element of that tensor.
  const target = poisoned(SEEDS.base, F32_TENSOR, (b) => b.writeFloatLE(0.25, 4 * 3));
  const fx = fixture(t, { target, harmful: poisoned(SEEDS.harmful, F32_TENSOR, (b) => b.writeFloatLE(Number.NaN, 4 * 7)) });
  await expectRefused(t, { base: fx.dirs.base, harmful: fx.dirs.harmful, target: fx.dirs.target, out: fx.out, device: 'cpu', layers: [1], editMask: true }, Object.values(fx.dirs), {
    code: 'SA_BAD_CHECKPOINT', file: fx.files.harmful, tensor: F32_TENSOR, message: INPUT_REFUSAL,
  });
});

// ---------------------------------------------------------------------------------------------
// HDR outputs

test('HDR: a result that overflows F32 is refused, naming the tensor and lambda', async (t) => {
  // tau is about 100 at one element of the F32 tensor: 1e38 * 100 overflows float32.
  const fx = fixture(t, { harmful: poisoned(SEEDS.harmful, F32_TENSOR, (b) => b.writeFloatLE(100, 4 * POISON_AT)) });
  await expectRefused(t, { base: fx.dirs.base, harmful: fx.dirs.harmful, target: fx.dirs.target, out: fx.out, device: 'cpu', mode: 'task-vector', lambda: 1e38 }, Object.values(fx.dirs), {
    code: 'SA_INVALID_ARGUMENT', tensor: F32_TENSOR, field: 'lambda', message: /overflows the range of F32 .*use a smaller lambda/,
  });
});

test('HDR: a result that overflows F16 is refused, naming the tensor and lambda', async (t) => {
  // model.norm.weight as F16: base 0.5, harmful 1.0, target 0.125; 0.125 - 1e6 * 0.5 overflows F16.
  const f16 = (bits: number) => ({ name: 'model.norm.weight', dtype: 'F16', shape: [4], bytes: Buffer.from(Uint16Array.of(bits, bits, bits, bits).buffer) });
  const withNorm = (seed: number, bits: number) => [...tinyModel(seed).filter((x) => x.name !== 'model.norm.weight'), f16(bits)];
  const fx = fixture(t, { base: withNorm(1, 0x3800), harmful: withNorm(2, 0x3c00), target: withNorm(3, 0x3000) });
  await expectRefused(t, { base: fx.dirs.base, harmful: fx.dirs.harmful, target: fx.dirs.target, out: fx.out, device: 'cpu', mode: 'task-vector', lambda: 1e6 }, Object.values(fx.dirs), {
    code: 'SA_INVALID_ARGUMENT', tensor: 'model.norm.weight', field: 'lambda', message: /overflows the range of F16 with lambda = 1000000; use a smaller lambda/,
  });
  // A lambda that fits goes through.
  const s = await removeHarmDirection({ base: fx.dirs.base, harmful: fx.dirs.harmful, target: fx.dirs.target, out: fx.out, device: 'cpu', mode: 'task-vector', lambda: 2 });
  t.true(s.kept > 0);
});

// ---------------------------------------------------------------------------------------------
// harm vectors

/** A harm vector saved by a valid run, and the byte offset of the first value of `tensor`. */
async function savedHarmVector(t: ExecutionContext, fx: Fixture, tensor: string): Promise<{ hv: string; valueAt: number }> {
  const hv = path.join(fx.root, 'harm.safetensors');
  await removeHarmDirection({ base: fx.dirs.base, harmful: fx.dirs.harmful, target: fx.dirs.target, out: path.join(fx.root, 'first'), device: 'cpu', saveHarmVector: hv });
  const values = readSafetensorsHeader(hv).tensors.find((x) => x.name === `${tensor}::values`);
  t.truthy(values && values.nbytes >= 4, `the harm vector holds values of ${tensor}`);
  return { hv, valueAt: values!.offset };
}

test('harm vector: a NaN or infinite value is refused, naming the tensor and the file', async (t) => {
  for (const value of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
    const fx = fixture(t);
    const { hv, valueAt } = await savedHarmVector(t, fx, F32_TENSOR);
    const fd = fs.openSync(hv, 'r+');
    const bytes = Buffer.alloc(4);
    bytes.writeFloatLE(value, 0);
    fs.writeSync(fd, bytes, 0, 4, valueAt);
    fs.closeSync(fd);
    await expectRefused(t, { target: fx.dirs.target, harmVector: hv, out: fx.out, device: 'cpu' }, [fx.dirs.target, hv], {
      code: 'SA_BAD_CHECKPOINT', file: hv, tensor: F32_TENSOR, message: /::values" holds a NaN or infinite value at entry 0 .*make the harm vector again/,
    });
  }
});

test('harm vector: a non-finite value in a patched target tensor is refused, naming the target file', async (t) => {
  const fx = fixture(t);
  const { hv } = await savedHarmVector(t, fx, F32_TENSOR);
  const target = path.join(fx.root, 'target2');
  const [file] = writeCheckpoint(target, poisoned(SEEDS.target, F32_TENSOR, (b) => b.writeFloatLE(Number.POSITIVE_INFINITY, 4 * POISON_AT)));
  await expectRefused(t, { target, harmVector: hv, out: fx.out, device: 'cpu' }, [target, hv], {
    code: 'SA_BAD_CHECKPOINT', file, tensor: F32_TENSOR, message: INPUT_REFUSAL,
  });
});

test('harm vector: a result that overflows is refused, naming the tensor and lambda', async (t) => {
  const fx = fixture(t, { harmful: poisoned(SEEDS.harmful, F32_TENSOR, (b) => b.writeFloatLE(100, 4 * POISON_AT)) });
  const { hv } = await savedHarmVector(t, fx, F32_TENSOR);
  await expectRefused(t, { target: fx.dirs.target, harmVector: hv, out: fx.out, device: 'cpu', lambda: 1e38 }, [fx.dirs.target, hv], {
    code: 'SA_INVALID_ARGUMENT', tensor: F32_TENSOR, field: 'lambda', message: /overflows the range of F32 .*use a smaller lambda/,
  });
});

test('a lambda beyond the float32 range is refused', async (t) => {
  const fx = fixture(t);
  await expectRefused(t, { base: fx.dirs.base, harmful: fx.dirs.harmful, target: fx.dirs.target, out: fx.out, device: 'cpu', lambda: 1e39 }, Object.values(fx.dirs), {
    code: 'SA_INVALID_ARGUMENT', field: 'lambda', message: /lambda/,
  });
});

// ---------------------------------------------------------------------------------------------
// ICVs and steering

const MODEL = path.join(__dirname, '..', '..', 'test', 'fixtures', 'llama-tiny', 'model');
const LAYERS = 4, HIDDEN = 64;

function finiteVectors(): Float32Array {
  return Float32Array.from({ length: LAYERS * HIDDEN }, (_, i) => Math.sin(i * 0.37));
}

/** An ICV file for the llama-tiny fixture, with metadata overrides. */
function writeIcv(file: string, vectors: Float32Array, metadata: Record<string, string> = {}): string {
  writeSafetensors(file, [{ name: 'icv', dtype: 'F32', shape: [LAYERS, HIDDEN], bytes: Buffer.from(vectors.buffer, vectors.byteOffset, vectors.byteLength) }], {
    format: ICV_FORMAT, version: ICV_VERSION, layers: '0,1,2,3', hidden_size: String(HIDDEN), default_alpha: '0.12', model_fingerprint: 'test', ...metadata,
  });
  return file;
}

function expectSync(t: ExecutionContext, fn: () => unknown, code: ErrorCode, details: { file?: string; tensor?: string; field?: string }, message: RegExp): void {
  const err = t.throws<SafetyArithmeticError>(fn, { instanceOf: SafetyArithmeticError });
  if (!err) return;
  t.is(err.code, code, err.message);
  for (const key of ['file', 'tensor', 'field'] as const) if (details[key] !== undefined) t.is(err[key], details[key], `err.${key} of: ${err.message}`);
  if (details.file !== undefined) t.true(err.message.includes(details.file), `the message names the file: ${err.message}`);
  t.regex(err.message, message);
}

test('loadIcv refuses NaN and infinities, naming the file and the layer row; the file is unchanged', (t) => {
  const root = tmpDir('sa-nonfinite-icv-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  t.is(loadIcv(writeIcv(path.join(root, 'good.safetensors'), finiteVectors())).vectors.length, LAYERS * HIDDEN, 'a finite ICV loads');
  for (const value of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
    const vectors = finiteVectors();
    vectors[2 * HIDDEN + 7] = value;
    const file = writeIcv(path.join(root, `bad-${String(value)}.safetensors`), vectors);
    const before = snapshotTree(file);
    expectSync(t, () => loadIcv(file), 'SA_BAD_CHECKPOINT', { file, tensor: 'icv' }, /row 2 \(layer 2\) holds .* at column 7.*compute it again/);
    t.deepEqual(snapshotTree(file), before);
  }
});

test('loadIcv refuses a default_alpha that is empty, blank or not a finite number', (t) => {
  const root = tmpDir('sa-nonfinite-icv-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  ['', ' ', '\t', 'abc', 'NaN', 'Infinity', '-Infinity', '1e999', '0x10', '1,5'].forEach((alpha, i) => {
    const file = writeIcv(path.join(root, `alpha-${i}.safetensors`), finiteVectors(), { default_alpha: alpha });
    expectSync(t, () => loadIcv(file), 'SA_BAD_CHECKPOINT', { file, field: 'default_alpha' }, /default_alpha is .*not a finite number/);
  });
  ([['0.5', 0.5], ['-1', -1], ['1e-1', 0.1], ['3', 3]] as const).forEach(([alpha, value], i) => {
    t.is(loadIcv(writeIcv(path.join(root, `ok-${i}.safetensors`), finiteVectors(), { default_alpha: alpha })).defaultAlpha, value);
  });
});

test('the steering API refuses non-finite vectors and alphas, naming the field', async (t) => {
  const root = tmpDir('sa-nonfinite-steer-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const model = await LanguageModel.load(MODEL, { device: 'cpu' });
  t.teardown(() => model.dispose());
  const good: InContextVector = { layers: [0, 1, 2, 3], hiddenSize: HIDDEN, vectors: finiteVectors(), defaultAlpha: 0.5, modelFingerprint: '', metadata: {} };
  const nan = finiteVectors();
  nan[HIDDEN + 3] = Number.NaN;

  // From a file: loadIcv refuses it first.
  const file = writeIcv(path.join(root, 'nan.safetensors'), nan);
  expectSync(t, () => steerWithIcv(model, file), 'SA_BAD_CHECKPOINT', { file, tensor: 'icv' }, /row 1 \(layer 1\)/);
  // An ICV object, a raw steering vector (refused by the native side), and alphas.
  expectSync(t, () => steerWithIcv(model, { ...good, vectors: nan }), 'SA_INVALID_ARGUMENT', { field: 'vectors' }, /layer 1 \(row 1\) holds NaN at column 3/);
  expectSync(t, () => model.addSteeringVector([0, 1, 2, 3], nan), 'SA_INVALID_ARGUMENT', { field: 'vectors' }, /row 1 \(layer 1\) holds a non-finite value .* column 3/);
  const inf = finiteVectors();
  inf[5] = Number.POSITIVE_INFINITY;
  expectSync(t, () => model.addSteeringVector([0, 1, 2, 3], inf), 'SA_INVALID_ARGUMENT', { field: 'vectors' }, /row 0 \(layer 0\)/);
  for (const alpha of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])
    expectSync(t, () => steerWithIcv(model, good, alpha), 'SA_INVALID_ARGUMENT', { field: 'alpha' }, /finite/);
  expectSync(t, () => steerWithIcv(model, { ...good, defaultAlpha: Number.NaN }), 'SA_INVALID_ARGUMENT', { field: 'alpha' }, /finite/);

  // A finite ICV still steers generation.
  const request = steerWithIcv(model, good);
  const out = await model.generateText([1, 5, 9], { maxNewTokens: 3, steer: [request] });
  t.is(out.tokens.length > 0, true);

  // steerActivations: JS checks, and the native transform checks on its own.
  const x = Float32Array.from({ length: 2 * HIDDEN }, (_, i) => Math.cos(i));
  const xBefore = x.slice();
  expectSync(t, () => steerActivations(x, HIDDEN, [nan.subarray(HIDDEN, 2 * HIDDEN)], [1]), 'SA_INVALID_ARGUMENT', { field: 'vectors' }, /holds NaN at index 3/);
  for (const alpha of [Number.NaN, Number.POSITIVE_INFINITY, 1e39])
    expectSync(t, () => steerActivations(x, HIDDEN, [good.vectors.subarray(0, HIDDEN)], [alpha]), 'SA_INVALID_ARGUMENT', { field: 'alphas' }, /finite/);
  t.deepEqual(x, xBefore, 'x is left as it was');
});
