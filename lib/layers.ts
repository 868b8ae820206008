/**
 * Decoder-layer selections ("4,5,6", "4-6", "0-3,8" or a list of indices), kept as ranges until they
 * are resolved against a model, so that a selection such as "0-4294967296" is refused by comparing
 * its ends with the model's last layer instead of being expanded first.
 */
import { SafetyArithmeticError } from './errors';

/** Decoder layers as the API takes them: a list of indices, or text such as "4,5,6", "4-6" or "0-3,8". */
export type LayersInput = readonly number[] | string;

const SYNTAX_HINT = 'layer indices such as 4,5,6 or 4-6 (or a mix: 0-3,8)';
/** Text longer than this is not a layer selection anyone typed. */
const MAX_TEXT_LENGTH = 100_000;

function invalid(field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field}: ${message}`, { field });
}

function quoted(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 77)}...` : text);
}

function layerIndex(digits: string, text: string, field: string): number {
  const n = Number(digits);
  if (!Number.isSafeInteger(n)) throw invalid(field, `${quoted(text)}: ${digits.length > 20 ? digits.slice(0, 20) + '...' : digits} is not a layer index anyone has`);
  return n;
}

/** A set of layer indices as sorted, disjoint, inclusive ranges. */
export class LayerSelection {
  /** Sorted, disjoint, non-adjacent inclusive ranges. */
  readonly ranges: readonly (readonly [number, number])[];

  private constructor(ranges: [number, number][]) {
    ranges.sort((a, b) => a[0] - b[0]);
    const merged: [number, number][] = [];
    for (const r of ranges) {
      const last = merged[merged.length - 1];
      if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
      else merged.push([r[0], r[1]]);
    }
    this.ranges = merged;
  }

  /** Parses text ("4,5,6", "4-6", mixes) or checks a list of indices; syntax errors are SA_INVALID_ARGUMENT naming `field`. */
  static from(input: unknown, field = 'layers'): LayerSelection {
    if (typeof input === 'string') return LayerSelection.parse(input, field);
    if (Array.isArray(input) && input.length > 0 && input.every((l) => typeof l === 'number' && Number.isSafeInteger(l) && l >= 0))
      return new LayerSelection((input as number[]).map((l) => [l, l]));
    const shown = Array.isArray(input) && input.length > 20 ? `a list of ${input.length} values` : JSON.stringify(input) ?? String(input);
    throw invalid(field, `must be a non-empty list of layer indices or text with ${SYNTAX_HINT}, got ${shown}`);
  }

  static parse(text: string, field = 'layers'): LayerSelection {
    if (text.length > MAX_TEXT_LENGTH) throw invalid(field, `is ${text.length} characters long; give ${SYNTAX_HINT}`);
    const parts = text.split(',').map((s) => s.trim());
    if (parts.every((p) => p === '')) throw invalid(field, `is empty; give ${SYNTAX_HINT}`);
    const ranges: [number, number][] = [];
    for (const part of parts) {
      if (part === '') continue;
      const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(part);
      if (!m) throw invalid(field, `expects ${SYNTAX_HINT}, got ${quoted(text)}`);
      const first = layerIndex(m[1]!, text, field);
      const last = m[2] === undefined ? first : layerIndex(m[2], text, field);
      if (last < first) throw invalid(field, `${quoted(part)} runs backwards; write the lower layer first (${last}-${first})`);
      ranges.push([first, last]);
    }
    return new LayerSelection(ranges);
  }

  /** How many layers are selected, counted without expanding the ranges. */
  get size(): number {
    return this.ranges.reduce((n, [a, b]) => n + (b - a + 1), 0);
  }

  /** The highest selected layer. */
  get last(): number {
    return this.ranges[this.ranges.length - 1]![1];
  }

  /** The selection written compactly ("0-3,8"). */
  toString(): string {
    return this.ranges.map(([a, b]) => (a === b ? String(a) : `${a}-${b}`)).join(',');
  }

  /** The first selected layer that is not in `present` (sorted ascending, without repeats), if any. */
  firstMissing(present: readonly number[]): number | undefined {
    let i = 0;
    for (const [a, b] of this.ranges) {
      let want = a;
      while (want <= b) {
        while (i < present.length && present[i]! < want) i++;
        if (i >= present.length || present[i] !== want) return want;
        want++;
        i++;
      }
    }
    return undefined;
  }

  /**
   * The selected layers, ascending, after checking that each is one of `present` (the layers the model
   * at `where` has, sorted ascending, without repeats). Never expands more than present.length layers.
   */
  resolve(present: readonly number[], where: string, field = 'layers'): number[] {
    const has = present.length === 0 ? 'it has no decoder layers (no model.layers.N tensors)' : `it has layers ${describeLayers(present)}`;
    this.checkLast(present.length > 0 ? present[present.length - 1]! : -1, has, where, field);
    const missing = this.firstMissing(present);
    if (missing !== undefined) throw invalid(field, `layer ${missing} does not exist in ${where} (${has})`);
    return this.expand();
  }

  /** The selected layers, ascending, after checking that each is below `numLayers` (the model at `where` has layers 0..numLayers-1). */
  resolveCount(numLayers: number, where: string, field = 'layers'): number[] {
    const has = numLayers === 0 ? 'it has no decoder layers' : `it has layers 0-${numLayers - 1}`;
    this.checkLast(numLayers - 1, has, where, field);
    return this.expand();
  }

  private checkLast(lastLayer: number, has: string, where: string, field: string): void {
    if (this.last <= lastLayer) return;
    const beyond = lastLayer < 0 ? 'selects layers of a model that has none' : `goes past its last layer ${lastLayer}`;
    throw invalid(field, `layer ${this.last} does not exist in ${where} (${has}): ${quoted(this.toString())} ${beyond}; choose layers the model has`);
  }

  /** Only called once every selected layer is known to exist, so the list is no longer than the model's layers. */
  private expand(): number[] {
    const out: number[] = [];
    for (const [a, b] of this.ranges) for (let l = a; l <= b; l++) out.push(l);
    return out;
  }
}

/** Resolves a selection (text or list) against a model with layers 0..numLayers-1 at `where`. */
export function resolveLayers(input: unknown, numLayers: number, where: string, field = 'layers'): number[] {
  return LayerSelection.from(input, field).resolveCount(numLayers, where, field);
}

/** "0-31", or "0-5, 8-31" when layers are missing. */
function describeLayers(present: readonly number[]): string {
  const parts: string[] = [];
  let start = present[0]!, prev = start;
  for (let i = 1; i <= present.length; i++) {
    const l = present[i];
    if (l === prev + 1) {
      prev = l;
      continue;
    }
    parts.push(start === prev ? String(start) : `${start}-${prev}`);
    if (l === undefined) break;
    start = prev = l;
  }
  return parts.length > 6 ? `${parts.slice(0, 3).join(', ')}, ..., ${parts.slice(-2).join(', ')}` : parts.join(', ');
}
