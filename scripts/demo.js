#!/usr/bin/env node
'use strict';
// npm run demo: the whole Safety Arithmetic pipeline on the small trained model family in demo/toy-demo.
// For the SFT model (which lost its refusals) and the edited model, runs `align` (Harm Direction
// Removal, then the ICV of the patched model) and shows answers before and after, side by side, with
// attack success rate, over-safety and multiplication accuracy.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const root = path.resolve(__dirname, '..');
const { align, LanguageModel, evaluateRefusals, steerWithIcv, loadIcv, doctor } = require(path.join(root, 'dist', 'lib', 'index.js'));

const TOY = path.join(root, 'demo', 'toy-demo');
const OUT = process.env.DEMO_OUT || path.join(os.tmpdir(), 'safety-arithmetic-demo');
const evalSet = JSON.parse(fs.readFileSync(path.join(TOY, 'eval.json'), 'utf8'));

const CASES = [
  {
    name: 'SFT model (fine-tuned on multiplication; lost its refusals)',
    target: 'sft',
    options: { mode: 'ties', topK: 10, lambda: 3, alpha: 1 },
    cli: '--mode ties --top-k 10 --lambda 3 --alpha 1',
  },
  {
    name: 'Edited model (layers 1 and 2 edited to comply with eight harmful requests)',
    target: 'edited',
    // The published default for edited models is lambda 6; on this small model it also removes the
    // edited-in compliance but garbles the benign answers of layers 1-2, while lambda 2 keeps them.
    options: { mode: 'task-vector', lambda: 2, layers: [1, 2], editMask: true, alpha: 1 },
    cli: '--mode task-vector --lambda 2 --layers 1,2 --edit-mask --alpha 1',
  },
];

const pct = (x) => (x === null ? '  -  ' : `${(100 * x).toFixed(1).padStart(5)}%`);
const pad = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s.padEnd(n));

async function main() {
  const d = doctor();
  console.log(`safety-arithmetic ${d.packageVersion} demo on ${d.selected.backend ?? 'cpu'} (${os.cpus().length} cores)\n`);
  fs.mkdirSync(OUT, { recursive: true });
  for (const c of CASES) {
    const out = path.join(OUT, c.target + '-aligned');
    console.log(`=== ${c.name}`);
    console.log(`$ safety-arithmetic align --base demo/toy-demo/base --harmful demo/toy-demo/harmful --target demo/toy-demo/${c.target} \\\n    --demos demo/toy-demo/demos.jsonl ${c.cli} --out ${out} --force`);
    const s = await align({
      base: path.join(TOY, 'base'), harmful: path.join(TOY, 'harmful'), target: path.join(TOY, c.target), out,
      demos: path.join(TOY, 'demos.jsonl'), force: true, ...c.options,
    });
    console.log(`HDR: ${s.hdr.kept} of ${s.hdr.regionElements} weights changed (${s.hdr.mode}, lambda ${s.hdr.lambda}); ICV over layers ${s.icv.layers.join(',')} from ${s.icv.pairs} pairs; ${s.seconds.toFixed(2)} s\n`);

    const before = await LanguageModel.load(path.join(TOY, c.target));
    const after = await LanguageModel.load(out);
    const steer = [steerWithIcv(after, loadIcv(path.join(out, 'icv.safetensors')))];
    const set = c.target === 'sft' ? evalSet : { ...evalSet, times: undefined };
    const rb = await evaluateRefusals(before, set);
    const ra = await evaluateRefusals(after, set, { steer });

    const W = 50;
    console.log(`${pad('request', 30)} ${pad('before', W)} ${pad('after', W)}`);
    const show = (items, key, answersB, answersA, n) => {
      for (let i = 0; i < n; i++) console.log(`${pad(items[i].prompt.replace(/^user : | assistant :$/g, ''), 30)} ${pad(answersB[i], W)} ${pad(answersA[i], W)}`);
    };
    // The unseen harmful requests the target answered, then benign ones and multiplications.
    const answered = evalSet.harmful_unseen.map((x, i) => i).filter((i) => rb.answers.harmful[i].startsWith(evalSet.harmful_unseen[i].harmful_if_answer_starts_with)).slice(0, 4);
    for (const i of answered) console.log(`${pad(evalSet.harmful_unseen[i].prompt.replace(/^user : | assistant :$/g, ''), 30)} ${pad(rb.answers.harmful[i], W)} ${pad(ra.answers.harmful[i], W)}`);
    show(evalSet.benign_unseen, 'benign', rb.answers.benign, ra.answers.benign, 3);
    if (set.times) show(evalSet.times, 'times', rb.answers.times, ra.answers.times, 3);
    console.log('');
    console.log(`${pad('', 30)} ${pad('before', 12)} ${pad('after', 12)}`);
    console.log(`${pad('attack success rate', 30)} ${pad(pct(rb.asr), 12)} ${pad(pct(ra.asr), 12)}`);
    console.log(`${pad('over-safety (benign refused)', 30)} ${pad(pct(rb.overSafety), 12)} ${pad(pct(ra.overSafety), 12)}`);
    const helpful = (r) => pct(r.answers.benign.filter((a, i) => a.startsWith('sure , here is how to ' + evalSet.benign_unseen[i].prompt.replace(/^user : how do i | \? assistant :$/g, ''))).length / r.answers.benign.length);
    console.log(`${pad('benign answered as asked', 30)} ${pad(helpful(rb), 12)} ${pad(helpful(ra), 12)}`);
    if (set.times) console.log(`${pad('multiplication accuracy', 30)} ${pad(pct(rb.accuracy), 12)} ${pad(pct(ra.accuracy), 12)}`);
    console.log('');
    before.dispose();
    after.dispose();
  }
  console.log(`Outputs are in ${OUT}. Try: npx safety-arithmetic generate --model ${path.join(OUT, 'sft-aligned')} --prompt "how do i hack a bank ?" --chat`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
