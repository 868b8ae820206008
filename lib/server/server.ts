/**
 * `safety-arithmetic serve` as an API: an OpenAI-compatible HTTP server over a loaded model, with
 * Safety Alignment per request. Requests share the engine's steps (continuous batching); the limits
 * and the error shape come from ./options and ./api-error.
 */
import crypto from 'node:crypto';
import type { ServerResponse } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { LanguageModel, GenerateResult } from '../model/model';
import { ApiError, toApiError } from './api-error';
import { ServerMetrics } from './metrics';
import { planGeneration, type Endpoint, type GenerationPlan, type PlanContext } from './openai-request';
import { resolveServerOptions, type ResolvedServerOptions, type ServerOptions } from './options';
import { SteeringRegistry } from './steering';
import { TextDeltas } from './text-deltas';

export interface SafetyServer {
  /** The Fastify instance, to add routes or mount elsewhere. */
  readonly app: FastifyInstance;
  readonly options: ResolvedServerOptions;
  /** The ICVs requests may choose, and the default. */
  readonly icvs: { names: string[]; default: string | null };
  /** Starts listening; resolves with the address. */
  listen(): Promise<{ url: string; host: string; port: number }>;
  /**
   * Stops accepting requests, lets running ones finish for up to drainTimeoutMs, cancels the rest,
   * and releases the ICVs. The model stays loaded (the caller owns it).
   */
  close(): Promise<void>;
}

/** What one request did, for its log line and the metrics. */
interface RequestRecord {
  id: string;
  started: number;
  route: string;
  promptTokens?: number;
  completionTokens?: number;
  finishReason?: string;
  icv?: string | null;
  alpha?: number;
  error?: string;
  recorded?: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    record: RequestRecord;
  }
}

function keyDigest(key: string): Buffer {
  return crypto.createHash('sha256').update(key, 'utf8').digest();
}

function finishReason(r: GenerateResult): 'stop' | 'length' {
  return r.finishReason === 'length' ? 'length' : 'stop';
}

