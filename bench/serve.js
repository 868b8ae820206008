'use strict';
// Server benchmark: the OpenAI-compatible server (createServer) on loopback against offline
// generateBatch on the same loaded model, and steering on every layer against off. See bench/README.md.
//
//   npm run bench:serve [-- --quick] [-- --models toy|synthetic|both] [-- --concurrency 1,8,32]
//
// Options:
//   --quick             smaller grid: toy at 1, 8, 32 and synthetic at 1, 8 with 16 tokens; fewer rounds
//   --models M          toy, synthetic or both (default both)
//   --concurrency LIST  concurrent clients, comma-separated (default 1,8,32)
//   --rounds N          measured rounds per mode and concurrency (default: toy 30, synthetic 3;
//                       with --quick toy 10, synthetic 1)
//   --device D          device to load the models on (default: the library's choice)
//   --client W          worker (default) or main: the thread the clients run on
// Environment:
//   BENCH_DIR           where the synthetic checkpoint is generated and kept for later runs (default
//                       <os.tmpdir()>/safety-arithmetic-bench-hdr, the same files as bench:hdr)
//
// The load generator runs in a worker thread of this process (--client main puts it on the main thread):
// the offline comparison must use the very model the server serves (a second process would load a
// second copy), and the clients must not take the server's event loop. With the toy model an engine
// step is well under a millisecond, so HTTP and JSON work is most of a request's cost and a client on
// the same event loop would slow the server down; in a worker it has its own loop (it still shares the
// CPU cores, as clients on the same machine always do). The main thread's event-loop utilization during
// the server rounds is reported.
//
// The last stdout line is a JSON object with every figure.

const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { Worker, isMainThread, parentPort } = require('node:worker_threads');

const ROOT = path.resolve(__dirname, '..');
// The library and the generator are loaded on the main thread only (the client worker needs neither).
const lib = () => require(path.join(ROOT, 'dist', 'lib', 'index.js'));

const TOY = path.join(ROOT, 'demo', 'toy-demo');
const TARGETS = { serverOverOffline: 0.9, steeringSlowdown: 0.03 };
const WATCHDOG_MS = { quick: 4 * 60_000, full: 15 * 60_000 };

function log(msg) {
  process.stderr.write(`[bench:serve] ${msg}\n`);
}

function parseArgs(argv) {
  const o = { quick: false, models: 'both', concurrency: null, rounds: null, device: undefined, client: 'worker' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--models') o.models = value();
    else if (a === '--concurrency') o.concurrency = value().split(',').map(Number);
    else if (a === '--rounds') o.rounds = Number(value());
    else if (a === '--device') o.device = value();
    else if (a === '--client') o.client = value();
    else throw new Error(`unknown option ${a}; see the top of bench/serve.js`);
  }
  if (!['worker', 'main'].includes(o.client)) throw new Error(`--client must be worker or main, got ${o.client}`);
  if (!['toy', 'synthetic', 'both'].includes(o.models)) throw new Error(`--models must be toy, synthetic or both, got ${o.models}`);
  if (o.concurrency && !o.concurrency.every((c) => Number.isInteger(c) && c >= 1 && c <= 64)) throw new Error('--concurrency: integers from 1 to 64');
  if (o.rounds !== null && !(Number.isInteger(o.rounds) && o.rounds >= 1 && o.rounds <= 50)) throw new Error('--rounds: an integer from 1 to 50');
  return o;
}

// ---------------------------------------------------------------- statistics

function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

const round = (x, d = 3) => (x === null || x === undefined ? null : Math.round(x * 10 ** d) / 10 ** d);

// ---------------------------------------------------------------- models

/** The toy model patched by align (HDR + its ICV over every layer, saved in the folder). */
async function prepareToy(work, device) {
  const { align, LanguageModel, ICV_FILE, loadIcv } = lib();
  const dir = path.join(work, 'toy-aligned');
  await align({ base: path.join(TOY, 'base'), harmful: path.join(TOY, 'harmful'), target: path.join(TOY, 'sft'), out: dir, demos: path.join(TOY, 'demos.jsonl'), alpha: 1, ...(device ? { device } : {}) });
  const model = await LanguageModel.load(dir, device ? { device } : {});
  const icv = loadIcv(path.join(dir, ICV_FILE));
  const requests = JSON.parse(fs.readFileSync(path.join(TOY, 'eval.json'), 'utf8')).benign_unseen.map((x) => x.request);
  const prompt = (i) => model.toIds(requests[i % requests.length], true);
  return { name: 'toy', model, icvs: {}, icvLayers: icv.layers, alpha: icv.defaultAlpha, prompt, maxTokens: 24, params: null };
}

