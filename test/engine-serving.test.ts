/**
 * The engine under a server's load (llama-tiny: vocab 384, context 512): chunked prefill is
 * bit-exact and never stalls decoding streams, sessions are freed when requests end, the KV-cache
 * budget governs admission, the context is enforced, and per-request alphas cost no native memory.
 */
import test from 'ava';
import path from 'node:path';
import { LanguageModel, type GenerateResult, type LoadOptions, type StepEvent } from '../lib/model/model';
import { native, type NativeModel } from '../lib/native';

const MODEL = path.join(__dirname, '..', '..', 'test', 'fixtures', 'llama-tiny', 'model');

/** Deterministic token ids in 3..383 (clear of the special ids). */
function promptOf(length: number, seed: number): number[] {
  let x = seed * 2654435761 + 1;
  return Array.from({ length }, () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return 3 + (x % 381);
  });
}

async function load(t: { teardown(fn: () => void): void }, options: LoadOptions = {}): Promise<LanguageModel> {
  const m = await LanguageModel.load(MODEL, options);
  t.teardown(() => m.dispose());
  return m;
}

const nativeOf = (m: LanguageModel) => (m as unknown as { nativeModel: NativeModel }).nativeModel;

test('a long prompt prefilled in chunks gives the tokens it gives prefilled whole, alone or in a batch', async (t) => {
  const whole = await load(t, { maxStepTokens: 4096 });
  const chunked = await load(t, { maxStepTokens: 16 });
  const long = promptOf(300, 1);
  const others = [promptOf(7, 2), promptOf(40, 3), promptOf(3, 4)];
  for (const sampling of [{}, { temperature: 0.9, topK: 50, topP: 0.95, seed: 11 }]) {
    const options = { maxNewTokens: 24, ignoreEos: true, ...sampling };
    const reference = await whole.generateText(long, options);
    t.is(reference.promptTokens, 300);
    let steps = 0;
    const off = chunked.onStep(() => steps++);
    const alone = await chunked.generateText(long, options);
    off();
    t.true(steps >= 300 / 16 + 23, `${steps} steps: the prompt was fed in chunks of at most 16`);
    t.deepEqual(alone.tokens, reference.tokens, 'chunked alone');
    // In a batch the long prompt is generation request 0, so it draws from the same seed.
    const batch = await chunked.generateBatch([long, ...others], options);
    t.deepEqual(batch[0]!.tokens, reference.tokens, 'chunked inside a batch');
    for (let i = 0; i < others.length; i++) {
      const single = await whole.generateText(others[i]!, { ...options, ...('seed' in sampling ? { seed: sampling.seed! + i + 1 } : {}) });
      t.deepEqual(batch[i + 1]!.tokens, single.tokens, `batch member ${i + 1}`);
    }
  }
});

test('logits of a prefill fed in chunks (through step, not sampled) equal the whole prefill bit for bit', async (t) => {
  const m = await load(t);
  const nm = nativeOf(m);
  const prompt = promptOf(200, 5);
  const V = m.config.vocabSize;
  const [whole] = await nm.forward([{ tokens: Int32Array.from(prompt) }], { lastOnly: false, layerOut: false, mlpOut: false });
  const session = nm.createSession();
  const chunks: Float32Array[] = [];
  for (let p = 0; p < prompt.length; p += 37) {
    const [r] = await nm.forward([{ tokens: Int32Array.from(prompt.slice(p, p + 37)), session }], { lastOnly: false, layerOut: false, mlpOut: false });
    chunks.push(r!.logits);
  }
  const joined = new Float32Array(prompt.length * V);
  let at = 0;
  for (const c of chunks) joined.set(c, (at += c.length) - c.length);
  t.is(at, joined.length);
  t.true(joined.every((v, i) => Object.is(v, whole!.logits[i])), 'every logit identical');
  session.dispose();

  // step: a chunk that is not sampled grows the cache, returns -1 and leaves the generator alone.
  const sampling = { temperature: 1, topK: 0, topP: 1 };
  const a = nm.createSession(prompt.length + 8), b = nm.createSession(prompt.length + 8);
  a.seed(42);
  b.seed(42);
  const first = await nm.step([{ tokens: Int32Array.from(prompt.slice(0, 150)), session: a, sampling, sample: false }]);
  t.deepEqual([...first.tokens], [-1]);
  t.is(a.length, 150);
  const tokensA: number[] = [], tokensB: number[] = [];
  tokensA.push((await nm.step([{ tokens: Int32Array.from(prompt.slice(150)), session: a, sampling }])).tokens[0]!);
  tokensB.push((await nm.step([{ tokens: Int32Array.from(prompt), session: b, sampling }])).tokens[0]!);
  for (let i = 0; i < 6; i++) {
    const r = await nm.step([
      { tokens: Int32Array.of(tokensA.at(-1)!), session: a, sampling },
      { tokens: Int32Array.of(tokensB.at(-1)!), session: b, sampling },
    ]);
    tokensA.push(r.tokens[0]!);
    tokensB.push(r.tokens[1]!);
  }
  t.deepEqual(tokensA, tokensB);
  a.dispose();
  b.dispose();
});

