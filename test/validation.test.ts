/**
 * Validation before any work, and atomic outputs: every bad input is refused with an error that
 * names the file (and the tensor) and says what to do, and no output or partial output is left.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { backends } from '../lib/device';
import { SafetyArithmeticError, type ErrorCode } from '../lib/errors';
import { removeHarmDirection, type HdrOptions } from '../lib/hdr';
import {
  f32Bytes, hdrFixture, leftovers, snapshotTree, tinyModel, tmpDir, writeCheckpoint, writeLargeF32Checkpoint, writeRawSafetensors, type HdrFixture, type TensorSpec,
} from './helpers/checkpoints';
import { writeSafetensors } from './helpers/safetensors';

const BIN = path.join(__dirname, '..', '..', 'bin', 'safety-arithmetic.js');
const cudaAvailable = backends().some((b) => b.name === 'cuda' && b.available);

type Fixture = HdrFixture;
const fixture = hdrFixture;

interface Expected {
  code: ErrorCode;
  /** The file the error must name (in err.file and in the message). */
  file?: string;
  /** The tensor the error must name (in err.tensor and in the message). */
  tensor?: string;
  field?: string;
  /** What the message must also say (the reason, what to do). */
  message?: RegExp;
  /** out existed before the call: it must be unchanged rather than absent. */
  outExisted?: boolean;
}

/** Runs removeHarmDirection, expects it to reject as described, and checks that nothing was written. */
async function expectRefused(t: ExecutionContext, fx: Fixture, overrides: Partial<HdrOptions>, e: Expected): Promise<SafetyArithmeticError | undefined> {
  const options = { ...fx.options, ...overrides };
  const inputs = [fx.base, fx.harmful, fx.target].filter((d) => fs.existsSync(d));
  const before = inputs.map((d) => snapshotTree(d));
  const outBefore = e.outExisted ? snapshotTree(options.out) : undefined;
  const hvExisted = options.saveHarmVector !== undefined && fs.existsSync(options.saveHarmVector);
  const err = await t.throwsAsync<SafetyArithmeticError>(() => removeHarmDirection(options), { instanceOf: SafetyArithmeticError });
  if (!err) return undefined;
  t.is(err.code, e.code, `code of: ${err.message}`);
  if (process.env.SA_TEST_LOG_ERRORS) t.log(err.message);
  if (e.file !== undefined) {
    t.is(err.file, e.file, 'err.file');
    t.true(err.message.includes(e.file), `the message names ${e.file}: ${err.message}`);
  }
  if (e.tensor !== undefined) {
    t.is(err.tensor, e.tensor, 'err.tensor');
    t.true(err.message.includes(e.tensor), `the message names tensor ${e.tensor}: ${err.message}`);
  }
  if (e.field !== undefined) t.is(err.field, e.field, 'err.field');
  if (e.message) t.regex(err.message, e.message);
  if (e.code !== 'ABORT_ERR') t.regex(err.message, WHAT_TO_DO, 'the message says what to do');
  if (e.outExisted) t.deepEqual(snapshotTree(options.out), outBefore, 'the existing out was left as it was');
  else t.false(fs.existsSync(options.out), 'no output folder');
  t.deepEqual(leftovers(options.out), [], 'no partial output beside out');
  if (options.saveHarmVector !== undefined) {
    if (!hvExisted) t.false(fs.existsSync(options.saveHarmVector), 'no harm vector file');
    t.deepEqual(leftovers(options.saveHarmVector), [], 'no partial harm vector');
  }
  inputs.forEach((d, i) => t.deepEqual(snapshotTree(d), before[i], `input ${d} unchanged`));
  return err;
}

const REDO = /re-download|re-export/;
/** Each refusal says what to do: one of these phrases, or an instruction in the same spirit. */
const WHAT_TO_DO = /re-download|re-export|correct its index|must be checkpoints of one architecture|must come from the same architecture|pass --force|choose another path|write the output somewhere else|would destroy an input|--device cpu|use |give |make one with|it has layers|must be a non-empty list|cannot be combined|subtracts all of tau|was made for another architecture|not both|shard names must be plain file names|pass a |must be a finite number/;

// ---------------------------------------------------------------------------------------------
// A good run first: the fixtures are valid, so each failure below is due to its one bad input.

test('a valid run over single-file and sharded checkpoints succeeds and leaves only out', async (t) => {
  const fx = fixture(t, { harmful: 3 });
  const before = fs.readdirSync(fx.root).sort();
  const inputs = [fx.base, fx.harmful, fx.target].map((d) => snapshotTree(d));
  const s = await removeHarmDirection({ ...fx.options, saveHarmVector: path.join(fx.root, 'hv.safetensors') });
  t.deepEqual([fx.base, fx.harmful, fx.target].map((d) => snapshotTree(d)), inputs, 'inputs untouched');
  t.is(s.out, fx.out);
  t.true(s.kept > 0);
  t.deepEqual(fs.readdirSync(fx.root).sort(), [...before, 'hv.safetensors', 'out'].sort());
  t.true(fs.existsSync(path.join(fx.out, 'model.safetensors')));
  t.deepEqual(leftovers(fx.out), []);
});