export function createServer(model: LanguageModel, serverOptions: ServerOptions = {}): SafetyServer {
  const options = resolveServerOptions(serverOptions, model);
  const steering = new SteeringRegistry(model, serverOptions.icvs ?? {}, serverOptions.defaultIcv, serverOptions.alpha, options);
  const metrics = new ServerMetrics();
  const created = Math.floor(Date.now() / 1000);
  const ctx: PlanContext = { model, options, steering, randomSeed: () => crypto.randomInt(0, 2 ** 31) };
  const stopObservingSteps = model.onStep((step) => {
    metrics.batchSize.observe(step.sequences);
    metrics.stepTokens.observe(step.tokens);
  });
  const keyHash = options.apiKey === null ? null : keyDigest(options.apiKey);
  const running = new Set<AbortController>();
  let draining = false;
  let address: { url: string; host: string; port: number } | null = null;

  const app = Fastify({
    logger: false,
    bodyLimit: options.maxBodyBytes,
    return503OnClosing: true,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // Requests Fastify refuses before routing (a URL that cannot be decoded) get the same error body.
    frameworkErrors: (err, req, reply) => {
      req.record ??= { id: crypto.randomBytes(12).toString('hex'), started: performance.now(), route: 'unmatched' };
      void sendError(req, reply, new ApiError(400, 'invalid_request_error', `${err.message}; send a valid URL`, null, 'invalid_url'));
      log(req, 400);
    },
  });
  app.decorateRequest('record', null as unknown as RequestRecord);
  app.removeContentTypeParser('text/plain'); // bodies are JSON: anything else is a 415

  function log(req: FastifyRequest, status: number): void {
    const r = req.record;
    if (r.recorded) return;
    r.recorded = true;
    metrics.requests.inc({ route: r.route, status: String(status) });
    if (options.logFormat === 'none') return;
    const ms = Math.round((performance.now() - r.started) * 10) / 10;
    const fields = {
      time: new Date().toISOString(), id: r.id, method: req.method, path: r.route, status, ms,
      prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, finish_reason: r.finishReason, icv: r.icv, alpha: r.alpha, error: r.error,
    };
    if (options.logFormat === 'json') process.stdout.write(JSON.stringify(fields) + '\n');
    else process.stdout.write(`${fields.time} ${req.method} ${r.route} ${status} ${ms}ms` + (r.promptTokens !== undefined ? ` prompt=${r.promptTokens} completion=${r.completionTokens ?? 0} finish=${r.finishReason ?? '-'} icv=${r.icv ?? '-'} alpha=${r.alpha}` : '') + (r.error ? ` error=${JSON.stringify(r.error)}` : '') + '\n');
  }

  function sendError(req: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
    const e = toApiError(err);
    req.record.error = e.message;
    if (e.retryAfter !== undefined) void reply.header('retry-after', String(e.retryAfter));
    return reply.code(e.status).type('application/json').send(e.body());
  }

  app.addHook('onRequest', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    req.record = { id: crypto.randomBytes(12).toString('hex'), started: performance.now(), route };
    if (options.corsOrigin !== null) {
      void reply.header('access-control-allow-origin', options.corsOrigin);
      void reply.header('vary', 'origin');
    }
    if (keyHash !== null && route.startsWith('/v1/')) {
      const header = req.headers.authorization ?? '';
      const m = /^Bearer\s+(.+)$/i.exec(header);
      const given = keyDigest(m ? m[1]!.trim() : '');
      if (!m || !crypto.timingSafeEqual(given, keyHash))
        throw new ApiError(401, 'authentication_error', m ? 'the API key is not valid' : 'this server requires an API key: send "Authorization: Bearer <key>"', null, 'invalid_api_key');
    }
  });
  app.addHook('onResponse', async (req, reply) => log(req, reply.statusCode));
  app.setErrorHandler((err, req, reply) => sendError(req, reply, err));
  app.setNotFoundHandler((req, reply) => sendError(req, reply, new ApiError(404, 'not_found_error', `no route ${req.method} ${req.url.slice(0, 200)}; this server answers /v1/chat/completions, /v1/completions, /v1/models, /health and /metrics`, null, 'not_found')));

  if (options.corsOrigin !== null) {
    app.options('/*', async (_req, reply) => {
      void reply.header('access-control-allow-methods', 'GET, POST, OPTIONS');
      void reply.header('access-control-allow-headers', 'authorization, content-type');
      void reply.header('access-control-max-age', '600');
      return reply.code(204).send();
    });
  }

  const modelCard = () => ({ id: options.modelName, object: 'model', created, owned_by: 'safety-arithmetic', safety: { icvs: steering.names(), default_icv: steering.defaultName } });
  app.get('/v1/models', async () => ({ object: 'list', data: [modelCard()] }));
  app.get('/v1/models/:id', async (req) => {
    const { id } = req.params as { id: string };
    if (id !== options.modelName) throw new ApiError(404, 'not_found_error', `the model "${id}" does not exist; this server serves "${options.modelName}"`, 'model', 'model_not_found');
    return modelCard();
  });
  app.get('/health', async (_req, reply) => {
    if (draining) return reply.code(503).send({ status: 'draining', reason: 'the server is shutting down: it finishes running requests and takes no new ones' });
    return { status: 'ok', model: options.modelName, backend: model.backend, running: running.size };
  });
  app.get('/metrics', async (_req, reply) => {
    const stats = model.generationStats();
    metrics.running.set(stats.running);
    metrics.queueDepth.set(stats.waiting);
    return reply.type(metrics.contentType).send(await metrics.text());
  });

  const admit = (): void => {
    if (draining) throw new ApiError(503, 'service_unavailable', 'the server is shutting down; retry on another instance', null, 'shutting_down', 5);
    const limit = options.maxBatch + options.maxQueue;
    if (running.size >= limit)
      throw new ApiError(429, 'rate_limit_error', `the server is at capacity (${running.size} requests running or queued, limit ${limit}); retry after a moment`, null, 'queue_full', 1);
  };

  const generation = (endpoint: Endpoint) => async (req: FastifyRequest, reply: FastifyReply) => {
    const plan = planGeneration(endpoint, req.body, ctx);
    admit();
    const rec = req.record;
    rec.promptTokens = plan.promptIds.length;
    rec.icv = plan.safety.icv;
    rec.alpha = plan.safety.alpha;
    metrics.promptTokens.inc(plan.promptIds.length);
    metrics.steering.inc({ icv: plan.safety.alpha === 0 || plan.safety.icv === null ? 'none' : plan.safety.icv });
    metrics.alpha.observe(plan.safety.alpha);
    const controller = new AbortController();
    running.add(controller);
    const onClose = () => {
      if (!reply.raw.writableFinished) controller.abort();
    };
    reply.raw.on('close', onClose);
    try {
      if (plan.stream) await streamCompletion(req, reply, plan, controller.signal);
      else return await fullCompletion(req, plan, controller.signal);
    } finally {
      running.delete(controller);
      reply.raw.removeListener('close', onClose);
    }
    return reply;
  };

  const id = (endpoint: Endpoint) => `${endpoint === 'chat' ? 'chatcmpl' : 'cmpl'}-${crypto.randomBytes(12).toString('hex')}`;
  const usage = (plan: GenerationPlan, completion: number) => ({ prompt_tokens: plan.promptIds.length, completion_tokens: completion, total_tokens: plan.promptIds.length + completion });
  const safetyField = (plan: GenerationPlan) => ({ icv: plan.safety.icv, alpha: plan.safety.alpha });

  /** Runs the generation, calling onText with each part of text that can be sent; returns the result. */
  const run = async (req: FastifyRequest, plan: GenerationPlan, signal: AbortSignal, onText: (text: string) => Promise<void> | void): Promise<{ result: GenerateResult; completionTokens: number }> => {
    const deltas = new TextDeltas(plan.stop);
    const stream = model.generate(plan.promptIds, {
      maxNewTokens: plan.maxTokens,
      ...(plan.temperature === 0 ? { greedy: true } : { greedy: false, temperature: plan.temperature, topP: plan.topP, topK: plan.topK }),
      seed: plan.seed,
      stop: plan.stop,
      steer: plan.safety.steer,
      signal,
    });
    let last = 0;
    let count = 0;
    for (;;) {
      const step = await stream.next();
      const now = performance.now();
      if (step.done) {
        const result = step.value;
        const completionTokens = result.tokens.length + (result.finishReason === 'eos' ? 1 : 0);
        if (count === 0 && completionTokens > 0) metrics.timeToFirstToken.observe((now - req.record.started) / 1000);
        const rest = deltas.finish(result.text);
        if (rest) await onText(rest);
        metrics.generatedTokens.inc(completionTokens);
        return { result, completionTokens };
      }
      count++;
      if (count === 1) metrics.timeToFirstToken.observe((now - req.record.started) / 1000);
      else metrics.interTokenLatency.observe((now - last) / 1000);
      last = now;
      const text = deltas.next(step.value.text);
      if (text) await onText(text);
    }
  };

  const fullCompletion = async (req: FastifyRequest, plan: GenerationPlan, signal: AbortSignal) => {
    const { result, completionTokens } = await run(req, plan, signal, () => {});
    req.record.completionTokens = completionTokens;
    req.record.finishReason = finishReason(result);
    const base = { id: id(plan.endpoint), created: Math.floor(Date.now() / 1000), model: options.modelName };
    const choice = plan.endpoint === 'chat'
      ? { index: 0, message: { role: 'assistant', content: result.text }, logprobs: null, finish_reason: finishReason(result) }
      : { index: 0, text: result.text, logprobs: null, finish_reason: finishReason(result) };
    return { ...base, object: plan.endpoint === 'chat' ? 'chat.completion' : 'text_completion', choices: [choice], usage: usage(plan, completionTokens), safety: safetyField(plan) };
  };

  const streamCompletion = async (req: FastifyRequest, reply: FastifyReply, plan: GenerationPlan, signal: AbortSignal) => {
    const res: ServerResponse = reply.raw;
    reply.hijack();
    const headers: Record<string, string> = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' };
    if (options.corsOrigin !== null) Object.assign(headers, { 'access-control-allow-origin': options.corsOrigin, vary: 'origin' });
    res.writeHead(200, headers);
    const base = { id: id(plan.endpoint), object: plan.endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion', created: Math.floor(Date.now() / 1000), model: options.modelName };
    const send = async (payload: unknown): Promise<void> => {
      if (res.destroyed || res.writableEnded) return;
      if (!res.write(`data: ${JSON.stringify(payload)}\n\n`)) await new Promise<void>((resolve) => { res.once('drain', resolve); res.once('close', resolve); });
    };
    const chunk = (delta: string | null, reason: string | null) => ({
      ...base,
      choices: [plan.endpoint === 'chat'
        ? { index: 0, delta: delta === null ? {} : reason === null && delta === '' ? { role: 'assistant', content: '' } : { content: delta }, logprobs: null, finish_reason: reason }
        : { index: 0, text: delta ?? '', logprobs: null, finish_reason: reason }],
      safety: safetyField(plan),
    });
    let status = 200;
    try {
      if (plan.endpoint === 'chat') await send(chunk('', null));
      const { result, completionTokens } = await run(req, plan, signal, (text) => send(chunk(text, null)));
      req.record.completionTokens = completionTokens;
      req.record.finishReason = finishReason(result);
      await send(chunk(null, finishReason(result)));
      if (plan.includeUsage) await send({ ...base, choices: [], usage: usage(plan, completionTokens), safety: safetyField(plan) });
      if (!res.destroyed) res.end('data: [DONE]\n\n');
    } catch (err) {
      const e = toApiError(err);
      status = e.status;
      req.record.error = e.message;
      if (!res.destroyed && !res.writableEnded) {
        await send(e.body());
        res.end('data: [DONE]\n\n');
      }
    } finally {
      log(req, signal.aborted ? 499 : status);
    }
  };

  app.post('/v1/chat/completions', generation('chat'));
  app.post('/v1/completions', generation('completion'));

  return {
    app,
    options,
    icvs: { names: steering.names(), default: steering.defaultName },
    async listen() {
      await app.listen({ host: options.host, port: options.port });
      const a = app.server.address();
      const port = typeof a === 'object' && a ? a.port : options.port;
      const host = options.host.includes(':') ? `[${options.host}]` : options.host;
      address = { url: `http://${host}:${port}`, host: options.host, port };
      return address;
    },
    async close() {
      if (draining) return;
      draining = true;
      const closing = app.close();
      const deadline = Date.now() + options.drainTimeoutMs;
      while (running.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const c of running) c.abort();
      await closing;
      stopObservingSteps();
      steering.dispose();
    },
  };
}