test('a 300-token prompt arriving while 4 streams decode does not stop them: one token per stream per step', async (t) => {
  const m = await load(t, { maxStepTokens: 16 });
  const short = [0, 1, 2, 3].map((i) => promptOf(6 + i, 20 + i));
  const options = { maxNewTokens: 80, ignoreEos: true };
  const alone: GenerateResult[] = [];
  for (const p of short) alone.push(await m.generateText(p, options));

  const events: StepEvent[] = [];
  const off = m.onStep((e) => events.push(e));
  t.teardown(off);
  const arrivals: number[][] = short.map(() => []);
  const streams = short.map(async (p, i) => {
    const tokens: number[] = [];
    for await (const { token } of m.generate(p, options)) {
      tokens.push(token);
      arrivals[i]!.push(events.length);
    }
    return tokens;
  });
  while (arrivals.some((a) => a.length < 3)) await new Promise((r) => setImmediate(r));
  const longStartsAt = events.length;
  const long = await m.generateText(promptOf(300, 9), { maxNewTokens: 4, ignoreEos: true });
  t.is(long.tokens.length, 4);
  const results = await Promise.all(streams);
  results.forEach((r, i) => t.deepEqual(r, alone[i]!.tokens, `stream ${i} got the tokens it gets alone`));

  // Steps are numbered from 1 (events.length after each one); the long prompt's prefill steps are contiguous.
  const prefillSteps = events.map((e, k) => (k >= longStartsAt && e.prefillTokens > 0 ? k + 1 : 0)).filter((k) => k > 0);
  const first = prefillSteps[0]!, last = prefillSteps.at(-1)!;
  t.true(prefillSteps.length >= 300 / 12, `the prompt took ${prefillSteps.length} steps`);
  t.is(last - first + 1, prefillSteps.length);
  for (const k of prefillSteps) {
    const e = events[k - 1]!;
    t.true(e.tokens <= 16, `step ${k} fed ${e.tokens} tokens`);
    t.is(e.tokens - e.prefillTokens, 4, `each of the 4 streams fed its token in step ${k}`);
  }
  // Seen from the streams: a token at every step while the long prompt was prefilled.
  for (const a of arrivals) t.deepEqual(a.filter((k) => k >= first && k <= last), prefillSteps);
});

