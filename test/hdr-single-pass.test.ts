/**
 * The single-pass HDR (a sampled band around the TIES threshold) against the three passes: the same
 * bytes in every output file, the same counts and threshold, on the golden cases, on distributions
 * made to trouble it (ties at the threshold, all-equal magnitudes, a misjudged band), and through
 * its fallback. SAFETY_ARITHMETIC_TEST_HDR_BAND (test only, csrc/hdr/hdr_job.h) forces the band off the threshold.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { removeHarmDirection, type HdrOptions, type HdrSummary } from '../lib/hdr';
import { bf16Bytes, f32Bytes, hdrFixture, tmpDir, writeCheckpoint, type TensorSpec } from './helpers/checkpoints';
import { loadCheckpointTensors, toFloat32 } from './helpers/safetensors';

const ROOT = path.join(__dirname, '..', '..');
const G = path.join(ROOT, 'test', 'fixtures', 'llama-tiny');
const CLI = path.join(ROOT, 'bin', 'safety-arithmetic.js');
const manifest = JSON.parse(fs.readFileSync(path.join(G, 'manifest.json'), 'utf8')) as {
  hdr: { cases: Record<string, { target: string; mode: 'ties' | 'task-vector'; lambda: number; top_k?: number; layers?: number[]; edit_mask?: boolean }> };
};

interface Run {
  summary: HdrSummary;
  out: string;
}

async function run(t: ExecutionContext, options: Omit<HdrOptions, 'out'>, passes: HdrOptions['passes']): Promise<Run> {
  const dir = tmpDir('sa-single-pass-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const out = path.join(dir, 'out');
  const summary = await removeHarmDirection({ ...options, out, device: 'cpu', passes });
  return { summary, out };
}

/** Every output file but the run record, byte for byte, and the counts. */
function assertSame(t: ExecutionContext, a: Run, b: Run): void {
  const files = fs.readdirSync(a.out).filter((f) => f !== 'safety_arithmetic.json').sort();
  t.deepEqual(files, fs.readdirSync(b.out).filter((f) => f !== 'safety_arithmetic.json').sort());
  for (const f of files) t.true(fs.readFileSync(path.join(a.out, f)).equals(fs.readFileSync(path.join(b.out, f))), `${f} differs`);
  const counts = (s: HdrSummary) => [s.regionElements, s.keepTarget, s.kept, s.ties, s.threshold];
  t.deepEqual(counts(a.summary), counts(b.summary));
}

/** Runs passes 1, 3 and auto; all three outputs must be identical. Returns the runs. */
async function allPasses(t: ExecutionContext, options: Omit<HdrOptions, 'out'>): Promise<Record<'one' | 'three' | 'auto', Run>> {
  const [one, three, auto] = [await run(t, options, 1), await run(t, options, 3), await run(t, options, 'auto')];
  assertSame(t, one, three);
  assertSame(t, auto, three);
  t.is(three.summary.passes.requested, 3);
  return { one, three, auto };
}

for (const [name, c] of Object.entries(manifest.hdr.cases)) {
  test(`golden ${name}: passes 1, 3 and auto write the same bytes`, async (t) => {
    const options: Omit<HdrOptions, 'out'> = {
      base: path.join(G, 'model'), harmful: path.join(G, 'harmful'), target: path.join(G, c.target === 'sft' ? 'sft' : 'edited'),
      mode: c.mode, lambda: c.lambda, ...(c.top_k !== undefined ? { topK: c.top_k * 100 } : {}), ...(c.layers ? { layers: c.layers } : {}),
      ...(c.edit_mask ? { editMask: true } : {}),
    };
    const { one, three } = await allPasses(t, options);
    t.is(one.summary.passes.ran, 1);
    if (c.mode === 'ties') {
      t.is(three.summary.passes.ran, 3);
      t.regex(one.summary.passes.reason, /band held the threshold/);
      t.not(one.summary.passes.band, null);
    }
  });
}

