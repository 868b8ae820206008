/**
 * The CPU thread count. One pool of threads serves the whole process (every model and HDR run on
 * the CPU), so the count is a process-wide setting: the `threads` option of the call about to run,
 * else SAFETY_ARITHMETIC_THREADS, else what it already is (at first: the CPUs available to the
 * process, from its affinity mask and cgroup quota). Results do not depend on it.
 */
import { SafetyArithmeticError } from './errors';
import { native } from './native';

export const THREADS_ENV = 'SAFETY_ARITHMETIC_THREADS';
export const MAX_THREADS = 1024;

function threadsError(field: string, got: string, fix: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field}: must be a whole number of CPU threads from 1 to ${MAX_THREADS}, got ${got}; ${fix}`, { field });
}

/** Checks a `threads` option: undefined, or a whole number from 1 to MAX_THREADS. */
export function checkThreads(threads: unknown, field = 'threads'): number | undefined {
  if (threads === undefined) return undefined;
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS)
    throw threadsError(field, typeof threads === 'string' ? JSON.stringify(threads) : String(threads), 'leave it out to keep the current count');
  return threads;
}

/** SAFETY_ARITHMETIC_THREADS as a count, or undefined when unset or empty. */
export function threadsFromEnv(): number | undefined {
  const raw = process.env[THREADS_ENV];
  if (raw === undefined || raw.trim() === '') return undefined;
  const text = raw.trim();
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(n) || n < 1 || n > MAX_THREADS) throw threadsError(THREADS_ENV, JSON.stringify(raw), 'set it to a count such as 4, or unset it');
  return n;
}

/** Sets the pool's thread count for the work about to start (see above); returns the count in use. */
export function applyThreads(threads: unknown, field = 'threads'): number | undefined {
  const n = checkThreads(threads, field) ?? threadsFromEnv();
  if (n === undefined) return undefined;
  return native().setThreads(n);
}