/**
 * A WordPiece tokenizer for the synthetic model: token i is the word "w<i>" (0-3 are the specials), so
 * every generated token has text and each one is streamed as it comes.
 */
function syntheticTokenizer(vocabSize) {
  const specials = ['<pad>', '<bos>', '<eos>', '<unk>'];
  const vocab = {};
  for (let i = 0; i < vocabSize; i++) vocab[i < specials.length ? specials[i] : `w${i}`] = i;
  const added = specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: { type: 'WhitespaceSplit' }, post_processor: null,
    decoder: { type: 'WordPiece', prefix: '##', cleanup: false },
    model: { type: 'WordPiece', unk_token: '<unk>', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}

/** The synthetic Llama-shaped bf16 model (bench/gen-llama.js's base checkpoint) with an ICV over every layer. */
async function prepareSynthetic(work, device, maxTokens) {
  const { computeIcv, LanguageModel } = lib();
  const { generate, Rng } = require('./gen-llama');
  const cacheDir = process.env.BENCH_DIR || path.join(os.tmpdir(), 'safety-arithmetic-bench-hdr');
  log(`synthetic checkpoint in ${cacheDir} (generated once, about 35 s on 2 cores, then reused)`);
  const gen = generate(cacheDir);
  const dir = path.join(work, 'synthetic');
  fs.mkdirSync(dir);
  const weights = path.join(cacheDir, 'base', 'model.safetensors');
  try {
    fs.linkSync(weights, path.join(dir, 'model.safetensors'));
  } catch {
    fs.copyFileSync(weights, path.join(dir, 'model.safetensors'));
  }
  const config = JSON.parse(fs.readFileSync(path.join(cacheDir, 'base', 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(syntheticTokenizer(config.vocab_size)));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<bos>', eos_token: '<eos>', unk_token: '<unk>', pad_token: '<pad>' }));
  const model = await LanguageModel.load(dir, device ? { device } : {});
  const rng = new Rng(20240611);
  const ids = (n) => Array.from({ length: n }, () => 4 + (rng.nextU32() % (config.vocab_size - 4)));
  const demos = Array.from({ length: 8 }, () => ({ unsafe: ids(8), safe: ids(8) }));
  const icv = await computeIcv(model, demos);
  const prompts = Array.from({ length: 64 }, () => ids(8));
  return { name: 'synthetic', model, icvs: { default: icv }, icvLayers: icv.layers, alpha: icv.defaultAlpha, prompt: (i) => prompts[i % prompts.length], maxTokens, params: gen.params };
}

// ---------------------------------------------------------------- one streamed request

/**
 * POST /v1/completions with stream: true; times the first text chunk and the gaps between chunks.
 * Resolves with the text, the generated tokens (usage.completion_tokens) and the timings in ms.
 */
function streamCompletion(url, agent, body) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const chunkTimes = [];
    let text = '';
    let completionTokens = null;
    let alpha = null;
    let buffered = '';
    const req = http.request(`${url}/v1/completions`, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        let data = '';
        res.on('data', (d) => (data += d));
        res.on('end', () => reject(new Error(`HTTP ${res.statusCode}: ${data.slice(0, 300)}`)));
        return;
      }
      res.on('data', (d) => {
        const now = performance.now();
        buffered += d;
        let end;
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const event = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          if (!event.startsWith('data: ')) continue;
          const payload = event.slice(6);
          if (payload === '[DONE]') continue;
          const j = JSON.parse(payload);
          if (j.error) return reject(new Error(`stream error: ${JSON.stringify(j.error)}`));
          if (j.safety) alpha = j.safety.alpha;
          const piece = j.choices && j.choices[0] ? j.choices[0].text : '';
          if (piece) {
            chunkTimes.push(now);
            text += piece;
          }
          if (j.usage) completionTokens = j.usage.completion_tokens;
        }
      });
      res.on('end', () => {
        const ttft = chunkTimes.length > 0 ? chunkTimes[0] - started : null;
        const gaps = chunkTimes.slice(1).map((t, k) => t - chunkTimes[k]);
        resolve({ text, completionTokens, ttft, gaps, chunks: chunkTimes.length, alpha });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/** Sends all the requests at once; the wall time runs from the first sent to the last answered. */
async function clientRound(url, agent, bodies) {
  const t0 = performance.now();
  const results = await Promise.all(bodies.map((b) => streamCompletion(url, agent, b)));
  return { seconds: (performance.now() - t0) / 1000, results };
}

/** The clients: on a worker thread (default) or on the main thread, beside the server. */
function startClients(where) {
  if (where === 'main') {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
    return { round: (url, bodies) => clientRound(url, agent, bodies), close: async () => agent.destroy() };
  }
  const worker = new Worker(__filename);
  const pending = new Map();
  let next = 0;
  worker.on('message', (m) => {
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.error) p.reject(new Error(m.error));
    else p.resolve(m.value);
  });
  worker.on('error', (err) => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  });
  return {
    round: (url, bodies) => new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ id, url, bodies });
    }),
    close: () => worker.terminate(),
  };
}

