#!/usr/bin/env node
'use strict';
// The short table that ends bench/device/gpu-check.sh: one line per check or figure, from the files
// that the run wrote into OUT (default ./device-out). A missing file reads "not run".
//   node bench/device/summary.js [OUT]
const fs = require('node:fs');
const path = require('node:path');

const out = process.argv[2] || path.join(process.cwd(), 'device-out');
const read = (name) => {
  try {
    return fs.readFileSync(path.join(out, name), 'utf8');
  } catch {
    return null;
  }
};
const json = (name) => {
  const text = read(name);
  if (text === null) return null;
  try {
    return JSON.parse(text.trim().split('\n').pop());
  } catch {
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }
};

// The verdict of a check program: its "N checks, M failed: ..." line, else its last line.
function checkLine(name) {
  const text = read(name);
  if (text === null) return 'not run';
  const summary = text.match(/^\d+ checks, \d+ failed: .*$/m);
  if (summary) return summary[0];
  const lines = text.trim().split('\n');
  return `did not finish: ${lines[lines.length - 1] || '(no output)'}`;
}

function testsLine() {
  const tap = read('tests.tap');
  if (tap === null) return 'not run';
  const count = (re) => (tap.match(re) || []).length;
  const failed = tap.split('\n').filter((l) => /^not ok/.test(l));
  return `passed ${count(/^ok(?!.*# SKIP)/gm)}, failed ${failed.length}, skipped ${count(/# SKIP/g)}` +
    (failed.length ? `: ${failed.slice(0, 3).map((l) => l.replace(/^not ok \d+ - /, '')).join('; ')}` : '');
}

const rows = [];
const row = (what, value) => rows.push([what, value]);
row('GPU', (read('gpu.txt') || 'not run').trim().split('\n')[0]);
row('engine ops, CUDA vs CPU', checkLine('engine_ops_check.txt'));
row('forward pass, CUDA vs CPU', checkLine('model_check.txt'));
row('tests, CUDA forced', testsLine());

const bench = json('gpu-bench.json');
const f = (x, digits = 0) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '?');
if (bench && bench.steer) {
  const s = bench.steer;
  row('steer [20,192,4096] bf16', `${f(s.steerUs, 1)} us, ${f(100 * s.fractionOfCopyBandwidth)}% of copy bandwidth (target >= 70%)`);
} else row('steer [20,192,4096] bf16', 'not measured');
const hf = json('transformers.json');
const hfRate = (batch) => hf && Array.isArray(hf.transformers) ? (hf.transformers.find((r) => r.batch === batch) || {}).tokensPerSecond : undefined;
if (bench && bench.decode && Array.isArray(bench.decode.runs)) {
  const d = bench.decode;
  for (const r of d.runs) {
    const plain = d.runs.find((p) => p.batch === r.batch && !p.steered);
    let anchor;
    if (r.steered) anchor = `${f(100 * (plain.tokensPerSecond / r.tokensPerSecond - 1), 1)}% slower than off (target <= 3%)`;
    else if (r.batch === 1) anchor = `${f(100 * r.tokensPerSecond / d.floorTokensPerSecondBatch1)}% of the floor (target >= 75%)`;
    else anchor = hfRate(r.batch) ? `${f(r.tokensPerSecond / hfRate(r.batch), 1)}x transformers (target >= 5x)` : 'transformers not measured';
    row(`decode 7B bf16, batch ${r.batch}${r.steered ? ', steered' : ''}`, `${f(r.tokensPerSecond)} tokens/s, ${anchor}`);
  }
} else row('decode 7B bf16', 'not measured');
if (hf && Array.isArray(hf.transformers))
  row('transformers generate', hf.transformers.map((r) => `batch ${r.batch}: ${f(r.tokensPerSecond)} tokens/s`).join(', '));
const hdr = json('hdr-7b.json');
const hdrRead = read('hdr-read.txt');
if (hdr) row('HDR 7B, --device cuda', `${f(hdr.seconds && hdr.seconds.total, 2)} s on ${hdr.backend}; ${hdrRead ? hdrRead.trim() : 'read time not measured'}`);

const width = Math.max(...rows.map((r) => r[0].length));
console.log('== summary');
for (const [what, value] of rows) console.log(`${what.padEnd(width)}  ${value}`);