// ---------------------------------------------------------------------------------------------
// safetensors headers (the harmful checkpoint's file is replaced by a bad one)

const T0 = 'model.layers.0.mlp.down_proj.weight';
const T1 = 'model.layers.1.mlp.down_proj.weight';
const entry = (dtype: unknown, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });

interface HeaderCase {
  title: string;
  write: (file: string) => void;
  message: RegExp;
  tensor?: string;
}

const headerCases: HeaderCase[] = [
  { title: 'a file shorter than the 8-byte length', write: (f) => fs.writeFileSync(f, Buffer.from([1, 2, 3])), message: /fewer than the 8-byte/ },
  { title: 'header length 0', write: (f) => writeRawSafetensors(f, '', Buffer.alloc(64), 0n), message: /header length is 0 bytes.*re-download/s },
  { title: 'header length 1', write: (f) => writeRawSafetensors(f, '{', Buffer.alloc(64), 1n), message: /header length is 1 bytes.*re-download/s },
  {
    title: 'header length over 100 MiB',
    write: (f) => writeRawSafetensors(f, '{}', Buffer.alloc(64), BigInt(100 * 1024 * 1024 + 1)),
    message: /104857601 bytes, over the 104857600-byte limit/,
  },
  { title: 'header length 2^64 - 1', write: (f) => writeRawSafetensors(f, '{}', Buffer.alloc(64), (1n << 64n) - 1n), message: /over the 104857600-byte limit/ },
  { title: 'header length past the end of the file', write: (f) => writeRawSafetensors(f, '{}', Buffer.alloc(10), 1000n), message: /runs past the end of the file.*truncated/ },
  { title: 'header not JSON', write: (f) => writeRawSafetensors(f, '{"model.norm.weight": {"dtype": ', Buffer.alloc(16)), message: /not valid JSON/ },
  { title: 'header a JSON array', write: (f) => writeRawSafetensors(f, '[]', Buffer.alloc(16)), message: /must be a JSON object/ },
  { title: 'header a JSON string', write: (f) => writeRawSafetensors(f, '"model"', Buffer.alloc(16)), message: /must be a JSON object/ },
  { title: 'header JSON null', write: (f) => writeRawSafetensors(f, 'null', Buffer.alloc(16)), message: /must be a JSON object/ },
  {
    title: '__metadata__ with a non-string value',
    write: (f) => writeRawSafetensors(f, { __metadata__: { format: 1 }, [T0]: entry('F32', [2], [0, 8]) }, Buffer.alloc(8)),
    message: /__metadata__\.format" must be a string/,
  },
  { title: 'tensor entry not an object', write: (f) => writeRawSafetensors(f, { [T0]: [1, 2, 3] }, Buffer.alloc(16)), message: /must be an object with dtype/, tensor: T0 },
  {
    title: 'tensor entry missing dtype',
    write: (f) => writeRawSafetensors(f, { [T0]: { shape: [2, 2], data_offsets: [0, 16] } }, Buffer.alloc(16)),
    message: /unknown dtype undefined \(known: .*F32/,
    tensor: T0,
  },
  { title: 'unknown dtype', write: (f) => writeRawSafetensors(f, { [T0]: entry('F12', [2, 2], [0, 16]) }, Buffer.alloc(16)), message: /unknown dtype "F12"/, tensor: T0 },
  {
    title: 'dtype naming an Object.prototype member',
    write: (f) => writeRawSafetensors(f, { [T0]: entry('constructor', [2, 2], [0, 16]) }, Buffer.alloc(16)),
    message: /unknown dtype "constructor"/,
    tensor: T0,
  },
  { title: 'negative shape', write: (f) => writeRawSafetensors(f, { [T0]: entry('F32', [-1, 4], [0, 16]) }, Buffer.alloc(16)), message: /shape must be a list of non-negative integers/, tensor: T0 },
  { title: 'fractional shape', write: (f) => writeRawSafetensors(f, { [T0]: entry('F32', [1.5, 2], [0, 12]) }, Buffer.alloc(16)), message: /shape must be a list/, tensor: T0 },
  { title: 'shape not a list', write: (f) => writeRawSafetensors(f, { [T0]: entry('F32', '4', [0, 16]) }, Buffer.alloc(16)), message: /shape must be a list/, tensor: T0 },
  { title: 'missing shape', write: (f) => writeRawSafetensors(f, { [T0]: { dtype: 'F32', data_offsets: [0, 16] } }, Buffer.alloc(16)), message: /shape must be a list/, tensor: T0 },
  { title: 'data_offsets begin > end', write: (f) => writeRawSafetensors(f, { [T0]: entry('F32', [4], [16, 0]) }, Buffer.alloc(16)), message: /data_offsets must be \[begin, end\]/, tensor: T0 },
  { title: 'data_offsets of one number', write: (f) => writeRawSafetensors(f, { [T0]: entry('F32', [4], [16]) }, Buffer.alloc(16)), message: /data_offsets must be/, tensor: T0 },
  { title: 'data_offsets as strings', write: (f) => writeRawSafetensors(f, { [T0]: entry('F32', [4], ['0', '16']) }, Buffer.alloc(16)), message: /data_offsets must be/, tensor: T0 },
  { title: 'negative data_offsets', write: (f) => writeRawSafetensors(f, { [T0]: entry('F32', [4], [-16, 0]) }, Buffer.alloc(16)), message: /data_offsets must be/, tensor: T0 },
  { title: 'missing data_offsets', write: (f) => writeRawSafetensors(f, { [T0]: { dtype: 'F32', shape: [4] } }, Buffer.alloc(16)), message: /data_offsets must be/, tensor: T0 },
  {
    title: 'offsets past the end of the file (truncated file)',
    write: (f) => {
      writeSafetensors(f, tinyModel(2));
      fs.truncateSync(f, fs.statSync(f).size - 10);
    },
    message: /past the \d+ data bytes in the file; the file is truncated/,
    tensor: 'model.norm.weight',
  },
  {
    title: 'overlapping tensors',
    write: (f) => writeRawSafetensors(f, { [T0]: entry('F32', [2, 2], [0, 16]), [T1]: entry('F32', [2, 2], [8, 24]) }, Buffer.alloc(24)),
    message: /overlap \(bytes 0-16 and 8-24\)/,
    tensor: T1,
  },
  {
    title: 'the same bytes claimed twice',
    write: (f) => writeRawSafetensors(f, { [T0]: entry('F32', [2, 2], [0, 16]), [T1]: entry('F32', [4], [0, 16]) }, Buffer.alloc(16)),
    message: /overlap/,
  },
  {
    title: 'overlapping tensors with an empty tensor between them',
    write: (f) => writeRawSafetensors(f, {
      'model.embed_tokens.weight': entry('F32', [25], [0, 100]),
      [T0]: entry('F32', [0], [50, 50]),
      [T1]: entry('F32', [2], [60, 68]),
    }, Buffer.alloc(100)),
    message: /"model\.embed_tokens\.weight" and "model\.layers\.1\.mlp\.down_proj\.weight" overlap \(bytes 0-100 and 60-68\)/,
    tensor: T1,
  },
  {
    title: 'dtype x shape != byte length',
    write: (f) => writeRawSafetensors(f, { [T0]: entry('F32', [2, 2], [0, 12]) }, Buffer.alloc(16)),
    message: /F32 x \[2,2\] needs 16 bytes but data_offsets \[0, 12\] span 12/,
    tensor: T0,
  },
  {
    title: 'BF16 dtype x shape != byte length',
    write: (f) => writeRawSafetensors(f, { [T0]: entry('BF16', [3, 2], [0, 24]) }, Buffer.alloc(24)),
    message: /BF16 x \[3,2\] needs 12 bytes/,
    tensor: T0,
  },
];

for (const c of headerCases) {
  test(`bad header refused: ${c.title}`, async (t) => {
    const fx = fixture(t);
    const file = fx.files.harmful[0]!;
    c.write(file);
    await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, ...(c.tensor ? { tensor: c.tensor } : {}), message: c.message });
  });
}