function clientWorker() {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
  parentPort.on('message', ({ id, url, bodies }) => {
    clientRound(url, agent, bodies).then(
      (value) => parentPort.postMessage({ id, value }),
      (err) => parentPort.postMessage({ id, error: String(err && err.stack ? err.stack : err) }),
    );
  });
}

// ---------------------------------------------------------------- rounds

function requestBody(ctx, prompt, maxTokens, alpha) {
  return { model: ctx.modelName, prompt, max_tokens: maxTokens, temperature: 0, seed: 0, stream: true, stream_options: { include_usage: true }, safety: { alpha } };
}

async function serverRound(ctx, prompts, alpha) {
  const stats0 = ctx.model.generationStats();
  const elu0 = performance.eventLoopUtilization();
  const { seconds, results } = await ctx.clients.round(ctx.url, prompts.map((p) => requestBody(ctx, p, ctx.maxTokens, alpha)));
  const elu = performance.eventLoopUtilization(elu0).utilization;
  const stats1 = ctx.model.generationStats();
  for (const r of results) if (r.alpha !== alpha) throw new Error(`the server applied alpha ${r.alpha}, not ${alpha}`);
  return {
    seconds,
    tokens: results.reduce((a, r) => a + r.completionTokens, 0),
    ttfts: results.map((r) => r.ttft).filter((x) => x !== null),
    gaps: results.flatMap((r) => r.gaps),
    chunks: results.reduce((a, r) => a + r.chunks, 0),
    texts: results.map((r) => r.text),
    steps: stats1.steps - stats0.steps,
    sequenceSteps: stats1.sequenceSteps - stats0.sequenceSteps,
    elu,
  };
}

async function offlineRound(ctx, prompts) {
  const t0 = performance.now();
  const results = await ctx.model.generateBatch(prompts, { maxNewTokens: ctx.maxTokens, greedy: true, seed: 0 });
  const seconds = (performance.now() - t0) / 1000;
  // Counted as the server counts completion tokens: an end-of-sequence token is generated too.
  const tokens = results.reduce((a, r) => a + r.tokens.length + (r.finishReason === 'eos' ? 1 : 0), 0);
  return { seconds, tokens, texts: results.map((r) => r.text) };
}

function summarize(rounds) {
  const seconds = rounds.reduce((a, r) => a + r.seconds, 0);
  const tokens = rounds.reduce((a, r) => a + r.tokens, 0);
  const perRound = rounds.map((r) => r.tokens / r.seconds);
  const s = { tokens, seconds: round(seconds), tokensPerSecond: round(tokens / seconds, 2), bestTokensPerSecond: round(Math.max(...perRound), 2), roundTokensPerSecond: perRound.map((x) => round(x, 2)) };
  if (rounds[0].ttfts) {
    const ttfts = rounds.flatMap((r) => r.ttfts);
    const gaps = rounds.flatMap((r) => r.gaps);
    const steps = rounds.reduce((a, r) => a + r.steps, 0);
    Object.assign(s, {
      ttftP50Ms: round(percentile(ttfts, 0.5), 1), ttftP99Ms: round(percentile(ttfts, 0.99), 1),
      itlP50Ms: round(percentile(gaps, 0.5), 1), itlP99Ms: round(percentile(gaps, 0.99), 1),
      chunks: rounds.reduce((a, r) => a + r.chunks, 0),
      meanBatch: steps > 0 ? round(rounds.reduce((a, r) => a + r.sequenceSteps, 0) / steps, 2) : null,
      eventLoopUtilization: round(Math.max(...rounds.map((r) => r.elu)), 3),
    });
  }
  return s;
}