/** Deterministic values in [-1, 1) from a 32-bit LCG. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

interface Model {
  base: string;
  harmful: string;
  target: string;
}

/** Three checkpoints whose tensor k has `shapes[k]` and dtype `dtypes[k]`, element i valued by gen. */
function model(t: ExecutionContext, layout: { dtype: 'F32' | 'BF16'; shape: number[] }[], gen: (k: number, i: number) => [number, number, number]): Model {
  const root = tmpDir('sa-single-pass-model-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const specs: TensorSpec[][] = [[], [], []];
  layout.forEach((l, k) => {
    const n = l.shape.reduce((a, b) => a * b, 1);
    const v = [new Float32Array(n), new Float32Array(n), new Float32Array(n)];
    for (let i = 0; i < n; i++) gen(k, i).forEach((x, j) => (v[j]![i] = x));
    v.forEach((vals, j) => specs[j]!.push({ name: `model.layers.${k}.mlp.down_proj.weight`, dtype: l.dtype, shape: l.shape, bytes: l.dtype === 'F32' ? f32Bytes(vals) : bf16Bytes(vals) }));
  });
  const dirs = ['base', 'harmful', 'target'].map((d) => path.join(root, d));
  dirs.forEach((d, j) => writeCheckpoint(d, specs[j]!));
  return { base: dirs[0]!, harmful: dirs[1]!, target: dirs[2]! };
}

/** The threshold by the rule of docs/semantics.md, from a full sort of |tau| in float32. */
function sortedThreshold(m: Model, topK: number): number {
  const b = loadCheckpointTensors(m.base), h = loadCheckpointTensors(m.harmful);
  const mags: number[] = [];
  for (const [name, bt] of b) {
    const bv = toFloat32(bt), hv = toFloat32(h.get(name)!);
    for (let i = 0; i < bv.length; i++) mags.push(Math.abs(Math.fround(hv[i]! - bv[i]!)));
  }
  const sorted = Float32Array.from(mags).sort();
  const keep = Math.floor(sorted.length * topK);
  return sorted[sorted.length - keep - 1]!;
}

// Large enough that the band comes from a sample, not from every element; the tensors differ in
// scale (as layers do) so that the blocks of the sample disagree.
const SAMPLED = [
  { dtype: 'BF16' as const, shape: [512, 1024] },
  { dtype: 'F32' as const, shape: [256, 1024] },
  { dtype: 'BF16' as const, shape: [384, 1024] },
  { dtype: 'F32' as const, shape: [512, 1024] },
];

test('a sampled band: one pass, the threshold of a full sort, the same bytes as three passes', async (t) => {
  const r = lcg(7);
  const scale = [0.002, 0.03, 0.01, 0.005];
  const m = model(t, SAMPLED, (k, i) => {
    const b = 0.05 * r();
    return [b, b + scale[k]! * r() * (1 + (i % 7)), 0.05 * r()];
  });
  const { one, auto } = await allPasses(t, m);
  for (const s of [one.summary, auto.summary]) {
    t.is(s.passes.ran, 1, s.passes.reason);
    t.true(s.passes.band!.sampleElements < s.regionElements / 4, 'the band came from a sample');
    t.true(s.passes.band!.entries < s.regionElements / 10, `${s.passes.band!.entries} band entries`);
  }
  t.is(one.summary.threshold, sortedThreshold(m, 0.1));
  t.log(`band ${JSON.stringify(one.summary.passes.band)}`);
});

test('many ties at the threshold: four magnitudes only, a quarter of the region at the threshold', async (t) => {
  const m = model(t, SAMPLED, (_k, i) => {
    const b = ((i * 7) % 64) / 64;
    return [b, b + (i % 4) / 8, ((i * 5) % 32) / 32];
  });
  const { one } = await allPasses(t, m);
  t.is(one.summary.passes.ran, 1, one.summary.passes.reason);
  t.is(one.summary.threshold, 3 / 8);
  t.is(one.summary.ties, one.summary.kept);
  t.true(one.summary.ties > one.summary.regionElements / 5);
});

test('ties where the threshold falls inside a run of equal magnitudes, with topK 30', async (t) => {
  const m = model(t, SAMPLED.slice(0, 2), (_k, i) => {
    const b = ((i * 3) % 16) / 16;
    return [b, b - ((i * 13) % 5) / 16, b];
  });
  const { one } = await allPasses(t, { ...m, topK: 30 });
  t.is(one.summary.passes.ran, 1, one.summary.passes.reason);
  t.is(one.summary.threshold, sortedThreshold(m, 0.3));
});

test('all-equal magnitudes, and all-zero tau: every region element is a tie', async (t) => {
  for (const delta of [0.25, 0]) {
    const m = model(t, SAMPLED.slice(1, 3), (_k, i) => {
      const b = ((i * 11) % 32) / 32;
      return [b, b + delta, 1 - b];
    });
    const { one } = await allPasses(t, m);
    t.is(one.summary.threshold, delta);
    t.is(one.summary.kept, one.summary.regionElements);
    t.is(one.summary.ties, one.summary.regionElements);
  }
});

test('topK 100: everything kept, threshold 0, in one pass', async (t) => {
  const { one } = await allPasses(t, { base: path.join(G, 'model'), harmful: path.join(G, 'harmful'), target: path.join(G, 'sft'), topK: 100 });
  t.is(one.summary.passes.ran, 1);
  t.is(one.summary.threshold, 0);
  t.is(one.summary.kept, one.summary.regionElements);
});

// Serial: the variable is read by the addon in this process.
/** Three small sampled checkpoints: tensors 0 to n - 1 of SAMPLED, values from seed. */
function sampledModel(t: ExecutionContext, n: number, seed: number): Model {
  const r = lcg(seed);
  return model(t, SAMPLED.slice(0, n), () => {
    const b = 0.1 * r();
    return [b, b + 0.01 * r(), 0.1 * r()];
  });
}

/** A one-pass run with SAFETY_ARITHMETIC_TEST_HDR_BAND set to mode (tests using it are serial). */
async function runWithBandOverride(t: ExecutionContext, m: Model, mode: string): Promise<Run> {
  process.env.SAFETY_ARITHMETIC_TEST_HDR_BAND = mode;
  try {
    return await run(t, m, 1);
  } finally {
    delete process.env.SAFETY_ARITHMETIC_TEST_HDR_BAND;
  }
}

for (const mode of ['above', 'below', 'full'] as const) {
  test.serial(`a misjudged band (SAFETY_ARITHMETIC_TEST_HDR_BAND=${mode}): the three passes run, the same bytes, and the record says why`, async (t) => {
    const m = sampledModel(t, 2, 11);
    const three = await run(t, m, 3);
    const forced = await runWithBandOverride(t, m, mode);
    assertSame(t, forced, three);
    t.is(forced.summary.passes.ran, 3);
    t.regex(forced.summary.passes.reason, mode === 'full' ? /fell back: the band is full/ : new RegExp(`fell back: the threshold .* lies ${mode === 'above' ? 'below' : 'above'} the band`));
    const record = JSON.parse(fs.readFileSync(path.join(forced.out, 'safety_arithmetic.json'), 'utf8'));
    t.is(record.result.passes.ran, 3);
    t.is(record.result.passes.reason, forced.summary.passes.reason);
  });
}

test.serial('band entries beyond the room first given to a chunk (SAFETY_ARITHMETIC_TEST_HDR_BAND=room): the chunk runs again from its target, the same bytes', async (t) => {
  const m = sampledModel(t, 2, 13);
  const three = await run(t, m, 3);
  const one = await runWithBandOverride(t, m, 'room');
  t.is(one.summary.passes.ran, 1, one.summary.passes.reason);
  t.true(one.summary.passes.band!.entries > 2);
  assertSame(t, one, three);
});

test.serial('a sample not in the page cache (SAFETY_ARITHMETIC_TEST_HDR_BAND=uncached): its blocks prefetched, then read; the same band and bytes', async (t) => {
  const m = sampledModel(t, 3, 19);
  const cached = await run(t, m, 1);
  const uncached = await runWithBandOverride(t, m, 'uncached');
  t.is(uncached.summary.passes.ran, 1, uncached.summary.passes.reason);
  // The band comes from the same sample; how many elements are patched depends on the order in which chunks finish.
  const { patched: _a, ...bandUncached } = uncached.summary.passes.band!;
  const { patched: _b, ...bandCached } = cached.summary.passes.band!;
  t.deepEqual(bandUncached, bandCached);
  t.true(cached.summary.passes.band!.sampleElements < cached.summary.regionElements / 4, 'the band came from a sample');
  assertSame(t, uncached, cached);
});

test('a non-finite input: the single pass falls back, and the error is the three passes\' own', async (t) => {
  const messages: string[] = [];
  const f = hdrFixture(t, {}, { harmful: writeInfinity() });
  for (const passes of [1, 3] as const) {
    const err = await t.throwsAsync(removeHarmDirection({ ...f.options, out: `${f.out}-${passes}`, passes }));
    messages.push(err!.message);
    t.false(fs.existsSync(`${f.out}-${passes}`));
  }
  t.is(messages[0], messages[1]);
  t.regex(messages[0]!, /NaN or infinite/);
});

/** The fixture's harmful model with +Infinity in one element of a layer tensor. */
function writeInfinity(): TensorSpec[] {
  const v = new Float32Array(24).fill(0.25);
  v[5] = Infinity;
  return [
    { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [6, 4], bytes: f32Bytes(new Float32Array(24).fill(0.5)) },
    { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'BF16', shape: [4, 4], bytes: bf16Bytes(new Float32Array(16).fill(0.5)) },
    { name: 'model.layers.0.mlp.down_proj.weight', dtype: 'F32', shape: [4, 6], bytes: f32Bytes(v) },
    { name: 'model.layers.1.self_attn.q_proj.weight', dtype: 'BF16', shape: [4, 4], bytes: bf16Bytes(new Float32Array(16).fill(0.5)) },
    { name: 'model.layers.1.mlp.down_proj.weight', dtype: 'F32', shape: [4, 6], bytes: f32Bytes(new Float32Array(24).fill(0.5)) },
    { name: 'model.norm.weight', dtype: 'F32', shape: [4], bytes: f32Bytes(new Float32Array(4).fill(1)) },
  ];
}

test('CLI: --passes 1 says which ran and why; --passes 2 is refused', (t) => {
  const dir = tmpDir('sa-single-pass-cli-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const args = ['hdr', '--base', path.join(G, 'model'), '--harmful', path.join(G, 'harmful'), '--target', path.join(G, 'sft'), '--device', 'cpu'];
  const text = execFileSync(process.execPath, [CLI, ...args, '--out', path.join(dir, 'a'), '--passes', '1'], { encoding: 'utf8' });
  t.regex(text, /one pass over the inputs: one pass was requested, and the sampled band held the threshold/);
  const json = JSON.parse(execFileSync(process.execPath, [CLI, ...args, '--out', path.join(dir, 'b'), '--passes', '3', '--json'], { encoding: 'utf8' }).trim().split('\n').pop()!);
  t.deepEqual([json.passes.requested, json.passes.ran, json.passes.reason], [3, 3, 'three passes were requested']);
  const bad = spawnSync(process.execPath, [CLI, ...args, '--out', path.join(dir, 'c'), '--passes', '2'], { encoding: 'utf8' });
  t.not(bad.status, 0);
  t.regex(bad.stderr, /--passes is "2": use auto, 1 or 3/);
  t.false(fs.existsSync(path.join(dir, 'c')));
});

test('the API refuses a bad passes value, naming the field', async (t) => {
  const f = hdrFixture(t);
  const err = await t.throwsAsync(removeHarmDirection({ ...f.options, passes: 2 as unknown as 1 }));
  t.regex(err!.message, /^passes: is 2: use 'auto', 1 or 3/);
});

// Each CPU variant this machine runs, in its own process (SAFETY_ARITHMETIC_CPU is read once): bf16
// everywhere (the AVX-512 variant scans it with its own kernel), lengths that are no multiple of the
// vector width, and band elements that the final threshold patches back.
test('every CPU variant: bf16 in one pass, band elements patched, the same bytes as three passes', async (t) => {
  const r = lcg(17);
  const layout = [
    { dtype: 'BF16' as const, shape: [3, 1001] },
    ...[0, 1, 2, 3, 4, 5].map(() => ({ dtype: 'BF16' as const, shape: [256, 1024] })),
    { dtype: 'BF16' as const, shape: [383, 1021] },
  ];
  const m = model(t, layout, (k, i) => {
    const b = 0.05 * r();
    return [b, b + 0.01 * (k + 1) * r() * (1 + (i % 5)), 0.05 * r()];
  });
  const three = await run(t, m, 3);
  const { cpuKernel } = await import('../lib/device');
  const variants = cpuKernel().variants.filter((v) => v.supported).map((v) => v.name);
  t.true(variants.length > 0);
  for (const variant of variants) {
    const out = path.join(tmpDir('sa-single-pass-variant-'), 'out');
    t.teardown(() => fs.rmSync(path.dirname(out), { recursive: true, force: true }));
    const args = ['hdr', '--base', m.base, '--harmful', m.harmful, '--target', m.target, '--device', 'cpu', '--passes', '1', '--out', out, '--json'];
    const child = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, SAFETY_ARITHMETIC_CPU: variant } });
    t.is(child.status, 0, child.stderr);
    const summary = JSON.parse(child.stdout.trim().split('\n').pop()!) as HdrSummary;
    t.is(summary.passes.ran, 1, `${variant}: ${summary.passes.reason}`);
    t.true(summary.passes.band!.patched > 0, `${variant}: no band element was patched`);
    assertSame(t, { summary, out }, three);
  }
});

