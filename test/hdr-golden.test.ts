/** The four HDR cases of the golden suite, on every backend present. */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { removeHarmDirection, type HdrOptions } from '../lib/hdr';
import { backends } from '../lib/device';
import { loadCheckpointTensors, loadTensors, ulpDistance } from './helpers/safetensors';

const G = path.join(__dirname, '..', '..', 'test', 'fixtures', 'llama-tiny');
const manifest = JSON.parse(fs.readFileSync(path.join(G, 'manifest.json'), 'utf8')) as {
  hdr: { cases: Record<string, { target: string; mode: 'ties' | 'task-vector'; lambda: number; top_k?: number; layers?: number[]; edit_mask?: boolean }> };
};
const TARGET_DIR: Record<string, string> = { sft: 'sft', edited: 'edited' };
const cudaAvailable = backends().some((b) => b.name === 'cuda' && b.available);

function tmp(name: string): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sa-golden-')), name);
}

async function runCase(name: string, device: 'cpu' | 'cuda', extra: Partial<HdrOptions> = {}) {
  const c = manifest.hdr.cases[name]!;
  const out = tmp('out');
  const options: HdrOptions = {
    base: path.join(G, 'model'), harmful: path.join(G, 'harmful'), target: path.join(G, TARGET_DIR[c.target]!), out,
    mode: c.mode, lambda: c.lambda, device, ...extra,
  };
  if (c.top_k !== undefined) options.topK = c.top_k * 100;
  if (c.layers) options.layers = c.layers;
  if (c.edit_mask) options.editMask = true;
  const summary = await removeHarmDirection(options);
  return { summary, out, target: path.join(G, TARGET_DIR[c.target]!) };
}

for (const name of Object.keys(manifest.hdr.cases)) {
  for (const device of ['cpu', 'cuda'] as const) {
    const title = `HDR golden ${name} on ${device}: same kept set, values within 1 ulp`;
    if (device === 'cuda' && !cudaAvailable) {
      test.skip(title + ' (no usable CUDA device)', () => {});
      continue;
    }
    test(title, async (t) => {
      const { summary, out, target } = await runCase(name, device);
      t.is(summary.backend, device);
      const expected = loadTensors(path.join(G, `expected_${name}.safetensors`));
      const ours = loadCheckpointTensors(out);
      const original = loadCheckpointTensors(target);
      t.deepEqual([...ours.keys()].sort(), [...expected.keys()].sort());
      let changedOurs = 0, changedRef = 0, maxUlp = 0, keptSetDiffers = 0;
      for (const [k, e] of expected) {
        const o = ours.get(k)!, orig = original.get(k)!;
        t.is(o.dtype, e.dtype, k);
        t.deepEqual(o.shape, e.shape, k);
        const n = e.shape.reduce((a, b) => a * b, 1);
        for (let i = 0; i < n; i++) {
          const ourChanged = ulpDistance(o.dtype, o.bytes, orig.bytes, i) !== 0;
          const refChanged = ulpDistance(e.dtype, e.bytes, orig.bytes, i) !== 0;
          if (ourChanged) changedOurs++;
          if (refChanged) changedRef++;
          if (ourChanged !== refChanged) keptSetDiffers++;
          maxUlp = Math.max(maxUlp, ulpDistance(o.dtype, o.bytes, e.bytes, i));
        }
      }
      t.is(keptSetDiffers, 0, 'elements changed by one implementation and not the other');
      t.is(changedOurs, changedRef);
      t.true(maxUlp <= 1, `max ulp distance ${maxUlp}`);
      t.log(`${changedOurs} elements changed, max distance to the reference ${maxUlp} ulp`);
      t.true(summary.kept >= changedOurs, 'kept counts every changed element');
      const record = JSON.parse(fs.readFileSync(path.join(out, 'safety_arithmetic.json'), 'utf8'));
      t.is(record.result.kept, summary.kept);
      t.is(record.parameters.lambda, manifest.hdr.cases[name]!.lambda);
    });
  }
}

