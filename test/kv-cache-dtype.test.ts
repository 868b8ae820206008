/**
 * LoadOptions.kvCacheDtype: a bf16 or f16 KV cache halves the cache and stays close to the float32
 * cache (golden llama-tiny), keeps every promise of batching, and is refused where it cannot run.
 */
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { backends } from '../lib/device';
import { LanguageModel } from '../lib/model/model';
import { klAndTop1, maxRelativeError } from './helpers/compare';

const ROOT = path.join(__dirname, '..', '..');
const G = path.join(ROOT, 'test', 'fixtures', 'llama-tiny');
const TOY = path.join(ROOT, 'demo', 'toy-demo', 'sft');
const BIN = path.join(ROOT, 'bin', 'safety-arithmetic.js');
const seqs = (JSON.parse(fs.readFileSync(path.join(G, 'manifest.json'), 'utf8')) as { forward: { sequences: number[][] } }).forward.sequences;
const cudaAvailable = backends().some((b) => b.name === 'cuda' && b.available);

// Measured on the fixture: about 3e-3 (bf16, 8 significant bits) and 4e-4 (f16, 11).
const TOLERANCE = { bf16: 1e-2, f16: 2e-3 };

for (const dtype of ['bf16', 'f16'] as const) {
  test(`cpu ${dtype} cache: half the bytes per token; logits close to the float32 cache; alone == in a batch; prefill == decode`, async (t) => {
    const exact = await LanguageModel.load(path.join(G, 'model'), { device: 'cpu', weights: 'float32' });
    const m = await LanguageModel.load(path.join(G, 'model'), { device: 'cpu', weights: 'float32', kvCacheDtype: dtype });
    t.teardown(() => {
      exact.dispose();
      m.dispose();
    });
    t.is(m.generationStats().kvBytesPerToken * 2, exact.generationStats().kvBytesPerToken);
    const reference = await exact.forward(seqs);
    const together = await m.forward(seqs);
    for (let i = 0; i < seqs.length; i++) {
      const err = maxRelativeError(together[i]!.logits, reference[i]!.logits);
      const { top1 } = klAndTop1(together[i]!.logits, reference[i]!.logits, m.config.vocabSize);
      t.log(`seq${i}: max relative error ${err.toExponential(2)} against the float32 cache, top-1 agreement ${top1}`);
      t.true(err > 0 && err <= TOLERANCE[dtype], `seq${i}: the rounding shows, within ${TOLERANCE[dtype]} (${err})`);
      t.true(top1 >= 0.9, `seq${i}: the next token mostly unchanged (${top1})`);
      const [alone] = await m.forward([seqs[i]!]);
      t.deepEqual(alone!.logits, together[i]!.logits, `seq${i}: alone and in the batch, bit for bit`);
    }
    const seq = seqs[2]!;
    const nm = (m as unknown as { nativeModel: import('../lib/native').NativeModel }).nativeModel;
    const session = nm.createSession();
    const V = m.config.vocabSize;
    for (let p = 0; p < seq.length; p++) {
      const [r] = await nm.forward([{ tokens: Int32Array.of(seq[p]!), session }], { lastOnly: true, layerOut: false, mlpOut: false });
      const err = maxRelativeError(r!.logits, together[2]!.logits.subarray(p * V, (p + 1) * V));
      t.true(err <= 1e-5, `position ${p}: ${err}`);
    }
  });
}

test('the toy model answers the same with a bf16 cache; a bad kvCacheDtype is refused, naming the option', async (t) => {
  const prompts = ['how do i hack a bank ?', 'what is 7 times 9 ?', 'how do i fix a chair ?'];
  const answers: string[][] = [];
  for (const kvCacheDtype of ['f32', 'bf16'] as const) {
    const m = await LanguageModel.load(TOY, { device: 'cpu', kvCacheDtype });
    answers.push((await m.generateBatch(prompts, { chat: true, greedy: true, maxNewTokens: 16 })).map((r) => r.text));
    m.dispose();
  }
  t.deepEqual(answers[1], answers[0]);
  const err = await t.throwsAsync(LanguageModel.load(TOY, { device: 'cpu', kvCacheDtype: 'q8' as never }));
  t.is((err as { code?: string }).code, 'SA_INVALID_ARGUMENT');
  t.regex(err!.message, /kvCacheDtype: must be one of f32, bf16, f16, got "q8"/);
});

test('CLI: generate --kv-cache-dtype bf16 answers; a bad value exits 1 naming it', (t) => {
  const run = (dtype: string) => spawnSync(process.execPath, [BIN, 'generate', '--model', TOY, '--prompt', 'what is 7 times 9 ?', '--chat', '--max-new-tokens', '6', '--device', 'cpu', '--kv-cache-dtype', dtype], { encoding: 'utf8' });
  const ok = run('bf16');
  t.is(ok.status, 0, ok.stderr);
  t.regex(ok.stdout, /the answer is 63/);
  const bad = run('int4');
  t.is(bad.status, 1, bad.stderr);
  t.regex(bad.stderr, /kvCacheDtype: must be one of f32, bf16, f16, got "int4"/);
});

(cudaAvailable ? test : test.skip)(`cuda: a bf16 cache is refused at load, naming kvCacheDtype${cudaAvailable ? '' : ' (no usable CUDA device)'}`, async (t) => {
  const err = await t.throwsAsync(LanguageModel.load(path.join(G, 'model'), { device: 'cuda', kvCacheDtype: 'bf16' }));
  t.is((err as { code?: string }).code, 'SA_INVALID_ARGUMENT');
  t.regex(err!.message, /cuda backend cannot keep the KV cache in bf16/);
});
