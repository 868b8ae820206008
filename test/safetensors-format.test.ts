/**
 * The safetensors format held to its own rules: strict JSON (no repeated keys; tensor names such as
 * "__proto__" are ordinary names), data covered exactly by the tensors, regular files only, and
 * harm-vector metadata read strictly. Each refusal names the file and the tensor or key, leaves the
 * inputs as they were and writes nothing.
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { openCheckpoint } from '../lib/checkpoint/checkpoint';
import { readSafetensorsHeader, renderHeader } from '../lib/checkpoint/safetensors';
import { parseStrictJson } from '../lib/checkpoint/strict-json';
import { SafetyArithmeticError, type ErrorCode } from '../lib/errors';
import { removeHarmDirection, type HdrOptions } from '../lib/hdr';
import { f32Bytes, hdrFixture, leftovers, snapshotTree, tinyModel, tmpDir, values, writeRawSafetensors, type HdrFixture, type TensorSpec } from './helpers/checkpoints';
import { loadCheckpointTensors } from './helpers/safetensors';

type Fixture = HdrFixture;

/** The HDR fixture, with harmful in `harmfulShards` shards and every model made by `model(seed)`. */
function fixture(t: ExecutionContext, harmfulShards = 1, model: (seed: number) => TensorSpec[] = tinyModel): Fixture {
  return hdrFixture(t, { harmful: harmfulShards }, { base: model(1), harmful: model(2), target: model(3) });
}

interface Expected {
  code: ErrorCode;
  file: string;
  tensor?: string;
  message: RegExp;
}

/** Runs removeHarmDirection, expects the refusal described, and checks that nothing changed or was written. */
async function expectRefused(t: ExecutionContext, fx: Fixture, overrides: Partial<HdrOptions>, e: Expected): Promise<void> {
  const options = { ...fx.options, ...overrides };
  const inputs = [fx.base, fx.harmful, fx.target, ...(options.harmVector ? [options.harmVector] : [])];
  const before = inputs.map((d) => snapshotTree(d));
  const err = await t.throwsAsync<SafetyArithmeticError>(() => removeHarmDirection(options), { instanceOf: SafetyArithmeticError });
  if (!err) return;
  t.is(err.code, e.code, `code of: ${err.message}`);
  t.is(err.file, e.file, `err.file of: ${err.message}`);
  t.true(err.message.includes(e.file), `the message names ${e.file}: ${err.message}`);
  if (e.tensor !== undefined) {
    t.is(err.tensor, e.tensor, `err.tensor of: ${err.message}`);
    t.true(err.message.includes(`"${e.tensor}"`), `the message names "${e.tensor}": ${err.message}`);
  }
  t.regex(err.message, e.message);
  t.false(fs.existsSync(options.out), 'no output folder');
  t.deepEqual(leftovers(options.out), [], 'no partial output beside out');
  inputs.forEach((d, i) => t.deepEqual(snapshotTree(d), before[i], `input ${d} unchanged`));
}

const T0 = 'model.layers.0.mlp.down_proj.weight';
const T1 = 'model.layers.1.mlp.down_proj.weight';
const entry = (shape: number[], offsets: [number, number]) => ({ dtype: 'F32', shape, data_offsets: offsets });

// ---------------------------------------------------------------------------------------------
// strict JSON

test('a key repeated in a header is refused, naming the key', async (t) => {
  const fx = fixture(t);
  const file = fx.files.harmful[0]!;
  const one = JSON.stringify(entry([4], [0, 16]));
  writeRawSafetensors(file, `{"${T0}":${one},"${T1}":${JSON.stringify(entry([4], [16, 32]))},"${T0}":${one}}`, f32Bytes(values(8, 1)));
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, tensor: T0, message: /duplicate key "model\.layers\.0\.mlp\.down_proj\.weight" in the header.*re-download/ });
});

test('a key repeated inside a tensor entry is refused, naming the key and the tensor', async (t) => {
  const fx = fixture(t);
  const file = fx.files.harmful[0]!;
  writeRawSafetensors(file, `{"${T0}":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"dtype":"F16"}}`, f32Bytes(values(4, 1)));
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, tensor: T0, message: /duplicate key "dtype" in the header \(inside "model\.layers\.0\.mlp\.down_proj\.weight"\)/ });
});