// Serial: V8's external-memory count is the process's, and other tests' models change it too.
test.serial('sessions are disposed when requests finish, stop early or are aborted; disposed sessions refuse use', async (t) => {
  const m = await load(t);
  const nm = nativeOf(m);
  t.is(m.generationStats().liveSessions, 0);
  let peak = 0;
  m.onStep(() => (peak = Math.max(peak, m.generationStats().liveSessions)));
  await m.generateBatch([promptOf(5, 1), promptOf(9, 2), promptOf(30, 3)], { maxNewTokens: 10, ignoreEos: true });
  t.is(peak, 3);
  let s = m.generationStats();
  t.is(s.liveSessions, 0);
  t.is(s.kvBytesAllocated, 0);
  t.is(s.kvBytesReserved, 0);
  t.is(s.running + s.waiting + s.inFlight, 0);

  const it = m.generate(promptOf(8, 4), { maxNewTokens: 100, ignoreEos: true });
  await it.next();
  await it.return(undefined as never);
  const controller = new AbortController();
  const aborted = m.generateText(promptOf(8, 5), { maxNewTokens: 100, ignoreEos: true, signal: controller.signal });
  await new Promise((r) => setImmediate(r));
  controller.abort();
  await t.throwsAsync(aborted, { code: 'ABORT_ERR' });
  await m.generateText(promptOf(4, 6), { maxNewTokens: 2 }); // a step after the cancellations
  s = m.generationStats();
  t.is(s.liveSessions, 0);
  t.is(s.kvBytesAllocated, 0);

  // Native sessions: the cache is freed at dispose(), V8 is told, and later use is a clear error.
  const externalBefore = native().externalMemory();
  const residentBefore = nm.residentBytes;
  const session = nm.createSession();
  await nm.forward([{ tokens: Int32Array.from(promptOf(1000, 7).map((x) => x % 384)), session }], { lastOnly: true, layerOut: false, mlpOut: false });
  t.is(session.bytes, 1024 * nm.kvBytesPerToken);
  t.is(m.generationStats().kvBytesAllocated, session.bytes);
  const workspace = nm.residentBytes - residentBefore; // the forward workspace grew to 1000 rows
  // Other parts of Node report external memory too: compare within a small bound here, exactly below.
  const told = native().externalMemory() - externalBefore;
  t.true(Math.abs(told - (session.bytes + workspace)) < 64 * 1024, `V8 was told of ${told} bytes; the cache holds ${session.bytes}, the workspace grew by ${workspace}`);
  const beforeDispose = native().externalMemory();
  session.dispose();
  t.is(native().externalMemory() - beforeDispose, -1024 * nm.kvBytesPerToken, 'V8 is told of the release at once');
  t.true(session.disposed);
  t.is(session.bytes, 0);
  t.is(m.generationStats().kvBytesAllocated, 0);
  t.notThrows(() => session.dispose());
  t.throws(() => session.seed(1), { code: 'SA_INVALID_ARGUMENT', message: /disposed/ });
  t.throws(() => session.length, { message: /disposed/ });
  t.throws(() => nm.step([{ tokens: Int32Array.of(1), session }]), { message: /disposed/ });
  // A bounded session never grows past its bound.
  const bounded = nm.createSession(10);
  await t.throwsAsync(nm.forward([{ tokens: Int32Array.from(promptOf(11, 8)), session: bounded }], { lastOnly: true, layerOut: false, mlpOut: false }), { code: 'SA_INVALID_ARGUMENT' });
  await nm.forward([{ tokens: Int32Array.from(promptOf(10, 8)), session: bounded }], { lastOnly: true, layerOut: false, mlpOut: false });
  t.is(bounded.bytes, 10 * nm.kvBytesPerToken);
  bounded.dispose();
});

test('seed, reset and dispose during a step are refused; the step is unaffected', async (t) => {
  const m = await load(t);
  const nm = nativeOf(m);
  const sampling = { temperature: 1, topK: 0, topP: 1 };
  const prompt = Int32Array.from(promptOf(64, 3));
  const run = async (meddle: (s: ReturnType<NativeModel['createSession']>) => void) => {
    const s = nm.createSession();
    s.seed(7);
    const pending = nm.step([{ tokens: prompt, session: s, sampling }]);
    meddle(s);
    const r = await pending;
    s.dispose();
    return r.tokens[0];
  };
  const quiet = await run(() => {});
  const meddled = await run((s) => {
    t.throws(() => s.seed(123), { code: 'SA_INVALID_ARGUMENT', message: /in use/ });
    t.throws(() => s.reset(), { code: 'SA_INVALID_ARGUMENT', message: /in use/ });
    t.throws(() => s.dispose(), { code: 'SA_INVALID_ARGUMENT', message: /in use/ });
  });
  t.is(meddled, quiet);
});