test('a bad header in the target or the base is refused too, naming that file', async (t) => {
  for (const role of ['target', 'base'] as const) {
    const fx = fixture(t);
    const file = fx.files[role][0]!;
    writeRawSafetensors(file, '[]', Buffer.alloc(16));
    await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, message: REDO });
  }
});

test('bad header refused in one shard of a sharded checkpoint, naming the shard', async (t) => {
  const fx = fixture(t, { harmful: 3 });
  const shard = fx.files.harmful[1]!;
  const buf = fs.readFileSync(shard);
  buf.writeBigUInt64LE(BigInt(buf.length), 0);  // header length past the end of the file
  fs.writeFileSync(shard, buf);
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file: shard, message: /truncated/ });
});

test('a folder with no checkpoint is refused', async (t) => {
  const fx = fixture(t);
  fs.rmSync(fx.files.harmful[0]!);
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file: fx.harmful, message: /no model\.safetensors and no model\.safetensors\.index\.json/ });
});

// ---------------------------------------------------------------------------------------------
// index files (the harmful checkpoint has 3 shards)

function indexOf(fx: Fixture): { file: string; json: { metadata: unknown; weight_map: Record<string, string> } } {
  const file = path.join(fx.harmful, 'model.safetensors.index.json');
  return { file, json: JSON.parse(fs.readFileSync(file, 'utf8')) };
}

function writeIndex(file: string, json: unknown): void {
  fs.writeFileSync(file, typeof json === 'string' ? json : JSON.stringify(json, null, 2));
}

const SHARD1 = 'model-00001-of-00003.safetensors';

