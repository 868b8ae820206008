/** Export of an ICV as a llama.cpp control vector GGUF. */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { exportControlVector } from '../lib/export';
import { readControlVectorGguf, writeControlVectorGguf } from '../lib/gguf';
import { computeIcv, readDemos } from '../lib/icv';
import { LanguageModel } from '../lib/model/model';

const TOY = path.join(__dirname, '..', '..', 'demo', 'toy-demo');

test('GGUF control vectors round-trip with the llama.cpp keys, 32-byte alignment and blocks >= 1', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-gguf-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'cv.gguf');
  const d1 = Float32Array.from({ length: 7 }, (_, i) => i / 7), d3 = Float32Array.from({ length: 7 }, (_, i) => -i);
  writeControlVectorGguf(file, { modelHint: 'llama', layerCount: 3, directions: new Map([[1, d1], [3, d3]]) });
  const b = fs.readFileSync(file);
  t.is(b.toString('ascii', 0, 4), 'GGUF');
  t.is(b.readUInt32LE(4), 3);
  const back = readControlVectorGguf(file);
  t.is(back.modelHint, 'llama');
  t.is(back.layerCount, 3);
  t.is(back.nEmbd, 7);
  t.deepEqual(Array.from(back.directions.get(1)!), Array.from(d1));
  t.deepEqual(Array.from(back.directions.get(3)!), Array.from(d3));
  t.throws(() => writeControlVectorGguf(file, { modelHint: 'llama', layerCount: 3, directions: new Map([[0, d1]]) }), { message: /blocks 1 and up/ });
});

test('the exported control vector is the mean change of Safety Alignment, pointing away from the ICV', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-gguf-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const m = await LanguageModel.load(path.join(TOY, 'sft'));
  t.teardown(() => m.dispose());
  const demos = readDemos(path.join(TOY, 'demos.jsonl'));
  const icv = await computeIcv(m, demos);
  const file = path.join(dir, 'cv.gguf');
  const r = await exportControlVector(m, icv, demos.slice(0, 4), file, 1);
  t.deepEqual(r.blocks, [1, 2, 3]);
  t.deepEqual(r.dropped, [0]);
  const cv = readControlVectorGguf(file);
  t.is(cv.layerCount, m.config.numLayers - 1);
  t.is(cv.nEmbd, m.config.hiddenSize);
  t.is(cv.metadata!.alpha, '1');
  const H = m.config.hiddenSize;
  for (const k of r.blocks) {
    const d = cv.directions.get(k)!;
    const v = icv.vectors.subarray(k * H, (k + 1) * H);
    let dot = 0;
    for (let j = 0; j < H; j++) dot += d[j]! * v[j]!;
    t.true(dot < 0, `block ${k}: the change points against the ICV (dot ${dot})`);
    t.true(r.agreement[k]! > 0.5, `block ${k}: agreement ${r.agreement[k]}`);
  }
});
