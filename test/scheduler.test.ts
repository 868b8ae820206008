/** Continuous batching: concurrent generations share the engine's steps and get what they would alone. */
import test from 'ava';
import path from 'node:path';
import { LanguageModel, type GenerateResult } from '../lib/model/model';

const TOY = path.join(__dirname, '..', '..', 'demo', 'toy-demo', 'sft');
const prompts = ['how do i fix a car ?', 'what is 7 times 9 ?', 'how do i hack a bank ?', 'what is 3 times 4 ?', 'how do i paint a house ?'];

test('concurrent generate calls give the tokens they give one after another, in shared steps', async (t) => {
  const m = await LanguageModel.load(TOY);
  t.teardown(() => m.dispose());
  const alone: GenerateResult[] = [];
  for (const p of prompts) alone.push(await m.generateText(p, { chat: true, maxNewTokens: 20 }));
  const before = m.generationStats();
  const together = await Promise.all(prompts.map((p, i) => m.generateText(p, { chat: true, maxNewTokens: 20, ...(i === 4 ? { temperature: 0.8, seed: 3 } : {}) })));
  together.slice(0, 4).forEach((r, i) => t.deepEqual(r.tokens, alone[i]!.tokens, prompts[i]));
  const longest = Math.max(...together.map((r) => r.tokens.length));
  const after = m.generationStats();
  const steps = after.steps - before.steps, carried = after.sequenceSteps - before.sequenceSteps;
  t.true(steps <= longest + 1, `${steps} steps for ${prompts.length} concurrent requests of at most ${longest + 1} steps`);
  t.true(carried > 2 * steps, `steps carried ${carried / steps} sequences on average`);
  t.is(after.inFlight, 0);
  // The sampled request is reproducible inside the shared batch.
  const sampledAlone = await m.generateText(prompts[4]!, { chat: true, maxNewTokens: 20, temperature: 0.8, seed: 3 });
  t.deepEqual(together[4]!.tokens, sampledAlone.tokens);
});

test('a request that joins while others are generating is prefilled in the same steps', async (t) => {
  const m = await LanguageModel.load(TOY);
  t.teardown(() => m.dispose());
  const expected = await m.generateText(prompts[1]!, { chat: true, maxNewTokens: 20 });
  const first = m.generate(prompts[0]!, { chat: true, maxNewTokens: 20 });
  await first.next();
  await first.next();
  const late = m.generateText(prompts[1]!, { chat: true, maxNewTokens: 20 });
  for (let r = await first.next(); !r.done; r = await first.next());
  t.deepEqual((await late).tokens, expected.tokens);
});

test('stopping an iterator early, or aborting, frees the request', async (t) => {
  const m = await LanguageModel.load(TOY);
  t.teardown(() => m.dispose());
  const it = m.generate(prompts[0]!, { chat: true, maxNewTokens: 20, ignoreEos: true });
  await it.next();
  await it.return(undefined as never);
  const controller = new AbortController();
  const aborted = m.generateText(prompts[2]!, { chat: true, maxNewTokens: 40, ignoreEos: true, signal: controller.signal });
  controller.abort();
  const err = await t.throwsAsync(aborted);
  t.is((err as { code?: string }).code, 'ABORT_ERR');
  const after = await m.generateText(prompts[1]!, { chat: true, maxNewTokens: 20 });
  t.is(after.text, 'the answer is 63 .');
});