for (const c of [
  { title: '"../x.safetensors"', name: (_fx: Fixture) => '../x.safetensors' },
  { title: 'an absolute path', name: (fx: Fixture) => path.join(fx.root, 'x.safetensors') },
  { title: 'an absolute path to its own shard', name: (fx: Fixture) => path.join(fx.harmful, SHARD1) },
  { title: 'a subfolder', name: (_fx: Fixture) => `sub/${SHARD1}` },
  { title: 'a backslash path', name: (_fx: Fixture) => `..\\x.safetensors` },
  { title: '".."', name: (_fx: Fixture) => '..' },
  { title: '"."', name: (_fx: Fixture) => '.' },
]) {
  test(`index naming a shard outside its folder refused: ${c.title}`, async (t) => {
    const fx = fixture(t, { harmful: 3 });
    const { file, json } = indexOf(fx);
    // Make the escape target real, so that only validation stops it.
    fs.copyFileSync(path.join(fx.harmful, SHARD1), path.join(fx.root, 'x.safetensors'));
    fs.mkdirSync(path.join(fx.harmful, 'sub'));
    fs.copyFileSync(path.join(fx.harmful, SHARD1), path.join(fx.harmful, 'sub', SHARD1));
    const tensor = Object.keys(json.weight_map)[0]!;
    json.weight_map[tensor] = c.name(fx);
    writeIndex(file, json);
    await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, tensor, message: /shard names must be plain file names in the checkpoint folder/ });
  });
}

test('index with an empty or non-string shard name refused', async (t) => {
  for (const bad of ['', 7, null]) {
    const fx = fixture(t, { harmful: 3 });
    const { file, json } = indexOf(fx);
    const tensor = Object.keys(json.weight_map)[1]!;
    (json.weight_map as Record<string, unknown>)[tensor] = bad;
    writeIndex(file, json);
    await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, tensor, message: /must be a shard file name/ });
  }
});

test('index listing a missing shard refused', async (t) => {
  const fx = fixture(t, { harmful: 3 });
  const { file } = indexOf(fx);
  fs.rmSync(path.join(fx.harmful, 'model-00002-of-00003.safetensors'));
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, message: /lists shard model-00002-of-00003\.safetensors, which is missing/ });
});

test('index that is not JSON, or has no weight_map, refused', async (t) => {
  for (const content of ['{"weight_map": {', JSON.stringify({ metadata: {} }), JSON.stringify({ weight_map: [] }), 'null', JSON.stringify({ weight_map: {} })]) {
    const fx = fixture(t, { harmful: 3 });
    const { file } = indexOf(fx);
    writeIndex(file, content);
    await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, message: /not valid JSON|weight_map/ });
  }
});

test('index and shard disagreeing refused: the index puts a tensor in the wrong shard', async (t) => {
  const fx = fixture(t, { harmful: 3 });
  const { file, json } = indexOf(fx);
  const tensor = Object.entries(json.weight_map).find(([, s]) => s !== SHARD1)![0];
  json.weight_map[tensor] = SHARD1;
  writeIndex(file, json);
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, tensor, message: new RegExp(`puts "${tensor}" in ${SHARD1} but it is in model-0000[23]`) });
});

test('index and shard disagreeing refused: a shard holds a tensor the index does not list', async (t) => {
  const fx = fixture(t, { harmful: 3 });
  const { file, json } = indexOf(fx);
  const tensor = Object.keys(json.weight_map)[2]!;
  delete json.weight_map[tensor];
  writeIndex(file, json);
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, tensor, message: /but not in weight_map/ });
});

test('index and shard disagreeing refused: the index lists a tensor no shard holds', async (t) => {
  const fx = fixture(t, { harmful: 3 });
  const { file, json } = indexOf(fx);
  json.weight_map['model.layers.1.mlp.up_proj.weight'] = SHARD1;
  writeIndex(file, json);
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, tensor: 'model.layers.1.mlp.up_proj.weight', message: /does not hold it/ });
});

test('a tensor in two shards refused', async (t) => {
  const fx = fixture(t, { harmful: 3 });
  const { json } = indexOf(fx);
  const shard2 = path.join(fx.harmful, 'model-00002-of-00003.safetensors');
  const dup = tinyModel(2).find((t) => json.weight_map[t.name] === SHARD1)!;
  const inShard2 = tinyModel(2).filter((t) => json.weight_map[t.name] === 'model-00002-of-00003.safetensors');
  writeSafetensors(shard2, [...inShard2, dup]);
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file: shard2, tensor: dup.name, message: new RegExp(`is also in ${SHARD1}; a tensor must appear once`) });
});

// ---------------------------------------------------------------------------------------------
// the checkpoints must agree

function renamed(tensors: TensorSpec[], from: string, to: string): TensorSpec[] {
  return tensors.map((t) => (t.name === from ? { ...t, name: to } : t));
}

test('base and harmful with different tensor names refused', async (t) => {
  const fx = fixture(t, {}, { harmful: renamed(tinyModel(2), T1, 'model.layers.1.mlp.up_proj.weight') });
  const err = await expectRefused(t, fx, {}, { code: 'SA_MISMATCH', file: fx.harmful, tensor: T1, message: /not the same architecture/ });
  t.regex(err?.message ?? '', /model\.layers\.1\.mlp\.up_proj\.weight/, 'names the extra tensor too');
});

