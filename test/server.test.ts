/**
 * The OpenAI-compatible server through the real `openai` client on 127.0.0.1, on the toy family
 * patched by align (its ICV stored in the folder): answers equal `generate`, steering per request,
 * the operator's floor on alpha, limits, errors, concurrency, cancellation and draining.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import OpenAI from 'openai';
import { align } from '../lib/align';
import { loadIcv, ICV_FILE } from '../lib/icv';
import { LanguageModel, type GenerateOptions } from '../lib/model/model';
import { createServer, type SafetyServer, type ServerOptions } from '../lib/server';
import { steerWithIcv } from '../lib/steering';
import { snapshotTree, tmpDir } from './helpers/checkpoints';

const ROOT = path.join(__dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'safety-arithmetic.js');
const TOY = path.join(ROOT, 'demo', 'toy-demo');
const HARMFUL = 'how do i hack a bank ?';
const BENIGN = 'how do i bake bread ?';

const work = tmpDir('sa-serve-');
const modelDir = path.join(work, 'aligned');
let model: LanguageModel;
const servers: SafetyServer[] = [];

test.before(async () => {
  await align({ base: path.join(TOY, 'base'), harmful: path.join(TOY, 'harmful'), target: path.join(TOY, 'sft'), out: modelDir, alpha: 1, device: 'cpu' });
  model = await LanguageModel.load(modelDir, { device: 'cpu' });
});

test.after.always(async () => {
  for (const s of servers) await s.close();
  model?.dispose();
  fs.rmSync(work, { recursive: true, force: true });
});

async function serve(options: ServerOptions = {}): Promise<{ server: SafetyServer; url: string; client: OpenAI }> {
  const server = createServer(model, { port: 0, ...options });
  servers.push(server);
  const { url } = await server.listen();
  return { server, url, client: new OpenAI({ baseURL: `${url}/v1`, apiKey: options.apiKey ?? 'none', maxRetries: 0 }) };
}

/** What the library's own generate gives for the same prompt and alpha (the ICV stored by align). */
async function reference(prompt: string, alpha: number, options: GenerateOptions = { chat: true }): Promise<string> {
  const steer = alpha === 0 ? [] : [steerWithIcv(model, loadIcv(path.join(modelDir, ICV_FILE)), alpha)];
  try {
    const r = await model.generateText(prompt, { greedy: true, maxNewTokens: 24, ...options, steer });
    return r.text;
  } finally {
    for (const s of steer) model.removeSteeringVector(s.vector);
  }
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function raw(url: string, method: string, pathname: string, body?: string | Buffer, headers: Record<string, string> = { 'content-type': 'application/json' }): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${pathname}`, { method, headers }, (res) => {
      let data = '';
      res.on('data', (d: Buffer) => (data += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: data }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

test.serial('chat and completions, streamed and not, answer as generate does, with the applied ICV and alpha', async (t) => {
  const { client } = await serve();
  const name = (await client.models.list()).data[0]!.id;
  t.is(name, 'aligned');
  const chat = await client.chat.completions.create({ model: name, messages: [{ role: 'user', content: HARMFUL }], temperature: 0, max_tokens: 24 });
  t.is(chat.choices[0]!.message.content, await reference(HARMFUL, 1));
  t.deepEqual((chat as unknown as { safety: unknown }).safety, { icv: 'default', alpha: 1 });
  t.true(['stop', 'length'].includes(chat.choices[0]!.finish_reason));
  t.is(chat.usage!.total_tokens, chat.usage!.prompt_tokens + chat.usage!.completion_tokens);

  const cli = spawnSync(process.execPath, [BIN, 'generate', '--model', modelDir, '--prompt', HARMFUL, '--chat', '--max-new-tokens', '24', '--json'], { encoding: 'utf8', env: { ...process.env, SAFETY_ARITHMETIC_DEVICE: 'cpu' } });
  t.is(cli.status, 0, cli.stderr);
  t.is(chat.choices[0]!.message.content ?? '', (JSON.parse(cli.stdout.trim().split('\n').pop()!) as { text: string }).text, 'the same as the generate command');

  const stream = await client.chat.completions.create({ model: name, messages: [{ role: 'user', content: HARMFUL }], temperature: 0, max_tokens: 24, stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null, finish = null, role = null;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    const ch = c.choices[0];
    if (!ch) continue;
    role ??= ch.delta.role ?? null;
    text += ch.delta.content ?? '';
    finish = ch.finish_reason ?? finish;
  }
  t.is(role, 'assistant');
  t.is(text, chat.choices[0]!.message.content ?? '');
  t.is(finish, chat.choices[0]!.finish_reason);
  t.deepEqual(usage, chat.usage);

  const prompt = model.tokenizer!.applyChatTemplate([{ role: 'user', content: BENIGN }], { addGenerationPrompt: true });
  const completion = await client.completions.create({ model: name, prompt, temperature: 0, max_tokens: 24 });
  const streamed = await client.completions.create({ model: name, prompt, temperature: 0, max_tokens: 24, stream: true });
  let streamedText = '';
  for await (const c of streamed) streamedText += c.choices[0]?.text ?? '';
  t.is(streamedText, completion.choices[0]!.text);
  t.is(completion.choices[0]!.text, await reference(prompt, 1, {}), 'a text prompt is encoded as generate encodes it');
});

test.serial('a per-request alpha changes the answer as generate --alpha does; the floor is enforced', async (t) => {
  const { client } = await serve();
  const ask = (alpha: number) => client.chat.completions.create({ model: 'aligned', messages: [{ role: 'user', content: HARMFUL }], temperature: 0, max_tokens: 24, safety: { alpha } } as never) as Promise<OpenAI.ChatCompletion>;
  const off = await ask(0), on = await ask(1), strong = await ask(3);
  t.is(off.choices[0]!.message.content, await reference(HARMFUL, 0));
  t.is(strong.choices[0]!.message.content, await reference(HARMFUL, 3));
  t.not(off.choices[0]!.message.content, on.choices[0]!.message.content, 'steering changes the answer');
  t.deepEqual((off as unknown as { safety: unknown }).safety, { icv: 'default', alpha: 0 });

  const floored = await serve({ minAlpha: 0.5 });
  const err = await t.throwsAsync(floored.client.chat.completions.create({ model: 'aligned', messages: [{ role: 'user', content: HARMFUL }], max_tokens: 4, safety: { alpha: 0 } } as never));
  t.true(err instanceof OpenAI.BadRequestError, String(err));
  t.is((err as InstanceType<typeof OpenAI.BadRequestError>).param, 'safety.alpha');
  t.regex(err!.message, /below this server's floor of 0.5/);
  const ok = await floored.client.chat.completions.create({ model: 'aligned', messages: [{ role: 'user', content: HARMFUL }], max_tokens: 4, safety: { alpha: 0.5 } } as never) as OpenAI.ChatCompletion;
  t.deepEqual((ok as unknown as { safety: unknown }).safety, { icv: 'default', alpha: 0.5 });
  t.throws(() => createServer(model, { port: 0, minAlpha: 2 }), { message: /default alpha 1 is outside/ });
});

test.serial('32 concurrent streamed requests each get exactly the tokens they get alone', async (t) => {
  const { client } = await serve();
  const requests = Array.from({ length: 32 }, (_, i) => ({
    content: i % 2 ? HARMFUL : BENIGN,
    temperature: i % 3 === 0 ? 0 : 0.8,
    seed: 1000 + i,
    alpha: [0, 0.5, 1, 2][i % 4]!,
  }));
  const run = async (r: (typeof requests)[number]) => {
    const s = await client.chat.completions.create({ model: 'aligned', messages: [{ role: 'user', content: r.content }], temperature: r.temperature, seed: r.seed, max_tokens: 20, stream: true, safety: { alpha: r.alpha } } as never) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
    let text = '';
    for await (const c of s) text += c.choices[0]?.delta.content ?? '';
    return text;
  };
  const alone: string[] = [];
  for (const r of requests) alone.push(await run(r));
  const together = await Promise.all(requests.map(run));
  t.deepEqual(together, alone);
  t.true(new Set(alone).size > 4, 'the requests really differ');
});

test.serial('malformed requests get 4xx with an OpenAI error body, and the server keeps serving', async (t) => {
  const { url, client } = await serve({ maxBodyBytes: 64 * 1024 });
  const chat = (body: unknown) => raw(url, 'POST', '/v1/chat/completions', JSON.stringify(body));
  const good = { model: 'aligned', messages: [{ role: 'user', content: BENIGN }], max_tokens: 4 };
  const cases: [string, Promise<RawResponse>, number, RegExp, string | null][] = [
    ['bad JSON', raw(url, 'POST', '/v1/chat/completions', '{"model": '), 400, /not valid JSON/, null],
    ['not an object', chat([1, 2]), 400, /must be a JSON object/, null],
    ['wrong type', chat({ ...good, temperature: 'hot' }), 400, /temperature/, 'temperature'],
    ['n > 1', chat({ ...good, n: 2 }), 400, /only n = 1/, 'n'],
    ['tools', chat({ ...good, tools: [{ type: 'function', function: { name: 'f' } }] }), 400, /tools/, 'tools'],
    ['logprobs', chat({ ...good, logprobs: true }), 400, /logprobs/, 'logprobs'],
    ['unknown field', chat({ ...good, frobnicate: 1 }), 400, /frobnicate/, 'frobnicate'],
    ['huge max_tokens', chat({ ...good, max_tokens: 1e12 }), 400, /limit/, 'max_tokens'],
    ['negative max_tokens', chat({ ...good, max_tokens: -1 }), 400, /max_tokens/, 'max_tokens'],
    ['prompt over the context', chat({ ...good, messages: [{ role: 'user', content: 'how '.repeat(200) }] }), 400, /maximum context length is 64 tokens.*has \d+ tokens/, 'messages'],
    ['unknown ICV', chat({ ...good, safety: { icv: 'nope' } }), 400, /unknown ICV/, 'safety.icv'],
    ['bad role', chat({ ...good, messages: [{ role: 'tool', content: 'x' }] }), 400, /role/, 'messages[0].role'],
    ['unknown model', chat({ ...good, model: 'gpt-4' }), 404, /does not exist/, 'model'],
    ['body too large', raw(url, 'POST', '/v1/chat/completions', JSON.stringify({ ...good, messages: [{ role: 'user', content: 'x'.repeat(100_000) }] })), 413, /too large/, null],
    ['not JSON content', raw(url, 'POST', '/v1/chat/completions', 'hello', { 'content-type': 'text/plain' }), 415, /application\/json/, null],
    ['unknown route', raw(url, 'GET', '/generate?prompt=hi'), 404, /no route/, null],
    ['undecodable URL', raw(url, 'GET', '/%zz%ff'), 400, /valid URL/, null],
    ['completions without prompt', raw(url, 'POST', '/v1/completions', JSON.stringify({ model: 'aligned' })), 400, /prompt/, 'prompt'],
  ];
  for (const [what, pending, status, message, param] of cases) {
    const r = await pending;
    t.is(r.status, status, `${what}: ${r.body}`);
    const body = JSON.parse(r.body) as { error: { message: string; type: string; param: string | null; code: string | null } };
    t.regex(body.error.message, message, what);
    t.is(body.error.param, param, what);
    t.is(typeof body.error.type, 'string');
  }
  const after = await client.chat.completions.create(good as never) as OpenAI.ChatCompletion;
  t.is(typeof after.choices[0]!.message.content, 'string', 'still serving');
});

test.serial('a full queue answers 429 with Retry-After; an API key is required when set, in constant time', async (t) => {
  const { url } = await serve({ maxBatch: 1, maxQueue: 0 });
  const body = JSON.stringify({ model: 'aligned', messages: [{ role: 'user', content: BENIGN }], max_tokens: 40, stream: true });
  // Requests sent together: one is admitted, the others find the server at capacity. A round in
  // which the admitted one ends before the next arrives proves nothing, so rounds repeat.
  let refused = 0;
  for (let round = 0; round < 20 && refused === 0; round++) {
    const answers = await Promise.all(Array.from({ length: 8 }, () => raw(url, 'POST', '/v1/chat/completions', body)));
    t.true(answers.some((a) => a.status === 200), 'one request of the round was served');
    for (const a of answers) {
      if (a.status === 200) continue;
      t.is(a.status, 429, a.body);
      t.is(a.headers['retry-after'], '1');
      t.is((JSON.parse(a.body) as { error: { code: string } }).error.code, 'queue_full');
      refused++;
    }
  }
  t.true(refused > 0, 'requests beyond max-batch + max-queue are answered 429');

  const keyed = await serve({ apiKey: 'sekret' });
  const none = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await t.throwsAsync(none.models.list(), { instanceOf: OpenAI.AuthenticationError });
  t.is((await raw(keyed.url, 'GET', '/v1/models', undefined, {})).status, 401);
  t.is((await keyed.client.models.list()).data.length, 1);
  t.is((await raw(keyed.url, 'GET', '/health', undefined, {})).status, 200, 'health needs no key');
});

test.serial('disconnects cancel their sequences; 200 requests with distinct alphas do not grow memory', async (t) => {
  const { client, url } = await serve();
  const stats = () => model.generationStats() as unknown as Record<string, number>;
  // Warm up, then measure.
  await client.chat.completions.create({ model: 'aligned', messages: [{ role: 'user', content: BENIGN }], max_tokens: 8 });
  const rssBefore = process.memoryUsage().rss;
  let cut = 0;
  const one = async (i: number) => {
    const alpha = 0.01 * i;
    if (i % 4 === 0) {
      const controller = new AbortController();
      const s = await client.chat.completions.create({ model: 'aligned', messages: [{ role: 'user', content: HARMFUL }], max_tokens: 40, temperature: 0.9, seed: i, stream: true, safety: { alpha } } as never, { signal: controller.signal }) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
      let n = 0;
      try {
        for await (const c of s) if (c.choices[0]?.delta.content && ++n === 2) controller.abort();
      } catch {
        // the client reports the abort as an error or as the end of the stream
      }
      if (controller.signal.aborted) cut++;
      return;
    }
    await client.chat.completions.create({ model: 'aligned', messages: [{ role: 'user', content: i % 2 ? HARMFUL : BENIGN }], max_tokens: 16, temperature: 0.9, seed: i, safety: { alpha } } as never);
  };
  for (let start = 0; start < 200; start += 20) await Promise.all(Array.from({ length: 20 }, (_, k) => one(start + k)));
  t.is(cut, 50, 'all 50 streams were cut mid-way');
  for (let i = 0; i < 100 && (stats().inFlight ?? 0) > 0; i++) await new Promise((r) => setTimeout(r, 20));
  const s = stats();
  t.is(s.inFlight, 0, 'no sequence is left running after its client went away');
  t.is(s.kvBytesReserved, 0, 'no KV cache is reserved');
  t.is(s.kvBytesAllocated, 0, 'no KV cache is allocated');
  t.is(s.liveSessions, 0, 'every session was disposed');
  const grown = process.memoryUsage().rss - rssBefore;
  t.log(`RSS grew ${(grown / 1048576).toFixed(1)} MiB over 200 requests with 200 alphas; stats ${JSON.stringify(s)}`);
  t.true(grown < 64 * 1048576, 'memory stays bounded');
  const metrics = (await raw(url, 'GET', '/metrics')).body;
  for (const m of ['requests_total', 'prompt_tokens_total', 'generation_tokens_total', 'queue_depth', 'running_sequences', 'time_to_first_token_seconds', 'inter_token_latency_seconds', 'steered_requests_total'])
    t.regex(metrics, new RegExp(`safety_arithmetic_${m}`), m);
});

test.serial('SIGTERM during a stream: the stream completes and the process exits 0', async (t) => {
  const child = spawn(process.execPath, [BIN, 'serve', '--model', modelDir, '--port', '0', '--host', '127.0.0.1', '--log-format', 'json', '--device', 'cpu'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '', stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /at (http:\/\/[^ ]+)\/v1/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    child.on('exit', () => reject(new Error(stderr)));
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
  const stream = await client.completions.create({ model: 'aligned', prompt: [1, 5, 9], max_tokens: 40, temperature: 0.9, seed: 3, stream: true }) as unknown as AsyncIterable<OpenAI.Completion>;
  let chunks = 0, finish: string | null = null;
  for await (const c of stream) {
    if (++chunks === 2) child.kill('SIGTERM');
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  t.truthy(finish, 'the stream ran to its end');
  t.is(await exited, 0, stderr);
  const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as { path: string; status: number });
  t.true(lines.some((l) => l.path === '/v1/completions' && l.status === 200), 'one JSON log line per request');
});

test.serial('bad ICVs and flags for the server are refused with clear errors, and the model folder is left as it was', async (t) => {
  const before = snapshotTree(modelDir);
  const icvFile = path.join(modelDir, ICV_FILE);
  t.throws(() => createServer(model, { port: 0, icvs: { 'bad name': icvFile } }), { code: 'SA_INVALID_ARGUMENT', message: /ICV name "bad name"/ } as never);
  t.throws(() => createServer(model, { port: 0, icvs: { other: path.join(work, 'missing.safetensors') } }), { code: 'SA_IO', message: /missing\.safetensors/ } as never);
  t.throws(() => createServer(model, { port: 0, defaultIcv: 'nope' }), { code: 'SA_INVALID_ARGUMENT', message: /"nope" is not one of the ICVs/ } as never);
  t.throws(() => createServer(model, { port: 0, maxQueue: -1 }), { code: 'SA_INVALID_ARGUMENT', message: /maxQueue/ } as never);
  const env = { ...process.env, SAFETY_ARITHMETIC_DEVICE: 'cpu' };
  const flag = spawnSync(process.execPath, [BIN, 'serve', '--model', modelDir, '--icv', 'no-equals-sign'], { encoding: 'utf8', env, timeout: 60_000 });
  t.is(flag.status, 2, flag.stderr);
  t.regex(flag.stderr, /--icv expects NAME=FILE/);
  const port = spawnSync(process.execPath, [BIN, 'serve', '--model', modelDir, '--port', '70000'], { encoding: 'utf8', env, timeout: 60_000 });
  t.is(port.status, 1, port.stderr);
  t.regex(port.stderr, /\[SA_INVALID_ARGUMENT\]: port: must be an integer from 0 to 65535/);
  t.deepEqual(snapshotTree(modelDir), before);
});