/** Measured rounds at one concurrency: offline, server with steering off and on, in rotating order. */
async function measureConcurrency(ctx, C, rounds) {
  const prompts = Array.from({ length: C }, (_, i) => ctx.prompt(i));
  // Warm-up: sessions and buffers for C sequences, not measured.
  await ctx.clients.round(ctx.url, prompts.map((p) => requestBody(ctx, p, 2, 0)));
  const runs = { offline: [], off: [], on: [] };
  const modes = ['offline', 'off', 'on'];
  let busiest = os.loadavg()[0];
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < modes.length; k++) {
      const mode = modes[(k + r) % modes.length];
      const result = mode === 'offline' ? await offlineRound(ctx, prompts) : await serverRound(ctx, prompts, mode === 'on' ? ctx.alpha : 0);
      runs[mode].push(result);
      busiest = Math.max(busiest, os.loadavg()[0]);
      log(`${ctx.name} C=${C} round ${r + 1}/${rounds} ${mode}: ${result.tokens} tokens in ${result.seconds.toFixed(2)} s (${(result.tokens / result.seconds).toFixed(1)} tok/s)`);
    }
  }
  const offline = summarize(runs.offline);
  const off = summarize(runs.off);
  const on = summarize(runs.on);
  const sameText = runs.off.every((r) => r.texts.every((t, i) => t === runs.offline[0].texts[i]));
  return {
    concurrency: C, requestsPerMode: C * rounds, maxTokens: ctx.maxTokens,
    offline, serverOff: off, serverOn: on,
    serverOverOffline: round(off.tokensPerSecond / offline.tokensPerSecond),
    steeringSlowdown: round(1 - on.tokensPerSecond / off.tokensPerSecond),
    // The fastest round of each mode: less disturbed by other work on the machine.
    serverOverOfflineBest: round(off.bestTokensPerSecond / offline.bestTokensPerSecond),
    steeringSlowdownBest: round(1 - on.bestTokensPerSecond / off.bestTokensPerSecond),
    loadAverageMax: round(busiest, 2),
    steeringItlRatio: off.itlP50Ms ? round(on.itlP50Ms / off.itlP50Ms) : null,
    serverTextEqualsOffline: sameText,
  };
}

// ---------------------------------------------------------------- report

function pad(s, n, left = false) {
  s = String(s ?? '-');
  return left ? s.padEnd(n) : s.padStart(n);
}

