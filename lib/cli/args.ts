/** Shared argument parsing for the CLI commands. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { SafetyArithmeticError } from '../errors';
import { LayerSelection } from '../layers';

export class UsageError extends Error {}

const NEGATIVE_NUMBER = /^-(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const INTEGER = /^[+-]?\d+$/;

type StringOptionNames = { long: Set<string>; short: Set<string> };

function stringOptions(config: ParseArgsConfig): StringOptionNames {
  const names: StringOptionNames = { long: new Set(), short: new Set() };
  for (const [name, o] of Object.entries(config.options ?? {})) {
    if (o.type !== 'string') continue;
    names.long.add(name);
    if (o.short) names.short.add(o.short);
  }
  return names;
}

/**
 * Joins a string option and a following value that looks like a negative number ("--alpha -1")
 * into one argument ("--alpha=-1"), which node's parseArgs would otherwise refuse as ambiguous.
 */
function joinNegativeValues(args: readonly string[], names: StringOptionNames): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') {
      out.push(...args.slice(i));
      break;
    }
    const next = args[i + 1];
    const takesValue = (arg.startsWith('--') && names.long.has(arg.slice(2))) || (/^-[^-]$/.test(arg) && names.short.has(arg[1]!));
    if (takesValue && next !== undefined && NEGATIVE_NUMBER.test(next)) {
      out.push(arg.startsWith('--') ? `${arg}=${next}` : `${arg}${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/**
 * node's parseArgs for a command's arguments, where a string option may take a negative number as
 * its value ("--alpha -1"), and every parse error is a UsageError.
 */
export function parseCommandArgs<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  const args = joinNegativeValues(config.args ?? process.argv.slice(2), stringOptions(config));
  try {
    return parseArgs<T>({ ...config, args } as T);
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (code.startsWith('ERR_PARSE_ARGS')) throw new UsageError((err as Error).message);
    throw err;
  }
}

/** A decimal number ("0.5", "-1", "1e-3"); empty text, whitespace, hex and Infinity are refused. */
export function parseNumber(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!DECIMAL.test(value) || !Number.isFinite(n)) throw new UsageError(`${flag} expects a number, got "${value}"`);
  return n;
}

export function parseInteger(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!INTEGER.test(value) || !Number.isSafeInteger(n)) throw new UsageError(`${flag} expects an integer, got "${value}"`);
  return n;
}

/**
 * "4,5,6" or "4-6" or a mix: checks the syntax now and returns the text unexpanded; the API
 * resolves it against the model's layers (so "0-4294967296" is refused, never expanded).
 */
export function parseLayers(value: string | undefined, flag = '--layers'): string | undefined {
  if (value === undefined) return undefined;
  try {
    LayerSelection.parse(value, flag);
  } catch (err) {
    if (err instanceof SafetyArithmeticError) throw new UsageError(err.message.replace(`${flag}: expects `, `${flag} expects `));
    throw err;
  }
  return value;
}

/** "1,5,9" -> token ids. */
export function parseTokens(value: string): number[] {
  const parts = value.split(/[\s,]+/).filter((s) => s.length > 0);
  if (parts.length === 0 || !parts.every((p) => /^\d+$/.test(p) && Number.isSafeInteger(Number(p))))
    throw new UsageError(`--tokens expects comma-separated token ids, got "${value.length > 80 ? value.slice(0, 77) + '...' : value}"`);
  return parts.map(Number);
}

export function requireFlags(command: string, values: Record<string, unknown>, names: string[]): void {
  for (const n of names) if (values[n] === undefined || values[n] === '') throw new UsageError(`${command} needs --${n}`);
}
