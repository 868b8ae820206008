/** Shared argument parsing for the CLI commands. */
export class UsageError extends Error {}

export function parseNumber(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${flag} expects a number, got "${value}"`);
  return n;
}

export function parseInteger(flag: string, value: string | undefined): number | undefined {
  const n = parseNumber(flag, value);
  if (n !== undefined && !Number.isSafeInteger(n)) throw new UsageError(`${flag} expects an integer, got "${value}"`);
  return n;
}

/** "4,5,6" or "4-6" or a mix. */
export function parseLayers(value: string | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  const layers: number[] = [];
  for (const p of parts) {
    const range = /^(\d+)-(\d+)$/.exec(p);
    if (range) {
      for (let l = Number(range[1]); l <= Number(range[2]); l++) layers.push(l);
    } else if (/^\d+$/.test(p)) {
      layers.push(Number(p));
    } else {
      throw new UsageError(`--layers expects layer indices such as 4,5,6 or 4-6, got "${value}"`);
    }
  }
  if (layers.length === 0) throw new UsageError('--layers is empty');
  return layers;
}

/** "1,5,9" -> token ids. */
export function parseTokens(value: string): number[] {
  const parts = value.split(/[\s,]+/).filter((s) => s.length > 0);
  if (parts.length === 0 || !parts.every((p) => /^\d+$/.test(p))) throw new UsageError(`--tokens expects comma-separated token ids, got "${value}"`);
  return parts.map(Number);
}

export function requireFlags(command: string, values: Record<string, unknown>, names: string[]): void {
  for (const n of names) if (values[n] === undefined || values[n] === '') throw new UsageError(`${command} needs --${n}`);
}
