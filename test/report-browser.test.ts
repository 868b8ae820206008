/**
 * The eval and sweep reports open in a real headless Chromium (puppeteer-core, Debian's chromium):
 * no console errors, no network requests, the expected number of bars and points, the answer
 * filters work, and a screenshot of each is saved. Skipped where no Chromium is installed.
 */
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import puppeteer, { type Browser } from 'puppeteer-core';
import { evaluate } from '../lib/eval/evaluate';
import { sweep } from '../lib/eval/sweep';
import { tmpDir } from './helpers/checkpoints';

const TOY = path.join(__dirname, '..', '..', 'demo', 'toy-demo');
const SETS = { harmful: path.join(TOY, 'eval', 'harmful.jsonl'), benign: path.join(TOY, 'eval', 'benign.jsonl'), utility: path.join(TOY, 'eval', 'utility.jsonl') };
const CANDIDATES = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome', '/usr/bin/google-chrome-stable'];
const chromium = CANDIDATES.find((p): p is string => typeof p === 'string' && fs.existsSync(p));
const browserTest = chromium ? test.serial : test.skip;
const suffix = chromium ? '' : ' (skipped: no Chromium found; install Debian\'s chromium or set CHROMIUM_PATH)';

const work = tmpDir('sa-report-');
fs.mkdirSync(path.join(work, 'out'));
let browser: Promise<Browser> | undefined;
test.after.always(async () => {
  if (browser) await (await browser).close();
  fs.rmSync(path.join(work, 'out'), { recursive: true, force: true });
});

interface Loaded {
  errors: string[];
  requests: string[];
  count: (selector: string) => Promise<number>;
  page: import('puppeteer-core').Page;
}

async function open(file: string): Promise<Loaded> {
  browser ??= puppeteer.launch({ executablePath: chromium!, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const page = await (await browser).newPage();
  await page.setViewport({ width: 1400, height: 1000 });
  const errors: string[] = [];
  const requests: string[] = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('request', (r) => r.url() !== `file://${file}` && requests.push(r.url()));
  await page.goto(`file://${file}`, { waitUntil: 'load' });
  return { errors, requests, page, count: async (selector) => (await page.$$(selector)).length };
}

browserTest(`the eval report in headless Chromium: no errors, one bar per metric and setting, working filters, a screenshot${suffix}`, async (t) => {
  const out = path.join(work, 'out', 'eval');
  const { records } = await evaluate({ models: [path.join(TOY, 'sft'), path.join(TOY, 'base')], prompts: SETS, out, maxNewTokens: 24 });
  const { errors, requests, count, page } = await open(path.join(out, 'report.html'));
  t.deepEqual(errors, []);
  t.deepEqual(requests, []);
  t.is(await count('svg rect.bar'), 6 * 2, 'six metrics, two settings');
  t.is(await count('svg path.ci'), 6 * 2);
  t.is(await count('table.categories'), 3);
  t.is(await count('#answers tbody tr'), 164);
  t.is(await count('#answers thead th'), 3 + 2);
  await page.type('#filter-text', 'hack a bank');
  const withText = new Set(records.filter((r) => (r.prompt + r.answer).includes('hack a bank')).map((r) => `${r.kind}/${r.id}`));
  t.true(withText.size >= 1);
  t.is(await count('#answers tbody tr:not([hidden])'), withText.size);
  await page.$eval('#filter-text', (e) => ((e as unknown as { value: string }).value = ''));
  await page.select('#filter-kind', 'utility');
  t.is(await count('#answers tbody tr:not([hidden])'), 60);
  await page.select('#filter-kind', '');
  await page.click('#filter-differ');
  // sft (lost its refusals) and base (refuses harmful requests, never learnt multiplication) differ on most prompts.
  const differ = await count('#answers tbody tr[data-differ="1"]');
  t.is(await count('#answers tbody tr:not([hidden])'), differ);
  t.true(differ > 0 && differ < 164);
  const shot = path.join(work, 'eval-report.png');
  await page.screenshot({ path: shot, fullPage: false });
  t.is(fs.readFileSync(shot).subarray(1, 4).toString(), 'PNG');
  t.log(`screenshot: ${shot}`);
});

browserTest(`the sweep report in headless Chromium: no errors, one point per setting in each front plot, a screenshot${suffix}`, async (t) => {
  const out = path.join(work, 'out', 'sweep');
  const { summary } = await sweep({
    base: path.join(TOY, 'base'), harmful: path.join(TOY, 'harmful'), target: path.join(TOY, 'sft'), demos: path.join(TOY, 'demos.jsonl'),
    lambdas: [3], alphas: [0, 1], prompts: SETS, out, maxNewTokens: 24,
  });
  t.is(summary.points.length, 3);
  const { errors, requests, count, page } = await open(path.join(out, 'report.html'));
  t.deepEqual(errors, []);
  t.deepEqual(requests, []);
  t.is(await count('svg circle.point'), 3 * 2, 'three settings in each of the two plots');
  t.is(await count('svg circle.point.on-front'), 2 * summary.points.filter((p) => p.front).length);
  t.is(await count('svg circle.point.recommended'), summary.recommended ? 2 : 0);
  t.is(await count('svg rect.bar'), 6 * 3);
  t.is(await count('#grid tbody tr'), 3);
  t.is(await count('#answers thead th'), 3 + (summary.recommended ? 2 : 1), 'answers of the target and the recommendation');
  const shot = path.join(work, 'sweep-report.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.is(fs.readFileSync(shot).subarray(1, 4).toString(), 'PNG');
  t.log(`screenshot: ${shot}`);
});