// bf16 inputs go through the variant's vectorised scan: 32 elements a step, then a tail of 8 here.
// A non-finite target where tau is 0 is not kept, so only the scan's own check can find it.
for (const [role, at, value] of [['harmful', 37, Infinity], ['target', 40, Number.NaN], ['target', 325, -Infinity]] as const) {
  test(`bf16, a non-finite ${role} value at element ${at}: the single pass falls back, and the error is the three passes' own`, async (t) => {
    const j = ['base', 'harmful', 'target'].indexOf(role);
    const m = model(t, [{ dtype: 'BF16', shape: [8, 41] }, { dtype: 'BF16', shape: [8, 41] }], (k, i) => {
      const v: [number, number, number] = [0.1 + 0.01 * (i % 13), 0.1 + 0.02 * (i % 7), 0.3];
      if (k === 1 && i === at) {
        v[0] = v[1];
        v[j] = value;
      }
      return v;
    });
    const messages: string[] = [];
    for (const passes of [1, 3] as const) {
      const out = path.join(tmpDir('sa-single-pass-nonfinite-'), 'out');
      t.teardown(() => fs.rmSync(path.dirname(out), { recursive: true, force: true }));
      const err = await t.throwsAsync(removeHarmDirection({ ...m, out, device: 'cpu', passes }));
      messages.push(err!.message);
      t.false(fs.existsSync(out));
    }
    t.is(messages[0], messages[1]);
    t.regex(messages[0]!, new RegExp(`tensor "model.layers.1.mlp.down_proj.weight" of the ${role} checkpoint holds NaN or infinite values \\(1 among`));
  });
}

test('non-finite values in two tensors: the error names the first in the checkpoint, every time, though workers take chunks at once', async (t) => {
  const layout = [0, 1, 2, 3].map(() => ({ dtype: 'F32' as const, shape: [256, 1024] }));
  const m = model(t, layout, (k, i) => {
    const v: [number, number, number] = [0.01 * (i % 17), 0.02 * (i % 11), 0.5];
    if ((k === 1 && i === 70_000) || (k === 3 && i === 5)) v[1] = Number.NaN;
    return v;
  });
  for (const passes of [1, 3, 1, 3] as const) {
    const out = path.join(tmpDir('sa-single-pass-two-errors-'), 'out');
    t.teardown(() => fs.rmSync(path.dirname(out), { recursive: true, force: true }));
    const err = await t.throwsAsync(removeHarmDirection({ ...m, out, device: 'cpu', passes }));
    t.regex(err!.message, /tensor "model\.layers\.1\.mlp\.down_proj\.weight" of the harmful checkpoint holds NaN or infinite values \(1 among elements 0 to 262143/);
  }
});
