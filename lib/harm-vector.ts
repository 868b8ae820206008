/**
 * Harm vector files: the trimmed tau of one HDR run, kept elements only, so that one harm vector
 * patches many targets. safetensors holding "<tensor>::indices" (I32 or I64, ascending flat indices)
 * and "<tensor>::values" (F32), with the run's parameters and the full tensor list in __metadata__.
 */
import { SafetyArithmeticError } from './errors';
import { parseStrictJsonOrThrow, readSafetensorsHeader } from './checkpoint/safetensors';

export const HARM_VECTOR_FORMAT = 'safety-arithmetic/harm-vector';
export const HARM_VECTOR_VERSION = '1';

export interface HarmVectorTensor {
  name: string;
  shape: number[];
  indicesOffset: number;
  indexBytes: 4 | 8;
  valuesOffset: number;
  count: number;
}

export interface HarmVectorFile {
  file: string;
  metadata: Record<string, string>;
  /** Every float tensor of the model it was made from, with its shape. */
  shapes: Map<string, number[]>;
  /** The tensors with kept elements. */
  entries: Map<string, HarmVectorTensor>;
  /** The lambda of the run that made it, the default when patching. */
  lambda: number;
}

export interface HarmVectorMetadataInput {
  mode: string;
  topKPercent: number | null;
  lambda: number;
  layers: number[] | null;
  editMask: boolean;
  base: string;
  harmful: string;
  target: string;
  shapes: Record<string, number[]>;
}

/** The static part of the file's __metadata__, as JSON members (the native writer adds the counts). */
export function harmVectorMetadataMembers(m: HarmVectorMetadataInput): string {
  const meta: Record<string, string> = {
    format: HARM_VECTOR_FORMAT,
    version: HARM_VECTOR_VERSION,
    mode: m.mode,
    top_k_percent: m.topKPercent === null ? '' : String(m.topKPercent),
    lambda: String(m.lambda),
    layers: m.layers === null ? '' : m.layers.join(','),
    edit_mask: String(m.editMask),
    base: m.base,
    harmful: m.harmful,
    edit_mask_target: m.editMask ? m.target : '',
    tensors: JSON.stringify(m.shapes),
  };
  const json = JSON.stringify(meta);
  return json.slice(1, -1);
}

function bad(file: string, message: string, tensor?: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: ${message}`, tensor === undefined ? { file } : { file, tensor });
}

const DAMAGED = 'the file is damaged: make one again with --save-harm-vector';

/** A finite decimal number written out in full ("3", "-0.5", "1e-7"); undefined for anything else, "" included. */
export function parseDecimal(text: string | undefined): number | undefined {
  if (text === undefined || !/^-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/.test(text)) return undefined;
  const value = Number(text);
  return Number.isFinite(value) ? value : undefined;
}

/** __metadata__.tensors: a JSON object mapping every tensor name to its shape. */
function parseShapes(file: string, text: string | undefined): Map<string, number[]> {
  if (text === undefined) throw bad(file, `__metadata__.tensors is missing; ${DAMAGED}`);
  const json = parseStrictJsonOrThrow(file, text, '__metadata__.tensors', DAMAGED);
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw bad(file, `__metadata__.tensors must map tensor names to shapes; ${DAMAGED}`);
  const shapes = new Map<string, number[]>();
  for (const [name, shape] of Object.entries(json)) {
    if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0))
      throw bad(file, `__metadata__.tensors gives tensor "${name}" the shape ${JSON.stringify(shape)}, not a list of non-negative integers; ${DAMAGED}`, name);
    shapes.set(name, shape as number[]);
  }
  return shapes;
}

export function readHarmVector(file: string): HarmVectorFile {
  const h = readSafetensorsHeader(file);
  if (h.metadata.format !== HARM_VECTOR_FORMAT)
    throw bad(file, `not a harm vector (its __metadata__.format is ${JSON.stringify(h.metadata.format)}, expected "${HARM_VECTOR_FORMAT}"); make one with --save-harm-vector`);
  if (h.metadata.version !== HARM_VECTOR_VERSION)
    throw bad(file, `harm vector version ${h.metadata.version} is not supported by this version of safety-arithmetic (it reads version ${HARM_VECTOR_VERSION})`);
  const shapes = parseShapes(file, h.metadata.tensors);
  const lambda = parseDecimal(h.metadata.lambda);
  if (lambda === undefined)
    throw bad(file, `__metadata__.lambda is ${JSON.stringify(h.metadata.lambda ?? null)}, not a finite number; the file is damaged: make one again with --save-harm-vector`);
  const byName = new Map(h.tensors.map((t) => [t.name, t]));
  const entries = new Map<string, HarmVectorTensor>();
  for (const t of h.tensors) {
    if (!t.name.endsWith('::indices')) continue;
    const name = t.name.slice(0, -'::indices'.length);
    const values = byName.get(name + '::values');
    if (!values) throw bad(file, `"${t.name}" has no matching "${name}::values"`, name);
    if (t.dtype !== 'I32' && t.dtype !== 'I64') throw bad(file, `"${t.name}" must be I32 or I64, not ${t.dtype}`, name);
    if (values.dtype !== 'F32') throw bad(file, `"${name}::values" must be F32, not ${values.dtype}`, name);
    if (t.numel !== values.numel) throw bad(file, `"${name}" has ${t.numel} indices but ${values.numel} values`, name);
    if (!shapes.has(name)) throw bad(file, `"${name}" has entries but is not in __metadata__.tensors`, name);
    entries.set(name, { name, shape: shapes.get(name)!, indicesOffset: t.offset, indexBytes: t.dtype === 'I64' ? 8 : 4, valuesOffset: values.offset, count: t.numel });
  }
  for (const t of h.tensors) {
    if (t.name.endsWith('::values') && !entries.has(t.name.slice(0, -'::values'.length))) throw bad(file, `"${t.name}" has no matching indices`, t.name);
  }
  return { file, metadata: h.metadata, shapes, entries, lambda };
}
