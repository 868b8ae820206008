/**
 * eval end to end on the toy family: the CLI and the API reproduce the toy README's reference results
 * (attack success, over-safety, multiplication) and report how many harmful requests are refused.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { align } from '../lib/align';
import { evaluate } from '../lib/eval/evaluate';
import type { AnswerRecord } from '../lib/eval/metrics';
import { tmpDir } from './helpers/checkpoints';

const ROOT = path.join(__dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'safety-arithmetic.js');
const TOY = path.join(ROOT, 'demo', 'toy-demo');
const SETS = { harmful: path.join(TOY, 'eval', 'harmful.jsonl'), benign: path.join(TOY, 'eval', 'benign.jsonl'), utility: path.join(TOY, 'eval', 'utility.jsonl') };
const work = tmpDir('sa-eval-');
const aligned = path.join(work, 'sft-lambda2');
const r4 = (x: number | null | undefined) => (x == null ? null : Number(x.toFixed(4)));

test.before(async () => {
  // README "Reference results": sft, TIES top-k 10%, lambda 2, with the ICV of the patched model (from the toy's demos) at alpha 1.
  await align({ base: path.join(TOY, 'base'), harmful: path.join(TOY, 'harmful'), target: path.join(TOY, 'sft'), out: aligned, mode: 'ties', topK: 10, lambda: 2, alpha: 1, demos: path.join(TOY, 'demos.jsonl') });
});
test.after.always(() => fs.rmSync(work, { recursive: true, force: true }));

test('eval CLI: the target and the aligned model side by side reproduce the README rows, with their refusal rates', (t) => {
  const out = path.join(work, 'report-cli');
  const r = spawnSync(process.execPath, [BIN, 'eval', '--model', path.join(TOY, 'sft'), '--model', aligned, '--harmful', SETS.harmful, '--benign', SETS.benign, '--utility', SETS.utility, '--out', out], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /harmful refused/);
  t.regex(r.stdout, new RegExp(`open ${path.join(out, 'report.html').replace(/[/\\.]/g, '\\$&')}`));
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  const [before, after] = summary.settings;
  // The aligned folder's own ICV steers it at its stored alpha (1); the SFT folder has none (alpha 0).
  t.deepEqual([before.label, before.alpha, after.label, after.alpha], ['sft alpha 0', 0, 'sft-lambda2 alpha 1', 1]);
  t.deepEqual([r4(before.headline.attackSuccess.rate), before.headline.overSafety.rate, before.headline.utility.rate], [0.4423, 0, 1]);
  t.deepEqual([after.headline.attackSuccess.rate, after.headline.overSafety.rate, after.headline.utility.rate], [0, 0, 1]);
  const records = fs.readFileSync(path.join(out, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as AnswerRecord);
  t.is(records.length, 2 * (52 + 52 + 60));
  for (const s of summary.settings) {
    const harmful = records.filter((x) => x.setting === s.label && x.kind === 'harmful');
    const refused = harmful.filter((x) => x.verdict === 'refused').length;
    const broken = harmful.filter((x) => x.verdict === 'broken').length;
    t.is(s.headline.harmfulRefused.k, refused);
    t.is(s.headline.harmfulBroken.k, broken);
    t.is(s.headline.attackSuccess.k + refused + broken, 52);
    t.log(`${s.label}: harmful refused ${refused}/52, complied ${s.headline.attackSuccess.k}/52, broken ${broken}/52`);
  }
  // Where the aligned model stopped complying, the metrics say what it did instead.
  t.true(after.headline.harmfulRefused.k + after.headline.harmfulBroken.k === 52);
  const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
  t.false(/<(link|img)[^>]+(src|href)=["']?https?:/i.test(html), 'the report fetches nothing');
  t.is((html.match(/<rect class="bar"/g) ?? []).length, 6 * 2);
});

test('evaluate API: alpha 0 on the patched model reproduces lambda 2 alpha 0 (ASR 0.0385), no output folder needed', async (t) => {
  const { summary, records } = await evaluate({ models: [{ dir: aligned, alphas: [0] }], prompts: SETS, maxNewTokens: 24 });
  const [s] = summary.settings;
  t.is(summary.out, null);
  t.deepEqual([r4(s!.headline.attackSuccess!.rate), s!.headline.overSafety!.rate, s!.headline.utility!.rate], [0.0385, 0, 1]);
  t.is(s!.icv, null);
  t.is(records.length, 164);
});

test('eval: an alpha without an ICV, an existing output and a missing prompt set are refused before any generation', async (t) => {
  const noIcv = await t.throwsAsync(evaluate({ models: [path.join(TOY, 'sft')], alphas: [0, 1], prompts: SETS }));
  t.is((noIcv as { code?: string }).code, 'SA_INVALID_ARGUMENT');
  t.regex(noIcv!.message, /has no icv\.safetensors.*alpha 1 needs one/);
  const exists = await t.throwsAsync(evaluate({ models: [aligned], prompts: SETS, out: work }));
  t.is((exists as { code?: string }).code, 'SA_OUTPUT_INSIDE_INPUT');
  const missing = await t.throwsAsync(evaluate({ models: [aligned], prompts: { harmful: path.join(work, 'nope.jsonl') } }));
  t.is((missing as { code?: string }).code, 'SA_IO');
  t.regex(missing!.message, /nope\.jsonl/);
  const r = spawnSync(process.execPath, [BIN, 'eval', '--model', aligned, '--out', path.join(work, 'x')], { encoding: 'utf8' });
  t.is(r.status, 2);
  t.regex(r.stderr, /eval needs a prompt set: --harmful FILE\.jsonl/);
  t.false(fs.existsSync(path.join(work, 'x')));
});
