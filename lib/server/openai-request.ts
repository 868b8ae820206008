/**
 * OpenAI request bodies (`/v1/chat/completions`, `/v1/completions`) checked and turned into what the
 * engine runs. A field the server does not implement is a 400 naming it, never ignored.
 */
import type { ChatMessage } from '../text';
import type { LanguageModel } from '../model/model';
import { ApiError, badRequest, unsupported } from './api-error';
import { MAX_STOP_LENGTH, MAX_STOP_STRINGS, type ResolvedServerOptions } from './options';
import type { SteeringChoice, SteeringRegistry } from './steering';

export type Endpoint = 'chat' | 'completion';

export interface GenerationPlan {
  endpoint: Endpoint;
  promptIds: number[];
  maxTokens: number;
  /** Temperature 0 is greedy decoding. */
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  safety: SteeringChoice;
}

export interface PlanContext {
  model: LanguageModel;
  options: ResolvedServerOptions;
  steering: SteeringRegistry;
  /** A seed for requests that give none. */
  randomSeed: () => number;
}

type Body = Record<string, unknown>;

/** Fields accepted on both endpoints (each checked below); any other field is refused. */
const COMMON = new Set(['model', 'max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'stream', 'stream_options', 'n', 'user', 'safety', 'presence_penalty', 'frequency_penalty', 'logit_bias', 'logprobs']);
const CHAT = new Set([...COMMON, 'messages', 'max_completion_tokens', 'top_logprobs', 'response_format']);
const COMPLETION = new Set([...COMMON, 'prompt', 'echo', 'best_of', 'suffix']);
const ROLES = new Set(['system', 'developer', 'user', 'assistant']);

function present(b: Body, k: string): boolean {
  return b[k] !== undefined && b[k] !== null;
}

function numberIn(b: Body, k: string, min: number, max: number, minOpen = false): number | undefined {
  if (!present(b, k)) return undefined;
  const v = b[k];
  if (typeof v !== 'number' || !Number.isFinite(v) || v > max || (minOpen ? v <= min : v < min))
    throw badRequest(k, `"${k}" must be a number ${minOpen ? 'above' : 'from'} ${min} ${minOpen ? 'up to' : 'to'} ${max}, got ${JSON.stringify(v)}`);
  return v;
}

function integerIn(b: Body, k: string, min: number, max: number): number | undefined {
  const v = numberIn(b, k, min, max);
  if (v !== undefined && !Number.isInteger(v)) throw badRequest(k, `"${k}" must be an integer, got ${v}`);
  return v;
}

/** Fields that are accepted only at their neutral value. */
function onlyNeutral(b: Body): void {
  const neutral: [string, (v: unknown) => boolean, string][] = [
    ['n', (v) => v === 1, 'only n = 1 is supported: send several requests instead'],
    ['best_of', (v) => v === 1, 'only best_of = 1 is supported'],
    ['echo', (v) => v === false, 'echo is not supported'],
    ['suffix', (v) => v === '', 'suffix is not supported'],
    ['presence_penalty', (v) => v === 0, 'presence_penalty is not supported (only 0)'],
    ['frequency_penalty', (v) => v === 0, 'frequency_penalty is not supported (only 0)'],
    ['logprobs', (v) => v === false || v === 0, 'logprobs are not supported'],
    ['top_logprobs', (v) => v === 0, 'top_logprobs are not supported'],
    ['logit_bias', (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0, 'logit_bias is not supported'],
    ['response_format', (v) => typeof v === 'object' && v !== null && (v as Body).type === 'text' && Object.keys(v).length === 1, 'only response_format {"type": "text"} is supported'],
  ];
  for (const [k, ok, why] of neutral) if (present(b, k) && !ok(b[k])) throw unsupported(k, `"${k}": ${why}`);
  if (present(b, 'user') && typeof b.user !== 'string') throw badRequest('user', '"user" must be a string');
}

function stopStrings(b: Body): string[] {
  if (!present(b, 'stop')) return [];
  const list = typeof b.stop === 'string' ? [b.stop] : b.stop;
  if (!Array.isArray(list) || list.length > MAX_STOP_STRINGS || !list.every((s) => typeof s === 'string' && s.length > 0 && s.length <= MAX_STOP_LENGTH))
    throw badRequest('stop', `"stop" must be a string or a list of up to ${MAX_STOP_STRINGS} non-empty strings of at most ${MAX_STOP_LENGTH} characters`);
  return list as string[];
}

function messageText(m: Body, i: number): string {
  const c = m.content;
  if (typeof c === 'string') return c;
  if (Array.isArray(c)) {
    return c.map((part: unknown, j) => {
      const p = part as Body;
      if (p === null || typeof p !== 'object' || p.type !== 'text' || typeof p.text !== 'string')
        throw unsupported(`messages[${i}].content[${j}]`, `messages[${i}].content[${j}]: only text parts ({"type": "text", "text": ...}) are supported`);
      return p.text;
    }).join('');
  }
  throw badRequest(`messages[${i}].content`, `messages[${i}].content must be a string or a list of text parts`);
}

function chatMessages(b: Body): ChatMessage[] {
  const ms = b.messages;
  if (!Array.isArray(ms) || ms.length === 0) throw badRequest('messages', '"messages" must be a non-empty list of {"role", "content"} objects', 'missing_required_parameter');
  return ms.map((raw: unknown, i) => {
    const m = raw as Body;
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw badRequest(`messages[${i}]`, `messages[${i}] must be an object with "role" and "content"`);
    for (const k of Object.keys(m)) {
      if (k !== 'role' && k !== 'content' && k !== 'name') throw unsupported(`messages[${i}].${k}`, `messages[${i}].${k} is not supported (tool calls and audio are not implemented)`);
    }
    if (typeof m.role !== 'string' || !ROLES.has(m.role)) throw badRequest(`messages[${i}].role`, `messages[${i}].role must be one of ${[...ROLES].join(', ')}, got ${JSON.stringify(m.role)}`);
    if (m.name !== undefined && typeof m.name !== 'string') throw badRequest(`messages[${i}].name`, `messages[${i}].name must be a string`);
    return { role: m.role === 'developer' ? 'system' : m.role, content: messageText(m, i) };
  });
}

function promptIds(endpoint: Endpoint, b: Body, model: LanguageModel): number[] {
  if (endpoint === 'chat') {
    const messages = chatMessages(b);
    if (!model.tokenizer) throw badRequest('messages', 'this model has no tokenizer; use /v1/completions with token ids');
    try {
      return model.tokenizer.encodeChat(messages);
    } catch (err) {
      throw badRequest('messages', `the model's chat template cannot render these messages: ${(err as Error).message}`);
    }
  }
  let p = b.prompt;
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
  if (typeof p === 'string') {
    if (p.length === 0) throw badRequest('prompt', '"prompt" is empty');
    if (!model.tokenizer) throw badRequest('prompt', 'this model has no tokenizer; send the prompt as a list of token ids');
    return model.tokenizer.encode(p);
  }
  if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isInteger(x))) {
    const vocab = model.config.vocabSize;
    const bad = p.find((x) => (x as number) < 0 || (x as number) >= vocab);
    if (bad !== undefined) throw badRequest('prompt', `token id ${bad} is outside the vocabulary (0..${vocab - 1})`);
    return p as number[];
  }
  if (Array.isArray(p) && p.length > 1) throw unsupported('prompt', '"prompt": only one prompt per request is supported; send several requests');
  throw badRequest('prompt', '"prompt" must be a string or a list of token ids', 'missing_required_parameter');
}

/** Checks a request body and plans its generation. */
export function planGeneration(endpoint: Endpoint, body: unknown, ctx: PlanContext): GenerationPlan {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw badRequest(null, 'the request body must be a JSON object', 'invalid_request');
  const b = body as Body;
  const allowed = endpoint === 'chat' ? CHAT : COMPLETION;
  for (const k of Object.keys(b)) {
    if (!allowed.has(k) && b[k] !== null && b[k] !== undefined) throw unsupported(k);
  }
  if (typeof b.model !== 'string') throw badRequest('model', '"model" is required: use the id from GET /v1/models', 'missing_required_parameter');
  if (b.model !== ctx.options.modelName) throw new ApiError(404, 'not_found_error', `the model "${b.model}" does not exist; this server serves "${ctx.options.modelName}"`, 'model', 'model_not_found');
  onlyNeutral(b);
  if (present(b, 'stream') && typeof b.stream !== 'boolean') throw badRequest('stream', '"stream" must be true or false');
  const stream = b.stream === true;
  let includeUsage = false;
  if (present(b, 'stream_options')) {
    const so = b.stream_options as Body;
    if (!stream) throw badRequest('stream_options', '"stream_options" is only allowed with "stream": true');
    if (typeof so !== 'object' || Array.isArray(so) || Object.keys(so).some((k) => k !== 'include_usage') || (so.include_usage !== undefined && typeof so.include_usage !== 'boolean'))
      throw badRequest('stream_options', '"stream_options" must be {"include_usage": true|false}');
    includeUsage = so.include_usage === true;
  }
  let safetyBody: Body | undefined;
  if (present(b, 'safety')) {
    const s = b.safety as Body;
    if (typeof s !== 'object' || Array.isArray(s) || Object.keys(s).some((k) => k !== 'alpha' && k !== 'icv'))
      throw badRequest('safety', '"safety" must be an object {"alpha": number, "icv": name}');
    safetyBody = s;
  }
  const temperature = numberIn(b, 'temperature', 0, 2) ?? 1;
  const topP = numberIn(b, 'top_p', 0, 1, true) ?? 1;
  const topKRaw = integerIn(b, 'top_k', -1, 1_000_000);
  const seed = integerIn(b, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER) ?? ctx.randomSeed();
  const stop = stopStrings(b);
  if (stop.length > 0 && !ctx.model.tokenizer) throw badRequest('stop', 'stop strings need a tokenizer, which this model lacks');
  const requestedKey = present(b, 'max_completion_tokens') ? 'max_completion_tokens' : 'max_tokens';
  const requested = integerIn(b, requestedKey, 1, Number.MAX_SAFE_INTEGER);
  const safety = ctx.steering.choose(safetyBody);

  const ids = promptIds(endpoint, b, ctx.model);
  const { context, maxTokens } = ctx.options;
  const where = endpoint === 'chat' ? 'messages' : 'prompt';
  if (ids.length >= context)
    throw new ApiError(400, 'invalid_request_error', `this model's maximum context length is ${context} tokens, but the ${where} has ${ids.length} tokens; shorten it`, where, 'context_length_exceeded');
  if (requested !== undefined && requested > maxTokens)
    throw badRequest(requestedKey, `${requestedKey} is ${requested}, over this server's limit of ${maxTokens}; ask for at most ${maxTokens}`);
  if (requested !== undefined && ids.length + requested > context)
    throw new ApiError(400, 'invalid_request_error', `this model's maximum context length is ${context} tokens: the ${where} has ${ids.length} tokens and ${requestedKey} asks for ${requested} more; ask for at most ${context - ids.length}`, requestedKey, 'context_length_exceeded');
  return {
    endpoint,
    promptIds: ids,
    maxTokens: requested ?? Math.min(maxTokens, context - ids.length),
    temperature,
    topP,
    topK: topKRaw === undefined || topKRaw === -1 ? 0 : topKRaw,
    seed,
    stop,
    stream,
    includeUsage,
    safety,
  };
}
