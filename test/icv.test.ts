/** Safety Alignment against the golden suite: ICV extraction, steered logits and tokens, the pipeline. */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { align } from '../lib/align';
import { backends } from '../lib/device';
import { computeIcv, loadIcv, saveIcv, checkIcvFits, type DemoPair } from '../lib/icv';
import { LanguageModel } from '../lib/model/model';
import { steerActivations, steerWithIcv } from '../lib/steering';
import { maxRelativeError } from './helpers/compare';
import { loadTensors, toFloat32 } from './helpers/safetensors';

const G = path.join(__dirname, '..', '..', 'test', 'fixtures', 'llama-tiny');
const manifest = JSON.parse(fs.readFileSync(path.join(G, 'manifest.json'), 'utf8')) as {
  edit_layers: number[];
  forward: { sequences: number[][] };
  icv: { demos: DemoPair[]; steered_greedy: { alpha: number; seq: number; greedy: number[] }[] };
  pipeline: { hdr_case: string; alpha: number; greedy: { seq: number; greedy: number[] }[] };
};
const ref = loadTensors(path.join(G, 'icv.safetensors'));
const seqs = manifest.forward.sequences;
const cudaAvailable = backends().some((b) => b.name === 'cuda' && b.available);

function perLayer(ours: Float32Array, expected: Float32Array, hidden: number): { cos: number; normErr: number }[] {
  const out = [];
  for (let l = 0; l < expected.length / hidden; l++) {
    let d = 0, a2 = 0, b2 = 0;
    for (let j = 0; j < hidden; j++) {
      const a = ours[l * hidden + j]!, b = expected[l * hidden + j]!;
      d += a * b; a2 += a * a; b2 += b * b;
    }
    out.push({ cos: d / Math.sqrt(a2 * b2), normErr: Math.abs(Math.sqrt(a2) - Math.sqrt(b2)) / Math.sqrt(b2) });
  }
  return out;
}

for (const device of ['cpu', 'cuda'] as const) {
  const run = device === 'cpu' || cudaAvailable ? test : test.skip;
  const note = device === 'cuda' && !cudaAvailable ? ' (no usable CUDA device)' : '';

  run(`${device}: icv.all_layers and icv.edit_layers match the reference (cosine >= 0.9999, norm within 1e-4)${note}`, async (t) => {
    const m = await LanguageModel.load(path.join(G, 'model'), { device, weights: 'float32' });
    t.teardown(() => m.dispose());
    for (const [name, layers] of [['icv.all_layers', undefined], ['icv.edit_layers', manifest.edit_layers]] as const) {
      const icv = await computeIcv(m, manifest.icv.demos, layers ? { layers: [...layers] } : {});
      t.deepEqual(icv.layers, layers ? [...layers] : [0, 1, 2, 3]);
      for (const [l, s] of perLayer(icv.vectors, toFloat32(ref.get(name)!), m.config.hiddenSize).entries()) {
        t.true(s.cos >= 0.9999, `${name} layer ${l}: cosine ${s.cos}`);
        t.true(s.normErr <= 1e-4, `${name} layer ${l}: norm error ${s.normErr}`);
      }
    }
  });

  run(`${device}: steered logits (alpha 0.12, 1.0, edit layers) within 1e-4 and steered greedy tokens identical${note}`, async (t) => {
    const m = await LanguageModel.load(path.join(G, 'model'), { device, weights: 'float32' });
    t.teardown(() => m.dispose());
    const all = m.addSteeringVector([0, 1, 2, 3], toFloat32(ref.get('icv.all_layers')!));
    const edit = m.addSteeringVector(manifest.edit_layers, toFloat32(ref.get('icv.edit_layers')!));
    for (const [name, vector, alpha] of [['alpha0.12', all, 0.12], ['alpha1.0', all, 1.0], ['edit.alpha1.0', edit, 1.0]] as const) {
      const res = await m.forward(seqs, { steer: [{ vector, alpha }] });
      res.forEach((r, i) => {
        const err = maxRelativeError(r.logits, toFloat32(ref.get(`${name}.seq${i}.logits`)!));
        t.true(err <= 1e-4, `${name} seq${i}: ${err}`);
      });
    }
    for (const g of manifest.icv.steered_greedy) {
      const out = await m.generateText(seqs[g.seq]!, { maxNewTokens: 12, ignoreEos: true, steer: [{ vector: all, alpha: g.alpha }] });
      t.deepEqual(out.tokens, g.greedy, `alpha ${g.alpha} seq ${g.seq}`);
    }
  });

  run(`${device}: alpha 0 equals the unsteered model bit for bit${note}`, async (t) => {
    const m = await LanguageModel.load(path.join(G, 'model'), { device, weights: 'float32' });
    t.teardown(() => m.dispose());
    const all = m.addSteeringVector([0, 1, 2, 3], toFloat32(ref.get('icv.all_layers')!));
    const plain = await m.forward(seqs, { capture: ['layer_out'] });
    const zero = await m.forward(seqs, { capture: ['layer_out'], steer: [{ vector: all, alpha: 0 }] });
    plain.forEach((p, i) => {
      t.true(Buffer.from(p.logits.buffer).equals(Buffer.from(zero[i]!.logits.buffer)), `seq${i} logits`);
      t.true(Buffer.from(p.layerOut!.buffer).equals(Buffer.from(zero[i]!.layerOut!.buffer)), `seq${i} layer_out`);
    });
  });
}

