/** Error codes the package raises; each message names the file, tensor or field and what to do. */
export type ErrorCode =
  | 'SA_ADDON_LOAD'
  | 'SA_DEVICE_UNAVAILABLE'
  | 'SA_INVALID_ARGUMENT'
  | 'SA_BAD_CHECKPOINT'
  | 'SA_MISMATCH'
  | 'SA_OUTPUT_EXISTS'
  | 'SA_OUTPUT_INSIDE_INPUT'
  | 'SA_IO'
  | 'SA_NATIVE'
  | 'ABORT_ERR';

export interface ErrorDetails {
  /** The file the problem was found in. */
  file?: string;
  /** The tensor concerned. */
  tensor?: string;
  /** The option or header field concerned. */
  field?: string;
}

export class SafetyArithmeticError extends Error {
  readonly code: ErrorCode;
  readonly file?: string;
  readonly tensor?: string;
  readonly field?: string;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message);
    this.name = code === 'ABORT_ERR' ? 'AbortError' : 'SafetyArithmeticError';
    this.code = code;
    if (details.file !== undefined) this.file = details.file;
    if (details.tensor !== undefined) this.tensor = details.tensor;
    if (details.field !== undefined) this.field = details.field;
  }
}

/** Wraps an error thrown by the native addon (which carries a `code`) into a SafetyArithmeticError. */
export function fromNative(err: unknown): SafetyArithmeticError {
  if (err instanceof SafetyArithmeticError) return err;
  const e = err as { code?: string; message?: string };
  const code = (e && typeof e.code === 'string' ? e.code : 'SA_NATIVE') as ErrorCode;
  return new SafetyArithmeticError(code, e?.message ?? String(err));
}

export function abortError(): SafetyArithmeticError {
  return new SafetyArithmeticError('ABORT_ERR', 'the operation was aborted');
}