test('harmful with an extra tensor refused', async (t) => {
  const extra: TensorSpec = { name: 'lm_head.weight', dtype: 'F32', shape: [2], bytes: f32Bytes([1, 2]) };
  const fx = fixture(t, {}, { harmful: [...tinyModel(2), extra] });
  await expectRefused(t, fx, {}, { code: 'SA_MISMATCH', file: fx.harmful, tensor: 'lm_head.weight', message: /harmful has 1 tensor\(s\) that base lacks/ });
});

test('target with different tensor names refused', async (t) => {
  const fx = fixture(t, {}, { target: tinyModel(3).filter((x) => x.name !== 'model.norm.weight') });
  await expectRefused(t, fx, {}, { code: 'SA_MISMATCH', file: fx.target, tensor: 'model.norm.weight', message: /target lacks 1 tensor/ });
});

test('base and harmful with different shapes refused', async (t) => {
  const fx = fixture(t, {}, { harmful: tinyModel(2, { [T0]: { shape: [6, 4] } }) });
  await expectRefused(t, fx, {}, { code: 'SA_MISMATCH', file: fx.files.harmful[0]!, tensor: T0, message: /shape \[6,4\] in harmful .* but \[4,6\] in base/ });
});

test('target with a different shape refused', async (t) => {
  const fx = fixture(t, {}, { target: tinyModel(3, { [T0]: { shape: [24] } }) });
  await expectRefused(t, fx, {}, { code: 'SA_MISMATCH', file: fx.files.target[0]!, tensor: T0, message: /same architecture/ });
});

test('a float tensor that is an integer tensor in the target refused', async (t) => {
  const fx = fixture(t, {}, { target: tinyModel(3, { 'model.norm.weight': { dtype: 'I32' } }) });
  await expectRefused(t, fx, {}, { code: 'SA_MISMATCH', file: fx.files.target[0]!, tensor: 'model.norm.weight', message: /I32 in the target .*F32 in the base/ });
});

test('a float tensor that is an integer tensor in harmful or in the base refused, naming that file', async (t) => {
  const fx = fixture(t, {}, { harmful: tinyModel(2, { [T1]: { dtype: 'I32' } }) });
  await expectRefused(t, fx, {}, { code: 'SA_MISMATCH', file: fx.files.harmful[0]!, tensor: T1, message: /I32 in the harmful model/ });
  const fx2 = fixture(t, {}, { base: tinyModel(1, { [T1]: { dtype: 'I32' } }) });
  await expectRefused(t, fx2, {}, { code: 'SA_MISMATCH', file: fx2.files.base[0]!, tensor: T1, message: /I32 in the base/ });
});

// ---------------------------------------------------------------------------------------------
// arguments

test('layers naming a nonexistent layer refused', async (t) => {
  const fx = fixture(t);
  await expectRefused(t, fx, { layers: [1, 7] }, { code: 'SA_INVALID_ARGUMENT', field: 'layers', message: new RegExp(`layer 7 does not exist in ${fx.target.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(it has layers 0-1\\)`) });
});

test('layers that are not layer indices refused', async (t) => {
  for (const layers of [[], [-1], [1.5], ['1'] as unknown as number[]]) {
    const fx = fixture(t);
    await expectRefused(t, fx, { layers }, { code: 'SA_INVALID_ARGUMENT', field: 'layers', message: /non-empty list of layer indices/ });
  }
});

test('topK out of range refused', async (t) => {
  for (const topK of [0, -5, 100.5, 1000, Number.NaN, Number.POSITIVE_INFINITY, '10' as unknown as number]) {
    const fx = fixture(t);
    await expectRefused(t, fx, { topK }, { code: 'SA_INVALID_ARGUMENT', field: 'topK', message: /give a percent in \(0, 100\]/ });
  }
});

test('topK at the bounds of its range is accepted', async (t) => {
  for (const topK of [100, 0.001]) {
    const fx = fixture(t);
    const s = await removeHarmDirection({ ...fx.options, topK });
    t.is(s.topK, topK);
  }
});

test('other bad options refused: mode, lambda, topK with task-vector, sizes, device name', async (t) => {
  const cases: [Partial<HdrOptions>, string][] = [
    [{ mode: 'trim' as HdrOptions['mode'] }, 'mode'],
    [{ lambda: Number.NaN }, 'lambda'],
    [{ mode: 'task-vector', topK: 10 }, 'topK'],
    [{ bufferSize: 'lots' }, 'bufferSize'],
    [{ maxShardSize: -1 }, 'maxShardSize'],
    [{ device: 'tpu' as HdrOptions['device'] }, 'device'],
  ];
  for (const [o, field] of cases) {
    const fx = fixture(t);
    await expectRefused(t, fx, o, { code: 'SA_INVALID_ARGUMENT', field });
  }
});