test('a key repeated in the index weight_map is refused, naming the index and the tensor', async (t) => {
  const fx = fixture(t, 3);
  const index = path.join(fx.harmful, 'model.safetensors.index.json');
  const text = fs.readFileSync(index, 'utf8');
  const json = JSON.parse(text) as { weight_map: Record<string, string> };
  const shard = json.weight_map['model.norm.weight']!;
  fs.writeFileSync(index, text.replace('"weight_map": {', `"weight_map": {\n    "model.norm.weight": "${shard}",`));
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file: index, tensor: 'model.norm.weight', message: /duplicate key "model\.norm\.weight" in the index \(inside "weight_map"\).*re-download or re-export/ });
});

test('the strict parser keeps "__proto__" and "constructor" as ordinary keys, and parses like JSON.parse otherwise', (t) => {
  const v = parseStrictJson('{"__proto__":{"dtype":"F32"},"constructor":[1,2],"toString":"x","a\\"b":[{"c":null}]}') as Record<string, unknown>;
  t.is(Object.getPrototypeOf(v), null);
  t.deepEqual(Object.keys(v), ['__proto__', 'constructor', 'toString', 'a"b']);
  t.is(Object.getPrototypeOf(v['__proto__']), null);
  t.is((v['__proto__'] as Record<string, unknown>).dtype, 'F32');
  for (const text of ['[1,-2.5e3,true,false,null,"\\u00e9\\n"]', '{"a":{"a":{"a":1}},"b":{"a":2}}', '"\\\\"', ' {} '])
    t.is(JSON.stringify(parseStrictJson(text)), JSON.stringify(JSON.parse(text)), text);
  for (const text of ['[01]', '{"a":1,}', "{'a':1}", '{"a":1}x', '\ufeff{}', '{"a":1,"b":{"c":2,"c":3}}'])
    t.throws(() => parseStrictJson(text), undefined, text);
});

test('tensors named "__proto__", "constructor" and "toString" go through HDR and are all written', async (t) => {
  const withOddNames = (seed: number): TensorSpec[] => [
    ...tinyModel(seed),
    ...['__proto__', 'constructor', 'toString'].map((name, k) => ({ name, dtype: 'F32', shape: [2, 3], bytes: f32Bytes(values(6, seed * 7 + k)) })),
  ];
  const fx = fixture(t, 1, withOddNames);
  const inputs = [fx.base, fx.harmful, fx.target].map((d) => snapshotTree(d));
  const names = withOddNames(3).map((s) => s.name).sort();
  t.deepEqual(readSafetensorsHeader(fx.files.target[0]!).tensors.map((x) => x.name).sort(), names);

  // Re-sharded, so that the names are also keys of the output index's weight_map, and saving a harm vector.
  const hv = path.join(fx.root, 'hv.safetensors');
  await removeHarmDirection({ ...fx.options, maxShardSize: 200, saveHarmVector: hv });
  const shards = fs.readdirSync(fx.out).filter((f) => f.endsWith('.safetensors'));
  t.true(shards.length > 1, 'the output is sharded');
  const written = loadCheckpointTensors(fx.out);
  t.is(written.size, names.length, 'every tensor is written');
  t.deepEqual([...written.keys()].sort(), names);
  const reopened = openCheckpoint(fx.out);
  t.deepEqual(reopened.tensors.map((x) => x.name).sort(), names, 'the output index lists every tensor');
  t.true(reopened.byName.has('__proto__'));

  // The harm vector lists them too, and patches the target with them.
  const out2 = path.join(fx.root, 'out2');
  await removeHarmDirection({ target: fx.target, harmVector: hv, out: out2, device: 'cpu' });
  const again = loadCheckpointTensors(out2);
  t.deepEqual([...again.keys()].sort(), names);
  for (const name of names) t.deepEqual(again.get(name)!.bytes, written.get(name)!.bytes, `${name}: the harm vector gives the same result`);
  t.deepEqual([fx.base, fx.harmful, fx.target].map((d) => snapshotTree(d)), inputs, 'inputs untouched');
});

// ---------------------------------------------------------------------------------------------
// the data section is covered exactly by the tensors