test('the pipeline: align (TIES on the SFT target, bf16 on disk, ICV on the patched model), then steered greedy tokens', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-pipeline-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const out = path.join(dir, 'aligned');
  const s = await align({
    base: path.join(G, 'model'), harmful: path.join(G, 'harmful'), target: path.join(G, 'sft'), out,
    mode: 'ties', topK: 10, lambda: 3, demos: manifest.icv.demos, alpha: manifest.pipeline.alpha,
  });
  t.is(s.icv.defaultAlpha, manifest.pipeline.alpha);
  const expected = loadTensors(path.join(G, `expected_${manifest.pipeline.hdr_case}.safetensors`));
  const ours = loadTensors(path.join(out, 'model-00001-of-00003.safetensors'));
  for (const [k, v] of ours) t.true(v.bytes.equals(expected.get(k)!.bytes), k);
  const icv = loadIcv(path.join(out, 'icv.safetensors'));
  const pipelineRef = loadTensors(path.join(G, 'pipeline_icv.safetensors')).get('icv')!;
  for (const [l, c] of perLayer(icv.vectors, toFloat32(pipelineRef), icv.hiddenSize).entries()) {
    // The reference ICV was stored in bf16; compare within that rounding.
    t.true(c.cos >= 0.9999, `layer ${l}: cosine ${c.cos}`);
    t.true(c.normErr <= 1e-2, `layer ${l}: norm error ${c.normErr}`);
  }
  const m = await LanguageModel.load(out);
  t.teardown(() => m.dispose());
  const steer = [steerWithIcv(m, icv)];
  for (const g of manifest.pipeline.greedy) {
    const r = await m.generateText(seqs[g.seq]!, { maxNewTokens: 12, ignoreEos: true, steer });
    t.deepEqual(r.tokens, g.greedy, `seq ${g.seq}`);
  }
});

