/**
 * What the operator decides about the server, with its defaults and checks: the one place that holds
 * the server's limits. The CLI (`safety-arithmetic serve`) and createServer() both take these.
 */
import { SafetyArithmeticError } from '../errors';
import type { InContextVector } from '../icv';

export type LogFormat = 'json' | 'text' | 'none';

export interface ServerOptions {
  /** Interface to listen on (default 127.0.0.1: loopback only). */
  host?: string;
  /** Port (default 8080; 0 picks a free one). */
  port?: number;
  /** Require `Authorization: Bearer <apiKey>` on /v1 routes (default: SAFETY_ARITHMETIC_API_KEY, else none). */
  apiKey?: string;
  /** The model's id in /v1/models and in responses (default: the model folder's name). */
  modelName?: string;
  /** Named ICVs clients may choose with `safety.icv`: a file or a loaded vector each. */
  icvs?: Record<string, string | InContextVector>;
  /** The ICV used when a request names none (default: "default", the model folder's own icv.safetensors when present). */
  defaultIcv?: string | null;
  /** Alpha when a request gives none (default: the ICV's stored default alpha). */
  alpha?: number;
  /** The lowest alpha a request may ask for (default: no floor). Requests below it get a 400. */
  minAlpha?: number;
  /** The highest alpha a request may ask for (default 100). */
  maxAlpha?: number;
  /** Sequences generated together in one step: the model's maxBatchSequences (default 64). */
  maxBatch?: number;
  /** Requests waiting beyond the sequences being generated; more get 429 (default 256). */
  maxQueue?: number;
  /** The most tokens one request may generate (default 4096, and never past the context). */
  maxTokens?: number;
  /** Context length: prompt plus generated tokens (default: the model's max_position_embeddings, else 4096). */
  context?: number;
  /** The largest request body accepted (default 4 MiB); larger gets 413. */
  maxBodyBytes?: number;
  /** On close(): how long running requests may take to finish before they are cancelled (default 30 s). */
  drainTimeoutMs?: number;
  /** One line per request on stdout (default none). */
  logFormat?: LogFormat;
  /** Answer cross-origin requests from this origin ("*" for any); default: no CORS headers. */
  corsOrigin?: string;
}

export interface ResolvedServerOptions {
  host: string;
  port: number;
  apiKey: string | null;
  modelName: string;
  minAlpha: number;
  maxAlpha: number;
  maxBatch: number;
  maxQueue: number;
  maxTokens: number;
  context: number;
  maxBodyBytes: number;
  drainTimeoutMs: number;
  logFormat: LogFormat;
  corsOrigin: string | null;
}

export const SERVER_DEFAULTS = {
  host: '127.0.0.1',
  port: 8080,
  maxBatch: 64,
  maxQueue: 256,
  maxTokens: 4096,
  context: 4096,
  maxBodyBytes: 4 * 1024 * 1024,
  drainTimeoutMs: 30_000,
  maxAlpha: 100,
} as const;

/** The most stop strings one request may give, and their longest length (as OpenAI allows). */
export const MAX_STOP_STRINGS = 4;
export const MAX_STOP_LENGTH = 512;

function invalid(field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field}: ${message}`, { field });
}

function integer(o: ServerOptions, field: keyof ServerOptions, fallback: number, min: number, max: number): number {
  const v = o[field] ?? fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw invalid(field, `must be an integer from ${min} to ${max}, got ${String(v)}`);
  return v;
}

export function resolveServerOptions(o: ServerOptions, model: { dir: string; contextLength: number | null }, env: NodeJS.ProcessEnv = process.env): ResolvedServerOptions {
  const host = o.host ?? SERVER_DEFAULTS.host;
  if (typeof host !== 'string' || host.length === 0) throw invalid('host', 'must be a host name or address');
  const modelContext = model.contextLength ?? SERVER_DEFAULTS.context;
  const context = integer(o, 'context', modelContext, 1, modelContext);
  const minAlpha = o.minAlpha ?? -Infinity;
  if (typeof minAlpha !== 'number' || Number.isNaN(minAlpha)) throw invalid('minAlpha', 'must be a number');
  const maxAlpha = o.maxAlpha ?? SERVER_DEFAULTS.maxAlpha;
  if (typeof maxAlpha !== 'number' || !Number.isFinite(maxAlpha) || maxAlpha < minAlpha) throw invalid('maxAlpha', `must be a finite number at least minAlpha (${minAlpha})`);
  const apiKey = o.apiKey ?? env.SAFETY_ARITHMETIC_API_KEY ?? null;
  if (apiKey !== null && (typeof apiKey !== 'string' || apiKey.length === 0)) throw invalid('apiKey', 'must be a non-empty string');
  const logFormat = o.logFormat ?? 'none';
  if (!['json', 'text', 'none'].includes(logFormat)) throw invalid('logFormat', `is "${String(logFormat)}": use json, text or none`);
  const base = model.dir.split(/[\\/]/).filter((s) => s.length > 0).pop() ?? 'model';
  return {
    host,
    port: integer(o, 'port', SERVER_DEFAULTS.port, 0, 65535),
    apiKey,
    modelName: o.modelName ?? base,
    minAlpha,
    maxAlpha,
    maxBatch: integer(o, 'maxBatch', SERVER_DEFAULTS.maxBatch, 1, 4096),
    maxQueue: integer(o, 'maxQueue', SERVER_DEFAULTS.maxQueue, 0, 1_000_000),
    maxTokens: Math.min(integer(o, 'maxTokens', SERVER_DEFAULTS.maxTokens, 1, 1 << 24), context),
    context,
    maxBodyBytes: integer(o, 'maxBodyBytes', SERVER_DEFAULTS.maxBodyBytes, 1024, 1 << 30),
    drainTimeoutMs: integer(o, 'drainTimeoutMs', SERVER_DEFAULTS.drainTimeoutMs, 0, 24 * 3600 * 1000),
    logFormat,
    corsOrigin: o.corsOrigin ?? null,
  };
}