// ---------------------------------------------------------------------------------------------
// outputs

test('an existing out is refused without force, and replaced with force', async (t) => {
  const fx = fixture(t);
  fs.mkdirSync(fx.out);
  fs.writeFileSync(path.join(fx.out, 'old.txt'), 'keep me unless forced');
  await expectRefused(t, fx, {}, { code: 'SA_OUTPUT_EXISTS', file: fx.out, field: 'out', message: /already exists; pass --force/, outExisted: true });
  t.is(fs.readFileSync(path.join(fx.out, 'old.txt'), 'utf8'), 'keep me unless forced');

  await removeHarmDirection({ ...fx.options, force: true });
  t.false(fs.existsSync(path.join(fx.out, 'old.txt')), 'the old folder was replaced, not merged');
  t.true(fs.existsSync(path.join(fx.out, 'model.safetensors')));
  t.deepEqual(leftovers(fx.out), [], 'no partial or .old folder left');
});

test('an existing out file is refused without force, and replaced with force', async (t) => {
  const fx = fixture(t);
  fs.writeFileSync(fx.out, 'a file');
  await expectRefused(t, fx, {}, { code: 'SA_OUTPUT_EXISTS', file: fx.out, outExisted: true });
  t.is(fs.readFileSync(fx.out, 'utf8'), 'a file');
  await removeHarmDirection({ ...fx.options, force: true });
  t.true(fs.statSync(fx.out).isDirectory());
  t.deepEqual(leftovers(fx.out), []);
});

test('out inside an input folder refused', async (t) => {
  const fx = fixture(t);
  for (const dir of [fx.base, fx.harmful, fx.target]) {
    await expectRefused(t, fx, { out: path.join(dir, 'patched') }, { code: 'SA_OUTPUT_INSIDE_INPUT', file: path.join(dir, 'patched'), field: 'out', message: /is inside the (base|harmful|target) folder/ });
    await expectRefused(t, fx, { out: path.join(dir, 'a', 'b') }, { code: 'SA_OUTPUT_INSIDE_INPUT', field: 'out' });
  }
});

test('out inside an input folder reached through a symlink refused', async (t) => {
  const fx = fixture(t);
  const link = path.join(fx.root, 'link');
  fs.symlinkSync(fx.base, link);
  await expectRefused(t, fx, { out: path.join(link, 'patched') }, { code: 'SA_OUTPUT_INSIDE_INPUT', field: 'out' });
  t.false(fs.existsSync(path.join(fx.base, 'patched')));
});

test('out equal to an input folder refused, even with force', async (t) => {
  const fx = fixture(t);
  for (const dir of [fx.base, fx.harmful, fx.target]) {
    for (const force of [false, true]) {
      await expectRefused(t, fx, { out: dir, force }, { code: 'SA_OUTPUT_INSIDE_INPUT', file: dir, field: 'out', message: /inputs are never written to/, outExisted: true });
    }
  }
  await expectRefused(t, fx, { out: fx.target + path.sep + '.', force: true }, { code: 'SA_OUTPUT_INSIDE_INPUT', outExisted: true });
});

test('out containing an input refused, even with force', async (t) => {
  const fx = fixture(t);
  for (const force of [false, true]) {
    const err = await expectRefused(t, fx, { out: fx.root, force }, { code: 'SA_OUTPUT_INSIDE_INPUT', file: fx.root, field: 'out', message: /contains the (base|harmful|target).*would destroy an input/, outExisted: true });
    t.truthy(err);
  }
  t.true(fs.existsSync(fx.base) && fs.existsSync(fx.harmful) && fs.existsSync(fx.target));
});

test('out whose parent folder does not exist refused', async (t) => {
  const fx = fixture(t);
  const out = path.join(fx.root, 'missing', 'out');
  await expectRefused(t, fx, { out }, { code: 'SA_IO', file: out, field: 'out', message: /does not exist/ });
  t.false(fs.existsSync(path.join(fx.root, 'missing')));
});

test('saveHarmVector into an input folder refused', async (t) => {
  const fx = fixture(t);
  for (const dir of [fx.base, fx.harmful, fx.target]) {
    const hv = path.join(dir, 'harm.safetensors');
    await expectRefused(t, fx, { saveHarmVector: hv }, { code: 'SA_OUTPUT_INSIDE_INPUT', file: hv, field: 'saveHarmVector', message: /inputs are never written to/ });
  }
});

test('an existing saveHarmVector file is refused without force, and out is not left behind', async (t) => {
  const fx = fixture(t);
  const hv = path.join(fx.root, 'harm.safetensors');
  fs.writeFileSync(hv, 'old');
  await expectRefused(t, fx, { saveHarmVector: hv }, { code: 'SA_OUTPUT_EXISTS', file: hv, field: 'saveHarmVector' });
  t.is(fs.readFileSync(hv, 'utf8'), 'old');
});

// ---------------------------------------------------------------------------------------------
// device