test('KV-cache budget: requests wait for reservations, then run; a request larger than the budget fails at once', async (t) => {
  const probe = await load(t);
  const perToken = probe.generationStats().kvBytesPerToken;
  t.is(perToken, 2 * 4 * 2 * 16 * 4);
  const budget = Math.floor(2.5 * 30 * perToken); // room for two requests of 10 + 20 tokens
  const m = await load(t, { kvCacheBytes: budget });
  const prompts = [1, 2, 3, 4, 5].map((i) => promptOf(10, 40 + i));
  const options = { maxNewTokens: 20, ignoreEos: true };
  const alone: GenerateResult[] = [];
  for (const p of prompts) alone.push(await probe.generateText(p, options));
  let maxRunning = 0, sawWaiting = false, maxReserved = 0;
  m.onStep(() => {
    const s = m.generationStats();
    maxRunning = Math.max(maxRunning, s.running);
    maxReserved = Math.max(maxReserved, s.kvBytesReserved);
    sawWaiting ||= s.waiting > 0;
  });
  const together = await m.generateBatch(prompts, options);
  together.forEach((r, i) => t.deepEqual(r.tokens, alone[i]!.tokens));
  t.is(maxRunning, 2);
  t.true(sawWaiting);
  t.is(maxReserved, 2 * 30 * perToken);
  const s = m.generationStats();
  t.is(s.kvBytesBudget, budget);
  t.is(s.kvBytesReserved, 0);

  const err = await t.throwsAsync(m.generateText(promptOf(10, 1), { maxNewTokens: 100 }), { code: 'SA_INVALID_ARGUMENT' });
  t.is((err as { field?: string }).field, 'maxNewTokens');
  t.true(err!.message.includes(String(110 * perToken)) && err!.message.includes(String(budget)), err!.message);

  for (const bad of [0, -5, 1.5, Number.NaN]) {
    await t.throwsAsync(LanguageModel.load(MODEL, { maxStepTokens: bad }), { code: 'SA_INVALID_ARGUMENT', message: /maxStepTokens/ });
    await t.throwsAsync(LanguageModel.load(MODEL, { kvCacheBytes: bad }), { code: 'SA_INVALID_ARGUMENT', message: /kvCacheBytes/ });
  }
});

test('the context (max_position_embeddings) bounds prompt + maxNewTokens', async (t) => {
  const m = await load(t);
  t.is(m.contextLength, 512);
  t.is(m.config.maxPositionEmbeddings, 512);
  const tooLong = await t.throwsAsync(m.generateText(promptOf(600, 1), { maxNewTokens: 1 }), { code: 'SA_INVALID_ARGUMENT' });
  t.is((tooLong as { field?: string }).field, 'prompt');
  t.regex(tooLong!.message, /600.*512/);
  const past = await t.throwsAsync(m.generateText(promptOf(500, 1), { maxNewTokens: 20 }), { code: 'SA_INVALID_ARGUMENT' });
  t.is((past as { field?: string }).field, 'maxNewTokens');
  t.regex(past!.message, /20.*500.*520.*512/);
  // Without maxNewTokens, the default (64) is cut to what the context leaves.
  const cut = await m.generateText(promptOf(500, 1), { ignoreEos: true });
  t.is(cut.tokens.length, 12);
  t.is(cut.finishReason, 'length');
  t.is((await m.generateText(promptOf(500, 1), { maxNewTokens: 12, ignoreEos: true })).tokens.length, 12);
});

test('100 requests with 100 distinct alphas on one steering vector leave no native memory behind', async (t) => {
  const m = await load(t);
  const nm = nativeOf(m);
  const layers = [0, 1, 2, 3];
  const H = m.config.hiddenSize;
  const vectors = Float32Array.from({ length: layers.length * H }, (_, i) => Math.sin(i) * 0.5);
  const vector = m.addSteeringVector(layers, vectors);
  const prompts = Array.from({ length: 100 }, (_, i) => promptOf(8, 100 + i));
  const run = (offset: number) =>
    m.generateBatch(prompts.map((prompt, i) => ({ prompt, steer: [{ vector, alpha: offset + i * 0.013 }] })), { maxNewTokens: 4, ignoreEos: true });
  await run(0.5); // the workspace grows to the largest step once
  const resident = nm.residentBytes;
  const results = await run(-0.7);
  t.is(results.length, 100);
  for (const i of [0, 57]) {
    const single = await m.generateText(prompts[i]!, { maxNewTokens: 4, ignoreEos: true, steer: [{ vector, alpha: -0.7 + i * 0.013 }] });
    t.deepEqual(results[i]!.tokens, single.tokens, `request ${i} got its own alpha`);
  }
  const s = m.generationStats();
  t.is(nm.residentBytes, resident, 'no state per alpha');
  t.is(s.kvBytesAllocated, 0);
  t.is(s.kvBytesReserved, 0);
  t.is(s.liveSessions, 0);
  t.is(s.inFlight, 0);
});
