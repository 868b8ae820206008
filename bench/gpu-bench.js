#!/usr/bin/env node
'use strict';
// GPU benchmarks (not tests; run on a lent GPU by bench/device/gpu-check.sh). Prints a table and
// writes the measurements as JSON (--out FILE). Each figure is beside its anchor from docs/semantics.md,
// measured in the same run where the anchor is ours to measure (the memory floor).
//   1. the steering kernel on [20, 192, 4096] bf16 against a device copy of the same bytes;
//   2. decode tokens/s of a Llama-2-7B-shaped model (random bf16 weights; --model DIR, or made with
//      bench/gen-llama.js into --scratch) at batch 1 and 20 (prompt 64, 128 new tokens), steering off
//      and on every layer, against the memory floor (weight bytes / measured copy bandwidth).
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const root = path.resolve(__dirname, '..');
const { LanguageModel, steerWithIcv } = require(path.join(root, 'dist', 'lib', 'index.js'));
const { native } = require(path.join(root, 'dist', 'lib', 'native.js'));

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const outFile = flag('--out', null);
const results = { machine: `${os.cpus()[0].model} x ${os.cpus().length}`, when: new Date().toISOString() };

function steerBench() {
  const rows = 20 * 192, hidden = 4096;
  const r = native().cudaBenchSteer(rows, hidden, 'BF16', 200);
  const bytes = 2 * rows * hidden * 2; // read + write
  results.steer = {
    shape: [20, 192, 4096], dtype: 'bf16', steerUs: r.steerUs, copyUs: r.copyUs,
    steerGBs: bytes / r.steerUs / 1e3, copyGBs: bytes / r.copyUs / 1e3,
    fractionOfCopyBandwidth: r.copyUs / r.steerUs, publishedPytorchUs: 860,
  };
  console.log(`steering [20,192,4096] bf16: ${r.steerUs.toFixed(1)} us (${results.steer.steerGBs.toFixed(0)} GB/s); ` +
    `copy of the same bytes ${r.copyUs.toFixed(1)} us: ${(100 * results.steer.fractionOfCopyBandwidth).toFixed(0)}% of copy bandwidth ` +
    `(target >= 70%); published PyTorch transform 860 us (${(860 / r.steerUs).toFixed(1)}x)`);
}

function copyBandwidthGBs() {
  // A large copy: 1 GiB of bf16 rows moved (read + write).
  const rows = 131072, hidden = 4096;
  const r = native().cudaBenchSteer(rows, hidden, 'BF16', 10);
  return (2 * rows * hidden * 2) / r.copyUs / 1e3;
}

function modelDir() {
  const given = flag('--model', null);
  if (given) return given;
  const scratch = flag('--scratch', path.join(os.tmpdir(), 'sa-7b'));
  const base = path.join(scratch, 'base');
  if (!fs.existsSync(path.join(base, 'config.json'))) {
    const r = spawnSync(process.execPath, [path.join(root, 'bench', 'gen-llama.js'), scratch, '--layers', '32', '--hidden', '4096',
      '--intermediate', '11008', '--vocab', '32000', '--heads', '32', '--kv-heads', '32', '--only', 'base'], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error('could not generate the 7B-shaped model');
  }
  return base;
}

async function decodeBench() {
  const dir = modelDir();
  const model = await LanguageModel.load(dir, { device: 'cuda' });
  const H = model.config.hiddenSize, L = model.config.numLayers;
  const icv = { layers: [...Array(L).keys()], hiddenSize: H, vectors: Float32Array.from({ length: L * H }, (_, i) => Math.sin(i)), defaultAlpha: 0.12, modelFingerprint: '', metadata: {} };
  const steer = [steerWithIcv(model, icv, 0.12)];
  const prompt = Array.from({ length: 64 }, (_, i) => 100 + ((i * 37) % 30000));
  const weightBytes = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).reduce((s, f) => s + fs.statSync(path.join(dir, f)).size, 0);
  const bw = copyBandwidthGBs();
  const floorBatch1 = (bw * 1e9) / weightBytes;
  results.decode = { model: dir, weightBytes, copyGBs: bw, floorTokensPerSecondBatch1: floorBatch1, runs: [] };
  console.log(`memory floor: ${(weightBytes / 2 ** 30).toFixed(1)} GiB of weights at ${bw.toFixed(0)} GB/s = ${floorBatch1.toFixed(0)} tokens/s at batch 1`);
  for (const batch of [1, 20]) {
    for (const steered of [false, true]) {
      const prompts = Array.from({ length: batch }, () => prompt);
      const opts = { maxNewTokens: 128, ignoreEos: true, greedy: true, ...(steered ? { steer } : {}) };
      await model.generateBatch(prompts, { ...opts, maxNewTokens: 4 });
      const t0 = process.hrtime.bigint();
      const out = await model.generateBatch(prompts, opts);
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      const tokens = out.reduce((n, r) => n + r.tokens.length, 0);
      const run = { batch, steered, seconds: s, tokensPerSecond: tokens / s };
      results.decode.runs.push(run);
      console.log(`decode batch ${batch}${steered ? ', steering every layer' : ''}: ${run.tokensPerSecond.toFixed(0)} tokens/s (prefill 64 + 128 new)` +
        (batch === 1 ? ` = ${(100 * run.tokensPerSecond / floorBatch1).toFixed(0)}% of the floor (target >= 75%)` : ` (transformers ~500-590 on an H100; target >= 5x)`));
    }
  }
  model.dispose();
}

(async () => {
  try {
    steerBench();
  } catch (e) {
    console.log(`steering benchmark: ${e.message}`);
  }
  try {
    await decodeBench();
  } catch (e) {
    console.log(`decode benchmark: ${e.message}`);
  }
  if (outFile) fs.writeFileSync(outFile, JSON.stringify(results, null, 2) + '\n');
})();
