/**
 * sweep end to end on the toy family: the grid reproduces the toy README's SFT rows (lambda 0, 2, 3 x
 * alpha 0, 1), reports the harmful-refused rate, computes the harm vector once, keeps no patched
 * model, and recommends an align command by its stated rule.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { sweep, paretoFront, recommend, type SweepPoint } from '../lib/eval/sweep';
import type { Headline } from '../lib/eval/metrics';
import { wilson } from '../lib/eval/stats';
import { tmpDir } from './helpers/checkpoints';

const ROOT = path.join(__dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'safety-arithmetic.js');
const TOY = path.join(ROOT, 'demo', 'toy-demo');
const work = tmpDir('sa-sweep-');
test.after.always(() => fs.rmSync(work, { recursive: true, force: true }));

// README "Reference results", sft rows: lambda, alpha, ASR (over-safety 0 and multiplication 1 in every row).
const README: [number, number, number][] = [[0, 0, 0.4423], [0, 1, 0.4038], [2, 0, 0.0385], [2, 1, 0], [3, 0, 0], [3, 1, 0]];

test('sweep CLI on the toy SFT model: the README table, the refusal rate, one harm vector, nothing patched kept, a recommendation', (t) => {
  const out = path.join(work, 'sweep');
  const r = spawnSync(process.execPath, [BIN, 'sweep', '--base', path.join(TOY, 'base'), '--harmful', path.join(TOY, 'harmful'), '--target', path.join(TOY, 'sft'),
    '--demos', path.join(TOY, 'demos.jsonl'), '--lambda', '0,2,3', '--top-k', '10', '--alpha', '0,1',
    '--harmful-set', path.join(TOY, 'eval', 'harmful.jsonl'), '--benign-set', path.join(TOY, 'eval', 'benign.jsonl'), '--utility-set', path.join(TOY, 'eval', 'utility.jsonl'), '--out', out], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const s = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  t.deepEqual(s.points.map((p: SweepPoint) => [p.lambda, p.alpha, Number(p.headline.attackSuccess!.rate!.toFixed(4))]), README);
  for (const p of s.points as SweepPoint[]) {
    t.is(p.headline.overSafety!.rate, 0, p.label);
    t.is(p.headline.utility!.rate, 1, p.label);
    t.is(p.headline.harmfulRefused!.n, 52);
    t.is(p.headline.attackSuccess!.k + p.headline.harmfulRefused!.k + p.headline.harmfulBroken!.k, 52);
    t.log(`${p.label}: ASR ${p.headline.attackSuccess!.rate!.toFixed(4)}, harmful refused ${p.headline.harmfulRefused!.k}/52, broken ${p.headline.harmfulBroken!.k}/52, benign broken ${p.headline.benignBroken!.k}/52`);
  }
  t.deepEqual(s.work, { harmVectors: 1, patchedModels: 2, icvs: 3 });
  t.deepEqual(fs.readdirSync(out).sort(), ['report.html', 'results.jsonl', 'summary.json'], 'no patched model, harm vector or staging folder is left');
  t.deepEqual(fs.readdirSync(work).sort(), ['sweep']);
  // The front: attack success 0 with over-safety 0 and utility 1, which the three zero-ASR settings share.
  t.deepEqual(s.points.filter((p: SweepPoint) => p.front).map((p: SweepPoint) => p.label), ['lambda 2 top-k 10 alpha 1', 'lambda 3 top-k 10 alpha 0', 'lambda 3 top-k 10 alpha 1']);
  // The rule: ASR 0 for three settings, none refuses, and lambda 2 alpha 1 leaves the fewest benign answers broken.
  const benignBroken = (label: string) => s.points.find((p: SweepPoint) => p.label === label).headline.benignBroken.k;
  t.true(benignBroken('lambda 2 top-k 10 alpha 1') < Math.min(benignBroken('lambda 3 top-k 10 alpha 0'), benignBroken('lambda 3 top-k 10 alpha 1')));
  t.is(s.recommended.label, 'lambda 2 top-k 10 alpha 1');
  t.regex(s.recommended.command, /^safety-arithmetic align --base \S+base --harmful \S+harmful --target \S+sft --demos \S+demos\.jsonl --mode ties --top-k 10 --lambda 2 --alpha 1 --out \S+sft-safe$/);
  t.regex(r.stdout, /recommended: lambda 2 top-k 10 alpha 1\n {2}safety-arithmetic align /);
  t.regex(r.stdout, /rule: Among the settings whose utility accuracy/);
  const lines = fs.readFileSync(path.join(out, 'results.jsonl'), 'utf8').trim().split('\n');
  t.is(lines.length, 6 * 164);
});

const h = (asr: number, over: number, util: number, refused = 0): Headline => ({
  attackSuccess: wilson(asr, 10), harmfulRefused: wilson(refused, 10), harmfulBroken: wilson(10 - asr - refused, 10), overSafety: wilson(over, 10), benignBroken: wilson(0, 10), utility: wilson(util, 10),
});
const point = (lambda: number, alpha: number, headline: Headline): SweepPoint => ({ label: `l${lambda} a${alpha}`, lambda, topK: 10, alpha, headline, metrics: { harmful: null, benign: null, utility: null, categories: [] }, front: false });

test('Pareto front and the recommendation rule on fixed points', (t) => {
  const base = point(0, 0, h(6, 0, 10));
  const pts = [base, point(1, 0, h(3, 0, 10)), point(2, 0, h(1, 0, 9, 4)), point(3, 0, h(1, 0, 9, 6)), point(4, 0, h(0, 3, 10)), point(5, 0, h(2, 1, 8))];
  // l2 and l3 are equal on the three objectives (refusals are not one), so neither beats the other; l5 is beaten by l2.
  t.deepEqual(paretoFront(pts.map((p) => p.headline)), [false, true, true, true, true, false]);
  // l4 has ASR 0 but over-safety +30 points; l2 and l3 tie on ASR and lose 10 points of utility: allowed at 0.1, and l3 refuses more.
  t.is(recommend(pts, base, 0.05, 0.05)!.label, 'l1 a0');
  t.is(recommend(pts, base, 0.1, 0.05)!.label, 'l3 a0');
  t.is(recommend(pts, base, 0.1, 0.3)!.label, 'l4 a0');
  t.is(recommend([base, point(1, 0, h(6, 0, 10))], base, 0.05, 0.05), null, 'nothing that does not lower attack success is recommended');
});

test('sweep refuses bad grids and missing prompt sets before any work', async (t) => {
  const o = { base: path.join(TOY, 'base'), harmful: path.join(TOY, 'harmful'), target: path.join(TOY, 'sft'), out: path.join(work, 'bad'), prompts: { harmful: path.join(TOY, 'eval', 'harmful.jsonl') } };
  await t.throwsAsync(sweep({ ...o, mode: 'task-vector', topKs: [10] }), { message: /topKs: applies to mode ties only/ });
  await t.throwsAsync(sweep({ ...o, lambdas: [-1] }), { message: /lambdas: -1 is not a lambda >= 0/ });
  await t.throwsAsync(sweep({ ...o, topKs: [0] }), { message: /topKs: 0 is not a percent/ });
  await t.throwsAsync(sweep({ ...o, alphas: [1, 1] }), { message: /alphas: lists a value twice/ });
  await t.throwsAsync(sweep({ ...o, prompts: { benign: path.join(TOY, 'eval', 'benign.jsonl') } }), { message: /needs a harmful prompt set/ });
  await t.throwsAsync(sweep({ ...o, out: path.join(TOY, 'sft', 'x') }), { code: 'SA_OUTPUT_INSIDE_INPUT' } as never);
  t.false(fs.existsSync(o.out));
});