test('a gap between tensors is refused, naming the tensor after it and the bytes', async (t) => {
  const fx = fixture(t);
  const file = fx.files.harmful[0]!;
  writeRawSafetensors(file, { [T0]: entry([4], [0, 16]), [T1]: entry([4], [24, 40]) }, Buffer.alloc(40));
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, tensor: T1, message: /8 bytes \(16-24 of the data section\) lie between tensors "model\.layers\.0\.mlp\.down_proj\.weight" and .*belong to no tensor.*re-download/ });
});

test('trailing bytes after the last tensor are refused, naming that tensor', async (t) => {
  const fx = fixture(t);
  const file = fx.files.harmful[0]!;
  writeRawSafetensors(file, { [T0]: entry([4], [0, 16]), [T1]: entry([4], [16, 32]) }, Buffer.alloc(36));
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, tensor: T1, message: /after the last tensor "model\.layers\.1\.mlp\.down_proj\.weight" the file has 4 more bytes \(32-36/ });
});

test('data that does not start at byte 0 is refused, naming the first tensor', async (t) => {
  const fx = fixture(t);
  const file = fx.files.harmful[0]!;
  writeRawSafetensors(file, { [T0]: entry([4], [8, 24]), [T1]: entry([4], [24, 40]) }, Buffer.alloc(40));
  await expectRefused(t, fx, {}, { code: 'SA_BAD_CHECKPOINT', file, tensor: T0, message: /the data section starts with 8 bytes \(0-8\) before the first tensor "model\.layers\.0\.mlp\.down_proj\.weight"/ });
});