test('TIES keeps floor(d*k) + ties at the threshold, as the published code', async (t) => {
  const { summary } = await runCase('ties_sft_k10_l3', 'cpu');
  t.is(summary.keepTarget, Math.floor(summary.regionElements * 0.1));
  t.is(summary.kept, summary.keepTarget + summary.ties);
  t.true(summary.ties >= 1);
  t.is(typeof summary.threshold, 'number');
});

(cudaAvailable ? test : test.skip)('CPU and CUDA outputs agree bit for bit' + (cudaAvailable ? '' : ' (no usable CUDA device)'), async (t) => {
  for (const name of Object.keys(manifest.hdr.cases)) {
    const a = await runCase(name, 'cpu');
    const b = await runCase(name, 'cuda');
    for (const f of fs.readdirSync(a.out).filter((f) => f.endsWith('.safetensors')))
      t.true(fs.readFileSync(path.join(a.out, f)).equals(fs.readFileSync(path.join(b.out, f))), `${name}/${f}`);
  }
});

test('a saved harm vector patches targets bit for bit as the direct run, and stores only kept elements', async (t) => {
  for (const name of ['ties_sft_k10_l3', 'ties_edit_layers_k10_l3']) {
    const hv = tmp('harm.safetensors');
    const direct = await runCase(name, 'cpu', { saveHarmVector: hv });
    const { readHarmVector } = await import('../lib/harm-vector');
    const file = readHarmVector(hv);
    let stored = 0;
    for (const e of file.entries.values()) stored += e.count;
    t.is(stored, direct.summary.kept, `${name}: one entry per kept element`);
    t.true(fs.statSync(hv).size < stored * 8 + 64 * 1024, `${name}: about 8 bytes per kept element`);
    const out = tmp('from-hv');
    const fromFile = await removeHarmDirection({ harmVector: hv, target: direct.target, out, lambda: manifest.hdr.cases[name]!.lambda });
    t.is(fromFile.kept, direct.summary.kept);
    for (const f of fs.readdirSync(direct.out).filter((f) => f.endsWith('.safetensors')))
      t.true(fs.readFileSync(path.join(direct.out, f)).equals(fs.readFileSync(path.join(out, f))), `${name}/${f}`);
  }
});

test.after.always('remove the golden outputs', () => {
  for (const d of fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('sa-golden-'))) fs.rmSync(path.join(os.tmpdir(), d), { recursive: true, force: true });
});

test('--max-shard-size re-shards the output with its index, holding the same tensors', async (t) => {
  const direct = await runCase('ties_sft_k10_l3', 'cpu');
  const small = await runCase('ties_sft_k10_l3', 'cpu', { maxShardSize: '100KB' });
  const one = await runCase('ties_sft_k10_l3', 'cpu', { maxShardSize: '1GB' });
  const shards = fs.readdirSync(small.out).filter((f) => f.endsWith('.safetensors')).sort();
  t.true(shards.length >= 4, `${shards.length} shards`);
  t.regex(shards[0]!, /^model-00001-of-000\d\d\.safetensors$/);
  const index = JSON.parse(fs.readFileSync(path.join(small.out, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
  for (const f of shards) t.true(fs.statSync(path.join(small.out, f)).size <= 100_000 + 4096 || Object.values(index.weight_map).filter((v) => v === f).length === 1, f);
  t.deepEqual(fs.readdirSync(one.out).filter((f) => f.endsWith('.safetensors')), ['model.safetensors']);
  t.false(fs.existsSync(path.join(one.out, 'model.safetensors.index.json')));
  const a = loadCheckpointTensors(direct.out), b = loadCheckpointTensors(small.out), c = loadCheckpointTensors(one.out);
  for (const [k, v] of a) {
    t.is(index.weight_map[k] !== undefined, true, k);
    t.true(v.bytes.equals(b.get(k)!.bytes) && v.bytes.equals(c.get(k)!.bytes), k);
  }
});
