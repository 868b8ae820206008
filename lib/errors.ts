/**
 * The package's errors. The codes are one list shared with the native side
 * (csrc/common/error_codes.def, generated into ./error-codes); each message names the file, tensor or
 * field and says what to do.
 */
import { ERROR_CODES, type ErrorCode } from './error-codes';

export { ERROR_CODES, ERROR_CODE_MEANINGS, type ErrorCode } from './error-codes';

export interface ErrorDetails {
  /** The file the problem was found in. */
  file?: string;
  /** The tensor concerned. */
  tensor?: string;
  /** The option or header field concerned. */
  field?: string;
  /** The error this one was made from. */
  cause?: unknown;
}

export class SafetyArithmeticError extends Error {
  readonly code: ErrorCode;
  readonly file?: string;
  readonly tensor?: string;
  readonly field?: string;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message, 'cause' in details ? { cause: details.cause } : undefined);
    this.name = code === 'ABORT_ERR' ? 'AbortError' : 'SafetyArithmeticError';
    this.code = code;
    if (details.file !== undefined) this.file = details.file;
    if (details.tensor !== undefined) this.tensor = details.tensor;
    if (details.field !== undefined) this.field = details.field;
  }
}

const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && KNOWN_CODES.has(code);
}

/**
 * Maps an error thrown by the native addon (a JS error with `code` and, where known, `file`, `tensor`,
 * `field`) into a SafetyArithmeticError with the same details and the original as `cause`. An
 * unknown or missing code becomes SA_NATIVE, with the original code in the message.
 */
export function fromNative(err: unknown): SafetyArithmeticError {
  if (err instanceof SafetyArithmeticError) return err;
  const e = (typeof err === 'object' && err !== null ? err : {}) as { code?: unknown; message?: unknown; file?: unknown; tensor?: unknown; field?: unknown };
  const message = typeof e.message === 'string' ? e.message : String(err);
  const details: ErrorDetails = { cause: err };
  for (const key of ['file', 'tensor', 'field'] as const) {
    const value = e[key];
    if (typeof value === 'string' && value !== '') details[key] = value;
  }
  if (isErrorCode(e.code)) return new SafetyArithmeticError(e.code, message, details);
  const original = e.code === undefined ? '' : ` (native code ${String(e.code)})`;
  return new SafetyArithmeticError('SA_NATIVE', `${message}${original}`, details);
}

export function abortError(): SafetyArithmeticError {
  return new SafetyArithmeticError('ABORT_ERR', 'the operation was aborted');
}
