/**
 * The server's errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the
 * HTTP status that goes with it. Every answer other than a success goes through here.
 */
import { SafetyArithmeticError } from '../errors';

export type ApiErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'rate_limit_error' | 'server_error' | 'service_unavailable';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: ApiErrorType,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Seconds, for 429 and 503 answers. */
    readonly retryAfter?: number,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: ApiErrorType; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export function badRequest(param: string | null, message: string, code: string | null = 'invalid_value'): ApiError {
  return new ApiError(400, 'invalid_request_error', message, param, code);
}

export function unsupported(param: string, message = `"${param}" is not supported by this server; remove it from the request`): ApiError {
  return new ApiError(400, 'invalid_request_error', message, param, 'unsupported_parameter');
}

/** The request parameter that an option of the library corresponds to. */
const PARAM_OF_FIELD: Record<string, string> = {
  maxNewTokens: 'max_tokens',
  temperature: 'temperature',
  topP: 'top_p',
  topK: 'top_k',
  seed: 'seed',
  stop: 'stop',
  prompt: 'prompt',
  tokens: 'prompt',
  alpha: 'safety.alpha',
};

/** Any error met while answering a request, as the ApiError to send. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof SafetyArithmeticError) {
    if (err.code === 'SA_INVALID_ARGUMENT') return badRequest(err.field ? (PARAM_OF_FIELD[err.field] ?? err.field) : null, err.message);
    if (err.code === 'ABORT_ERR') return new ApiError(499, 'invalid_request_error', 'the request was cancelled', null, 'cancelled');
    return new ApiError(500, 'server_error', `${err.code}: ${err.message}`, null, err.code);
  }
  const status = (err as { statusCode?: number }).statusCode;
  const message = (err as Error)?.message ?? String(err);
  if (status === 413) return new ApiError(413, 'invalid_request_error', `the request body is too large: ${message}; send a smaller request`, null, 'request_too_large');
  if (status === 415) return new ApiError(415, 'invalid_request_error', `${message}; send Content-Type: application/json`, null, 'unsupported_media_type');
  if (status !== undefined && status >= 400 && status < 500)
    return new ApiError(status, 'invalid_request_error', `${message}; send a JSON object as the request body`, null, 'invalid_request');
  return new ApiError(500, 'server_error', `internal error: ${message}`, null, 'internal_error');
}