function printTable(model, rows) {
  console.log(`\n${model.name}: ${model.describe}`);
  const head = ['C', 'mode', 'tokens', 'wall s', 'tok/s', 'TTFT p50', 'TTFT p99', 'ITL p50', 'ITL p99', 'batch'];
  const widths = [3, 14, 7, 8, 8, 9, 9, 8, 8, 6];
  const line = (cells) => console.log(cells.map((c, i) => pad(c, widths[i], i === 1)).join('  '));
  line(head);
  for (const r of rows) {
    for (const [mode, s] of [['offline', r.offline], ['server, off', r.serverOff], [`server, a=${model.alpha}`, r.serverOn]])
      line([r.concurrency, mode, s.tokens, s.seconds.toFixed(2), s.tokensPerSecond.toFixed(1), s.ttftP50Ms, s.ttftP99Ms, s.itlP50Ms, s.itlP99Ms, s.meanBatch]);
    const pct = (x) => `${(100 * x).toFixed(1)}%`;
    console.log(`     server/offline ${r.serverOverOffline.toFixed(3)}, fastest rounds ${r.serverOverOfflineBest.toFixed(3)} (target >= ${TARGETS.serverOverOffline});` +
      ` steering on vs off: ${pct(r.steeringSlowdown)} slower, fastest rounds ${pct(r.steeringSlowdownBest)} (target <= ${pct(TARGETS.steeringSlowdown)}), ITL p50 on/off ${r.steeringItlRatio};` +
      ` server text = offline: ${r.serverTextEqualsOffline ? 'yes' : 'NO'}; load average up to ${r.loadAverageMax}`);
  }
  console.log('(times in ms; tok/s: all rounds together; tokens: generated tokens of all requests, end-of-sequence included; batch: mean sequences per engine step; negative slower = faster)');
}

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  // A toy round lasts milliseconds, so the toy gets more rounds for the same steadiness; 3 synthetic
  // rounds put each mode once in each place of the rotating order.
  const rounds = { toy: opts.rounds ?? (opts.quick ? 10 : 30), synthetic: opts.rounds ?? (opts.quick ? 1 : 3) };
  const grid = {
    toy: opts.concurrency ?? [1, 8, 32],
    synthetic: opts.concurrency ?? (opts.quick ? [1, 8] : [1, 8, 32]),
  };
  const names = opts.models === 'both' ? ['toy', 'synthetic'] : [opts.models];
  const machine = {
    cpu: os.cpus()[0].model, cores: os.cpus().length, memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    node: process.version, platform: `${os.type()} ${os.release()}`, loadAverageBefore: os.loadavg().map((x) => round(x, 2)),
  };
  log(`${machine.cpu} x ${machine.cores} cores, Node ${machine.node}, load average ${machine.loadAverageBefore.join(' ')}`);
  if (machine.loadAverageBefore[0] > machine.cores * 0.5) log('warning: the machine is busy; the figures will be noisy');

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-bench-serve-'));
  const clients = startClients(opts.client);
  const report = { date: new Date().toISOString(), commit: gitCommit(), machine, quick: opts.quick, client: opts.client, rounds, targets: TARGETS, models: [] };
  const cleanup = () => fs.rmSync(work, { recursive: true, force: true });
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  // Bounded whatever the machine does: past the limit, what was measured is printed and the run ends.
  const limitMs = opts.quick ? WATCHDOG_MS.quick : WATCHDOG_MS.full;
  const watchdog = setTimeout(() => {
    log(`stopped: the run took longer than ${limitMs / 60_000} minutes; the JSON below holds what was measured`);
    cleanup();
    console.log(JSON.stringify({ ...report, stoppedAfterMs: limitMs }));
    process.exit(2);
  }, limitMs);
  watchdog.unref();
  try {
    for (const name of names) {
      const t0 = performance.now();
      const m = name === 'toy' ? await prepareToy(work, opts.device) : await prepareSynthetic(work, opts.device, opts.quick ? 16 : 32);
      const cfg = m.model.config;
      m.backend = m.model.backend;
      m.describe = `${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, intermediate ${cfg.intermediateSize}, ${cfg.numHeads}/${cfg.numKvHeads} heads, vocab ${cfg.vocabSize}` +
        (m.params ? `, ${m.params.toLocaleString('en-US')} parameters bf16` : '') + `; backend ${m.backend}; ICV on layers ${m.icvLayers[0]}-${m.icvLayers[m.icvLayers.length - 1]} (${m.icvLayers.length}), alpha ${m.alpha}; max_tokens ${m.maxTokens}`;
      log(`${name}: ready in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${m.describe}`);
      const server = lib().createServer(m.model, { host: '127.0.0.1', port: 0, icvs: m.icvs, maxBatch: 64, logFormat: 'none' });
      const rows = [];
      report.models.push({ name, describe: m.describe, backend: m.backend, params: m.params, icvLayers: m.icvLayers.length, alpha: m.alpha, rows });
      try {
        const { url } = await server.listen();
        const ctx = { ...m, url, clients, modelName: server.options.modelName };
        for (const C of grid[name]) rows.push(await measureConcurrency(ctx, C, rounds[name]));
      } finally {
        await server.close();
        m.model.dispose();
      }
      printTable(m, rows);
    }
  } finally {
    await clients.close();
    cleanup();
  }
  machine.loadAverageAfter = os.loadavg().map((x) => round(x, 2));
  console.log(`\nmachine: ${machine.cpu} x ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.platform}, Node ${machine.node}; load average before ${machine.loadAverageBefore.join(' ')}, after ${machine.loadAverageAfter.join(' ')}`);
  console.log(JSON.stringify(report));
}

if (isMainThread) {
  main().catch((err) => {
    log(`failed: ${err && err.stack ? err.stack : err}`);
    process.exitCode = 1;
  });
} else {
  clientWorker();
}