(cudaAvailable ? test.skip : test)('device cuda without a usable GPU refused with the reason' + (cudaAvailable ? ' (a CUDA device is available here)' : ''), async (t) => {
  const fx = fixture(t);
  const reason = backends().find((b) => b.name === 'cuda')!.reason;
  t.true(reason.length > 0);
  const err = await expectRefused(t, fx, { device: 'cuda' }, { code: 'SA_DEVICE_UNAVAILABLE', field: 'device', message: /--device cpu/ });
  t.true(err?.message.includes(reason), `the message says why: ${err?.message}`);
});

// ---------------------------------------------------------------------------------------------
// harm vector files

async function withHarmVector(t: ExecutionContext): Promise<{ fx: Fixture; hv: string }> {
  const fx = fixture(t);
  const hv = path.join(fx.root, 'harm.safetensors');
  await removeHarmDirection({ ...fx.options, out: path.join(fx.root, 'first'), saveHarmVector: hv });
  return { fx, hv };
}

test('a harm vector applied to a target of another shape refused', async (t) => {
  const { fx, hv } = await withHarmVector(t);
  const other = path.join(fx.root, 'other');
  const file = writeCheckpoint(other, tinyModel(4, { [T0]: { shape: [6, 4] } }))[0]!;
  const err = await expectRefused(t, { ...fx, target: other }, { base: undefined, harmful: undefined, target: other, harmVector: hv }, {
    code: 'SA_MISMATCH', file: hv, tensor: T0, message: /has shape \[4,6\] for tensor .*made for another architecture/,
  });
  t.true(err?.message.includes(file), 'names the target file too');
  // the same harm vector on a target of the right shapes works
  const good = path.join(fx.root, 'good');
  writeCheckpoint(good, tinyModel(4));
  const s = await removeHarmDirection({ target: good, harmVector: hv, out: path.join(fx.root, 'good-out'), device: 'cpu' });
  t.true(s.kept > 0);
});

test('a harm vector covering a tensor the target lacks refused', async (t) => {
  const { fx, hv } = await withHarmVector(t);
  const other = path.join(fx.root, 'other');
  writeCheckpoint(other, tinyModel(4).filter((x) => x.name !== 'model.norm.weight'));
  await expectRefused(t, { ...fx, target: other }, { base: undefined, harmful: undefined, target: other, harmVector: hv }, {
    code: 'SA_MISMATCH', file: hv, tensor: 'model.norm.weight', message: /does not hold as a float tensor/,
  });
});

test('a harm vector combined with trimming options, or a file that is no harm vector, refused', async (t) => {
  const { fx, hv } = await withHarmVector(t);
  await expectRefused(t, fx, { base: undefined, harmful: undefined, harmVector: hv, topK: 5 }, { code: 'SA_INVALID_ARGUMENT', field: 'topK' });
  await expectRefused(t, fx, { harmVector: hv }, { code: 'SA_INVALID_ARGUMENT', field: 'harmVector' });
  await expectRefused(t, fx, { base: undefined, harmful: undefined, harmVector: fx.files.base[0]! }, {
    code: 'SA_BAD_CHECKPOINT', file: fx.files.base[0]!, message: /not a harm vector .*--save-harm-vector/,
  });
});

// ---------------------------------------------------------------------------------------------
// aborting

test('an AbortSignal already aborted rejects with ABORT_ERR and leaves nothing', async (t) => {
  const fx = fixture(t);
  await expectRefused(t, fx, { signal: AbortSignal.abort(), saveHarmVector: path.join(fx.root, 'hv.safetensors') }, { code: 'ABORT_ERR' });
});

// Serial (AVA runs serial tests first, one at a time): the event loop must be free to see progress early.
test.serial('aborting during the run rejects with ABORT_ERR and leaves nothing', async (t) => {
  const root = tmpDir('sa-abort-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const base = path.join(root, 'base'), harmful = path.join(root, 'harmful');
  writeLargeF32Checkpoint(base, 48 << 20, 1);
  writeLargeF32Checkpoint(harmful, 48 << 20, 2);
  const fx: Fixture = {
    root, base, harmful, target: base, out: path.join(root, 'out'), files: { base: [], harmful: [], target: [] },
    options: { base, harmful, target: base, out: path.join(root, 'out'), device: 'cpu', bufferSize: '1MB' },
  };
  const controller = new AbortController();
  let first: { phase: string; doneBytes: number; totalBytes: number } | undefined;
  await expectRefused(t, fx, {
    signal: controller.signal,
    saveHarmVector: path.join(root, 'hv.safetensors'),
    onProgress: (p) => {
      if (!first) first = p;
      controller.abort();
    },
  }, { code: 'ABORT_ERR', message: /aborted/ });
  t.truthy(first, 'progress was reported before the abort');
  t.log(`aborted at ${first?.phase} ${first?.doneBytes} of ${first?.totalBytes} bytes`);
  t.true(first!.doneBytes < first!.totalBytes, 'aborted in the middle of the run');
});

// ---------------------------------------------------------------------------------------------
// the CLI

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], onSpawn?: (child: ReturnType<typeof spawn>) => void): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SAFETY_ARITHMETIC_DEVICE: 'cpu' } });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    onSpawn?.(child);
  });
}

