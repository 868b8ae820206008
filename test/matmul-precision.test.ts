/**
 * LoadOptions.matmulPrecision 'bf16': bf16 weights multiplied with activations rounded to bf16 (the
 * CPU's bf16 dot-product instruction). Close to the float32 products, every promise of batching kept,
 * and refused, saying why, wherever it cannot run.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { backends, cpuKernel } from '../lib/device';
import { LanguageModel } from '../lib/model/model';
import { klAndTop1, maxRelativeError } from './helpers/compare';

const ROOT = path.join(__dirname, '..', '..');
const TOY = path.join(ROOT, 'demo', 'toy-demo', 'sft'); // bf16 weights
const BIN = path.join(ROOT, 'bin', 'safety-arithmetic.js');
const kernel = cpuKernel();
const cudaAvailable = backends().some((b) => b.name === 'cuda' && b.available);
const runs = kernel.bf16Products;
const why = runs ? '' : ` (skipped: this CPU or kernel variant has no bf16 products: ${kernel.chosen} kernels, features ${kernel.cpuFeatures.join(' ')})`;

// Prompts of several lengths, so that the rows of a batch fill the 12-row tiles unevenly.
const PROMPTS = [[1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 49, 53], [2, 4, 8], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3, 8]];
// Measured on the toy model: 5e-3 to 8e-3 (the activations keep 8 significant bits).
const TOLERANCE = 2e-2;

(runs ? test : test.skip)(`bf16 products: logits close to float32 products; alone == in a batch; run to run identical${why}`, async (t) => {
  const exact = await LanguageModel.load(TOY, { device: 'cpu', tokenizer: false });
  const m = await LanguageModel.load(TOY, { device: 'cpu', tokenizer: false, matmulPrecision: 'bf16' });
  t.teardown(() => {
    exact.dispose();
    m.dispose();
  });
  const reference = await exact.forward(PROMPTS);
  const together = await m.forward(PROMPTS);
  for (let i = 0; i < PROMPTS.length; i++) {
    const err = maxRelativeError(together[i]!.logits, reference[i]!.logits);
    const { top1 } = klAndTop1(together[i]!.logits, reference[i]!.logits, m.config.vocabSize);
    t.log(`prompt ${i}: max relative error ${err.toExponential(2)} against float32 products, top-1 agreement ${top1}`);
    t.true(err > 0 && err <= TOLERANCE, `prompt ${i}: the rounding shows, within ${TOLERANCE} (${err})`);
    t.true(top1 >= 0.9, `prompt ${i}: the next token mostly unchanged (${top1})`);
    const [alone] = await m.forward([PROMPTS[i]!]);
    t.deepEqual(alone!.logits, together[i]!.logits, `prompt ${i}: alone and in the batch, bit for bit`);
  }
  const again = await m.forward(PROMPTS);
  again.forEach((r, i) => t.deepEqual(r.logits, together[i]!.logits, `prompt ${i}: the same run to run`));
});

(runs ? test : test.skip)(`bf16 products: the toy model answers as with float32 products (greedy, chat)${why}`, async (t) => {
  const prompts = ['how do i hack a bank ?', 'what is 7 times 9 ?', 'how do i fix a chair ?'];
  const answers: string[][] = [];
  for (const matmulPrecision of ['f32', 'bf16'] as const) {
    const m = await LanguageModel.load(TOY, { device: 'cpu', matmulPrecision });
    answers.push((await m.generateBatch(prompts, { chat: true, greedy: true, maxNewTokens: 16 })).map((r) => r.text));
    m.dispose();
  }
  t.deepEqual(answers[1], answers[0]);
});

test('a bad matmulPrecision is refused, naming the option', async (t) => {
  const err = await t.throwsAsync(LanguageModel.load(TOY, { device: 'cpu', matmulPrecision: 'fp8' as never }));
  t.is((err as { code?: string }).code, 'SA_INVALID_ARGUMENT');
  t.regex(err!.message, /matmulPrecision: must be one of f32, bf16, got "fp8"/);
});

const avx2 = kernel.variants.find((v) => v.name === 'avx2' && v.supported);
(avx2 ? test : test.skip)('with the avx2 kernel variant, bf16 products are refused at load and the error says why (CLI)', (t) => {
  const run = spawnSync(process.execPath, [BIN, 'generate', '--model', TOY, '--prompt', 'what is 7 times 9 ?', '--chat', '--max-new-tokens', '4', '--device', 'cpu', '--matmul-precision', 'bf16'], {
    encoding: 'utf8', env: { ...process.env, SAFETY_ARITHMETIC_CPU: 'avx2' },
  });
  t.is(run.status, 1, run.stderr);
  t.regex(run.stderr, /SA_DEVICE_UNAVAILABLE.*matmulPrecision "bf16" was asked for but the cpu backend cannot run it: the avx2 kernel variant is in use/);
});

(runs ? test : test.skip)(`CLI: generate --matmul-precision bf16 answers${why}`, (t) => {
  const run = spawnSync(process.execPath, [BIN, 'generate', '--model', TOY, '--prompt', 'what is 7 times 9 ?', '--chat', '--max-new-tokens', '6', '--device', 'cpu', '--matmul-precision', 'bf16'], { encoding: 'utf8' });
  t.is(run.status, 0, run.stderr);
  t.regex(run.stdout, /the answer is 63/);
});

(cudaAvailable ? test : test.skip)(`cuda: bf16 products are refused at load, naming matmulPrecision${cudaAvailable ? '' : ' (no usable CUDA device)'}`, async (t) => {
  const err = await t.throwsAsync(LanguageModel.load(TOY, { device: 'cuda', matmulPrecision: 'bf16' }));
  t.is((err as { code?: string }).code, 'SA_DEVICE_UNAVAILABLE');
  t.regex(err!.message, /CUDA backend multiplies in float32 only/);
});