test('an empty tensor inside another tensor\'s bytes is refused; empty tensors at the boundaries are fine', (t) => {
  const root = tmpDir('sa-format-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const file = path.join(root, 'x.safetensors');
  writeRawSafetensors(file, { a: entry([4], [0, 16]), b: entry([0], [8, 8]) }, Buffer.alloc(16));
  const err = t.throws<SafetyArithmeticError>(() => readSafetensorsHeader(file), { instanceOf: SafetyArithmeticError });
  t.is(err?.code, 'SA_BAD_CHECKPOINT');
  t.is(err?.tensor, 'b');
  writeRawSafetensors(file, { e0: entry([0], [0, 0]), a: entry([4], [0, 16]), e1: entry([2, 0], [16, 16]), b: entry([1], [16, 20]), e2: entry([0], [20, 20]) }, Buffer.alloc(20));
  t.deepEqual(readSafetensorsHeader(file).tensors.map((x) => x.name).sort(), ['a', 'b', 'e0', 'e1', 'e2']);
  writeRawSafetensors(file, {}, Buffer.alloc(0));
  t.deepEqual(readSafetensorsHeader(file).tensors, []);
  writeRawSafetensors(file, {}, Buffer.alloc(3));
  t.throws(() => readSafetensorsHeader(file), { instanceOf: SafetyArithmeticError, message: /the header lists no tensors but the file has 3 more bytes/ });
});

test('a header that is not valid UTF-8 is refused', (t) => {
  const root = tmpDir('sa-format-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const file = path.join(root, 'x.safetensors');
  const text = Buffer.concat([Buffer.from('{"a'), Buffer.from([0xff, 0xfe]), Buffer.from('":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}')]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  fs.writeFileSync(file, Buffer.concat([len, text, Buffer.alloc(4)]));
  t.throws(() => readSafetensorsHeader(file), { instanceOf: SafetyArithmeticError, message: /not valid UTF-8/ });
});

// ---------------------------------------------------------------------------------------------
// regular files only

/** Hashes of the regular files under dir, and the kind of anything else (reading a FIFO would block). */
function snapshotWithoutReading(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of fs.readdirSync(dir)) {
    const p = path.join(dir, name);
    const st = fs.lstatSync(p);
    out[name] = st.isFile() ? JSON.stringify(snapshotTree(p)) : st.isFIFO() ? 'fifo' : 'other';
  }
  return out;
}

test('a FIFO as model.safetensors is refused without blocking', (t) => {
  const fx = fixture(t);
  const file = fx.files.harmful[0]!;
  fs.rmSync(file);
  const made = spawnSync('mkfifo', [file]);
  if (made.error || made.status !== 0) {
    t.log('mkfifo is not available here; the FIFO case is not checked');
    t.pass();
    return;
  }
  const before = [fx.base, fx.harmful, fx.target].map(snapshotWithoutReading);
  // In a child process, so that a regression (a blocking open) fails this test instead of hanging the run.
  const script = `require(${JSON.stringify(path.join(__dirname, '..', 'lib', 'hdr.js'))}).removeHarmDirection(${JSON.stringify(fx.options)})
    .then(() => console.log(JSON.stringify({ ok: true })), (e) => console.log(JSON.stringify({ code: e.code, file: e.file, message: e.message })));`;
  const run = spawnSync(process.execPath, ['-e', script], { timeout: 20_000, encoding: 'utf8' });
  t.falsy(run.error, 'the run ended by itself (it did not block on the FIFO)');
  const result = JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}') as { code?: string; file?: string; message?: string };
  t.is(result.code, 'SA_IO', run.stdout + run.stderr);
  t.is(result.file, file);
  t.true(result.message?.includes(file), result.message);
  t.regex(result.message ?? '', /named pipe \(FIFO\), not a regular file; pass a regular file/);
  t.false(fs.existsSync(fx.out), 'no output folder');
  t.deepEqual(leftovers(fx.out), [], 'no partial output beside out');
  t.deepEqual([fx.base, fx.harmful, fx.target].map(snapshotWithoutReading), before, 'inputs unchanged');
});

test('a shard that is a directory is refused with SA_IO naming it', async (t) => {
  const fx = fixture(t, 3);
  const shard = fx.files.harmful[1]!;
  fs.rmSync(shard);
  fs.mkdirSync(shard);
  await expectRefused(t, fx, {}, { code: 'SA_IO', file: shard, message: /is a folder, not a regular file; pass a regular file/ });
});

// ---------------------------------------------------------------------------------------------
// harm-vector metadata

/** Rewrites a safetensors file's __metadata__ (the tensors and their bytes stay as they are). */
function rewriteMetadata(file: string, change: (m: Record<string, string>) => void): void {
  const h = readSafetensorsHeader(file);
  const data = fs.readFileSync(file);
  const metadata = { ...h.metadata };
  change(metadata);
  const { header } = renderHeader(h.tensors.map((x) => ({ name: x.name, dtype: x.dtype, shape: x.shape, nbytes: x.nbytes })), metadata);
  fs.writeFileSync(file, Buffer.concat([header, data.subarray(8 + h.headerBytes)]));
}

for (const [title, lambda] of [['an empty', ''], ['a blank', '  '], ['a hexadecimal', '0x10']] as const) {
  test(`a harm vector with ${title} lambda is refused`, async (t) => {
    const fx = fixture(t);
    const hv = path.join(fx.root, 'hv.safetensors');
    await removeHarmDirection({ ...fx.options, out: path.join(fx.root, 'first'), saveHarmVector: hv });
    rewriteMetadata(hv, (m) => (m.lambda = lambda));
    t.is(readSafetensorsHeader(hv).metadata.lambda, lambda);
    await expectRefused(t, fx, { base: undefined, harmful: undefined, harmVector: hv }, { code: 'SA_BAD_CHECKPOINT', file: hv, message: /__metadata__\.lambda is .*not a finite number.*--save-harm-vector/ });
  });
}

test('a harm vector whose tensor list repeats a name or gives a bad shape is refused', async (t) => {
  const fx = fixture(t);
  const hv = path.join(fx.root, 'hv.safetensors');
  await removeHarmDirection({ ...fx.options, out: path.join(fx.root, 'first'), saveHarmVector: hv });
  const original = readSafetensorsHeader(hv).metadata.tensors!;
  rewriteMetadata(hv, (m) => (m.tensors = original.replace('{', `{"${T0}":[4,6],`)));
  await expectRefused(t, fx, { base: undefined, harmful: undefined, harmVector: hv }, { code: 'SA_BAD_CHECKPOINT', file: hv, tensor: T0, message: /duplicate key "model\.layers\.0\.mlp\.down_proj\.weight" in __metadata__\.tensors/ });
  rewriteMetadata(hv, (m) => (m.tensors = JSON.stringify({ ...JSON.parse(original), [T0]: [4, -6] })));
  await expectRefused(t, fx, { base: undefined, harmful: undefined, harmVector: hv }, { code: 'SA_BAD_CHECKPOINT', file: hv, tensor: T0, message: /shape \[4,-6\], not a list of non-negative integers/ });
});