test('CLI: a bad input exits 1 with a message naming the file; nothing is written', async (t) => {
  const fx = fixture(t);
  const file = fx.files.harmful[0]!;
  writeRawSafetensors(file, { [T0]: entry('F32', [2, 2], [0, 12]) }, Buffer.alloc(16));
  const r = await runCli(['hdr', '--base', fx.base, '--harmful', fx.harmful, '--target', fx.target, '--out', fx.out]);
  t.is(r.code, 1, r.stderr);
  t.true(r.stderr.includes(file), r.stderr);
  t.true(r.stderr.includes(T0), r.stderr);
  t.regex(r.stderr, /SA_BAD_CHECKPOINT/);
  t.false(fs.existsSync(fx.out));
  t.deepEqual(leftovers(fx.out), []);
});

test('CLI: refusals of outputs exit 1', async (t) => {
  const fx = fixture(t);
  const r1 = await runCli(['hdr', '--base', fx.base, '--harmful', fx.harmful, '--target', fx.target, '--out', path.join(fx.target, 'x')]);
  t.is(r1.code, 1);
  t.regex(r1.stderr, /SA_OUTPUT_INSIDE_INPUT/);
  fs.mkdirSync(fx.out);
  const r2 = await runCli(['hdr', '--base', fx.base, '--harmful', fx.harmful, '--target', fx.target, '--out', fx.out]);
  t.is(r2.code, 1);
  t.regex(r2.stderr, /SA_OUTPUT_EXISTS.*--force/);
  const r3 = await runCli(['hdr', '--base', fx.base, '--harmful', fx.harmful, '--target', fx.target, '--out', fx.out, '--force']);
  t.is(r3.code, 0, r3.stderr);
  t.true(fs.existsSync(path.join(fx.out, 'model.safetensors')));
});

test('CLI: usage errors exit 2', async (t) => {
  const fx = fixture(t);
  const common = ['--base', fx.base, '--harmful', fx.harmful, '--target', fx.target];
  const cases: [string[], RegExp][] = [
    [['hdr', ...common], /hdr needs --out/],
    [['hdr', '--target', fx.target, '--out', fx.out], /needs --base and --harmful/],
    [['hdr', ...common, '--out', fx.out, '--bogus'], /bogus/],
    [['hdr', ...common, '--out', fx.out, '--top-k', 'ten'], /--top-k expects a number/],
    [['hdr', ...common, '--out', fx.out, '--layers', 'a,b'], /--layers expects layer indices/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
    t.regex(r.stderr, /--help/);
  }
  const none = await runCli([]);
  t.is(none.code, 2);
  t.regex(none.stdout, /Commands:/);
  t.false(fs.existsSync(fx.out));
  t.deepEqual(leftovers(fx.out), []);
});

test.serial('CLI: SIGINT during a run exits 130 and leaves no output or partial folder', async (t) => {
  const root = tmpDir('sa-sigint-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const base = path.join(root, 'base'), harmful = path.join(root, 'harmful'), out = path.join(root, 'out');
  writeLargeF32Checkpoint(base, 100 << 20, 1);
  writeLargeF32Checkpoint(harmful, 100 << 20, 2);
  const hv = path.join(root, 'hv.safetensors');
  let sentAt = 0, startedAt = 0;
  let sawPartial = false;
  const r = await runCli(
    ['hdr', '--base', base, '--harmful', harmful, '--target', base, '--out', out, '--buffer-size', '8MB', '--save-harm-vector', hv, '--device', 'cpu'],
    (child) => {
      startedAt = Date.now();
      // The staging folder appears once validation is done and the work begins (the signal handler
      // is installed before): interrupt then. A loaded machine may take seconds to get there.
      const poll = () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        sawPartial = leftovers(out).length > 0;
        if (sawPartial || Date.now() - startedAt > 60_000) {
          // A little after the staging folder appears, so that the native job is under way.
          setTimeout(() => {
            sentAt = Date.now();
            child.kill('SIGINT');
          }, sawPartial ? 30 : 0);
        } else {
          setTimeout(poll, 2);
        }
      };
      setTimeout(poll, 2);
    },
  );
  t.log(`SIGINT sent ${sentAt ? sentAt - startedAt : 'never'} ms after start (staging folder seen: ${sawPartial}), exit ${r.code ?? r.signal} after ${Date.now() - sentAt} ms`);
  t.true(sentAt > 0, 'the signal was sent before the run ended');
  t.is(r.code, 130, r.stderr);
  t.regex(r.stderr, /ABORT_ERR|aborted/);
  t.false(fs.existsSync(out), 'no output');
  t.false(fs.existsSync(hv), 'no harm vector');
  t.deepEqual(leftovers(out), [], 'no partial output folder');
  t.deepEqual(leftovers(hv), [], 'no partial harm vector');
  t.deepEqual(fs.readdirSync(root).sort(), ['base', 'harmful']);
});