test('ICV files round-trip, and ones that do not fit the model are refused', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-icvfile-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const m = await LanguageModel.load(path.join(G, 'model'));
  t.teardown(() => m.dispose());
  const icv = await computeIcv(m, manifest.icv.demos, { layers: [1, 2] });
  const file = path.join(dir, 'icv.safetensors');
  saveIcv(file, icv);
  const back = loadIcv(file);
  t.deepEqual(back.layers, [1, 2]);
  t.deepEqual(Array.from(back.vectors), Array.from(icv.vectors));
  t.is(back.metadata.hook, 'mlp_out');
  t.is(back.modelFingerprint, icv.modelFingerprint);
  t.notThrows(() => checkIcvFits(back, m, file));
  t.throws(() => checkIcvFits({ ...back, hiddenSize: 65, vectors: new Float32Array(130) }, m, file), { message: /hidden size 65.*64/ });
  t.throws(() => checkIcvFits({ ...back, layers: [1, 9] }, m, file), { message: /steers layer 9 .* 4 layers/ });
  fs.writeFileSync(path.join(dir, 'not-icv.safetensors'), fs.readFileSync(path.join(G, 'pipeline_icv.safetensors')));
  t.throws(() => loadIcv(path.join(dir, 'not-icv.safetensors')), { message: /not an ICV file/ });
});

test('the standalone steering function matches the engine hook and leaves x unchanged at alpha 0', async (t) => {
  const m = await LanguageModel.load(path.join(G, 'model'));
  t.teardown(() => m.dispose());
  const H = m.config.hiddenSize;
  const v = toFloat32(ref.get('icv.all_layers')!).slice(0, H);
  const plain = await m.forward([seqs[0]!], { capture: ['mlp_out'] });
  const x = plain[0]!.mlpOut!.slice(0, seqs[0]!.length * H);
  const unchanged = x.slice();
  steerActivations(unchanged, H, [v], [0]);
  t.true(Buffer.from(unchanged.buffer).equals(Buffer.from(x.buffer)));
  const handle = m.addSteeringVector([0], v);
  const steered = await m.forward([seqs[0]!], { capture: ['mlp_out'], steer: [{ vector: handle, alpha: 1 }] });
  const mine = x.slice();
  steerActivations(mine, H, [v], [1]);
  t.true(maxRelativeError(mine, steered[0]!.mlpOut!.slice(0, seqs[0]!.length * H)) <= 1e-6);
  // Several vectors: the published average.
  const two = x.slice();
  steerActivations(two, H, [v, v], [1, 1]);
  t.true(maxRelativeError(two, mine) <= 1e-6);
  // A vector at alpha 0 takes no part, in the average's count too, as in the engine.
  const w = v.map((e, i) => (i % 2 ? e : -e));
  const withIdle = x.slice();
  steerActivations(withIdle, H, [v, w], [1, 0]);
  t.true(Buffer.from(withIdle.buffer).equals(Buffer.from(mine.buffer)));
  const idle = m.addSteeringVector([0], w);
  const engine = await m.forward([seqs[0]!], { capture: ['mlp_out'], steer: [{ vector: handle, alpha: 1 }, { vector: idle, alpha: 0 }] });
  t.true(maxRelativeError(withIdle, engine[0]!.mlpOut!.slice(0, seqs[0]!.length * H)) <= 1e-6);
});

test('requests with different steering share one batch and each gets what it would get alone', async (t) => {
  const m = await LanguageModel.load(path.join(G, 'model'));
  t.teardown(() => m.dispose());
  const all = m.addSteeringVector([0, 1, 2, 3], toFloat32(ref.get('icv.all_layers')!));
  const requests = [
    { prompt: seqs[0]!, steer: [{ vector: all, alpha: 1 }] },
    { prompt: seqs[1]!, steer: [] },
    { prompt: seqs[2]!, steer: [{ vector: all, alpha: 0.12 }] },
  ];
  const together = await m.generateBatch(requests, { maxNewTokens: 12, ignoreEos: true });
  for (let i = 0; i < requests.length; i++) {
    const alone = await m.generateText(requests[i]!.prompt, { maxNewTokens: 12, ignoreEos: true, steer: requests[i]!.steer });
    t.deepEqual(together[i]!.tokens, alone.tokens, `request ${i}`);
  }
  const steered = manifest.icv.steered_greedy.find((g) => g.alpha === 1 && g.seq === 0)!;
  t.deepEqual(together[0]!.tokens, steered.greedy);
});
