/**
 * One list of error codes for both sides (csrc/common/error_codes.def -> lib/error-codes.ts), and
 * native errors that arrive as SafetyArithmeticError with their code, file, tensor, field and cause.
 */
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ERROR_CODES, SafetyArithmeticError, fromNative, isErrorCode } from '../lib/errors';
import { removeHarmDirection } from '../lib/hdr';
import { native } from '../lib/native';
import { tinyModel, tmpDir, writeCheckpoint } from './helpers/checkpoints';

const ROOT = path.join(__dirname, '..', '..');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const generator = require(path.join(ROOT, 'scripts', 'gen-error-codes.js')) as { generate(): string; OUT: string };

/** Every C++ and CUDA source file under csrc. */
function nativeSources(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(h|cpp|cu|cuh)$/.test(e.name)) out.push(p);
    }
  };
  walk(path.join(ROOT, 'csrc'));
  return out;
}

test('lib/error-codes.ts is up to date with csrc/common/error_codes.def', (t) => {
  t.is(fs.readFileSync(generator.OUT, 'utf8'), generator.generate(), 'run: node scripts/gen-error-codes.js');
});

test('the addon was built with the same list of codes as the TypeScript side', (t) => {
  t.deepEqual(native().errorCodes(), [...ERROR_CODES]);
});

test('the C++ side names codes only through the list: every ErrorCode:: it uses is listed, and no code is spelled as a string', (t) => {
  const known = new Set<string>(ERROR_CODES);
  let uses = 0;
  for (const file of nativeSources()) {
    const text = fs.readFileSync(file, 'utf8');
    for (const m of text.matchAll(/ErrorCode::([A-Z][A-Z0-9_]*)/g)) {
      uses++;
      t.true(known.has(m[1]!), `${path.relative(ROOT, file)} uses ErrorCode::${m[1]}, which is not in the list`);
    }
    const spelled = [...text.matchAll(/"(SA_[A-Z0-9_]+|ABORT_ERR)"/g)].map((m) => m[1]);
    t.deepEqual(spelled, [], `${path.relative(ROOT, file)} spells error codes as strings`);
  }
  t.true(uses > 10, `the native code throws with codes (${uses} uses)`);
});

test('fromNative keeps the code, file, tensor, field and the original error as cause', (t) => {
  const original = Object.assign(new Error('tensor "w" is bad'), { code: 'SA_BAD_CHECKPOINT', file: '/m/model.safetensors', tensor: 'w', field: 'lambda' });
  const err = fromNative(original);
  t.true(err instanceof SafetyArithmeticError);
  t.is(err.code, 'SA_BAD_CHECKPOINT');
  t.is(err.message, 'tensor "w" is bad');
  t.is(err.file, '/m/model.safetensors');
  t.is(err.tensor, 'w');
  t.is(err.field, 'lambda');
  t.is(err.cause, original);
  t.is(err.name, 'SafetyArithmeticError');

  const abort = fromNative(Object.assign(new Error('the operation was aborted'), { code: 'ABORT_ERR' }));
  t.is(abort.code, 'ABORT_ERR');
  t.is(abort.name, 'AbortError');
  t.is(abort.file, undefined);

  const already = new SafetyArithmeticError('SA_IO', 'x', { file: 'f' });
  t.is(fromNative(already), already, 'a SafetyArithmeticError passes through');
});

test('fromNative turns an unknown or missing code into SA_NATIVE, naming the original code', (t) => {
  const unknown = Object.assign(new Error('something odd'), { code: 'ERR_SOMETHING' });
  const err = fromNative(unknown);
  t.is(err.code, 'SA_NATIVE');
  t.regex(err.message, /something odd/);
  t.regex(err.message, /ERR_SOMETHING/);
  t.is(err.cause, unknown);

  const plain = fromNative(new TypeError('bad call'));
  t.is(plain.code, 'SA_NATIVE');
  t.is(plain.message, 'bad call');

  const notAnError = fromNative('a string');
  t.is(notAnError.code, 'SA_NATIVE');
  t.is(notAnError.message, 'a string');
  t.false(isErrorCode('ERR_SOMETHING'));
  t.true(isErrorCode('SA_IO'));
});

test('a real native failure arrives with its code, file and tensor: a NaN in an HDR input', async (t) => {
  const root = tmpDir('sa-errors-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const T = 'model.layers.1.mlp.down_proj.weight';
  const harmful = tinyModel(2);
  harmful.find((x) => x.name === T)!.bytes.writeFloatLE(Number.NaN, 4 * 5);
  const base = path.join(root, 'base'), harm = path.join(root, 'harmful'), target = path.join(root, 'target');
  writeCheckpoint(base, tinyModel(1));
  const [harmfulFile] = writeCheckpoint(harm, harmful);
  writeCheckpoint(target, tinyModel(3));
  const err = await t.throwsAsync<SafetyArithmeticError>(() => removeHarmDirection({ base, harmful: harm, target, out: path.join(root, 'out'), device: 'cpu' }), { instanceOf: SafetyArithmeticError });
  t.is(err?.code, 'SA_BAD_CHECKPOINT');
  t.is(err?.file, harmfulFile);
  t.is(err?.tensor, T);
  t.true(err?.message.includes(harmfulFile!) && err.message.includes(T), err?.message);
  const cause = err?.cause as { code?: string; file?: string; tensor?: string } | undefined;
  t.is(cause?.code, 'SA_BAD_CHECKPOINT', 'the native error is kept as cause');
  t.is(cause?.file, harmfulFile);
  t.is(cause?.tensor, T);
});

test('a synchronous native error carries its code and field too', (t) => {
  const x = new Float32Array(4).fill(1);
  const err = t.throws(() => native().steerRows(x, 4, Float32Array.of(1, Number.NaN, 0, 0), Float32Array.of(1)));
  const e = fromNative(err);
  t.is(e.code, 'SA_INVALID_ARGUMENT');
  t.is(e.field, 'vectors');
  t.deepEqual([...x], [1, 1, 1, 1], 'x is left as it was');
});
