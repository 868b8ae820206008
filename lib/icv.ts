/**
 * In-context vectors for Safety Alignment (docs/semantics.md, "ICV extraction"): from (unsafe, safe) demonstration
 * pairs, each decoder layer's output averaged over the last 4 positions, unsafe minus safe, one joint
 * rank-1 PCA over the chosen layers; direction = first component + mean row, reshaped [layers, H].
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { readSafetensorsHeader, renderSafetensors } from './checkpoint/safetensors';
import { writeOutputFile, type FileOutputOptions } from './io/output';
import { SafetyArithmeticError } from './errors';
import { io, openRegularFile, readTextFile } from './io/files';
import { resolveLayers, type LayersInput } from './layers';
import type { LanguageModel, TokensOrText } from './model/model';
import { rankOnePca } from './pca';

export const ICV_FORMAT = 'safety-arithmetic/icv';
export const ICV_VERSION = '1';
export const ICV_FILE = 'icv.safetensors';
/** The published default steering strength. */
export const DEFAULT_ALPHA = 0.12;
export const LAST_POSITIONS = 4;
export const STEERING_FORMULA =
  'x <- ||x|| * normalize(normalize(x) - 0.1 * sum_i alpha_i (1 + relu(cos(x, v_i))) normalize(v_i) / n) on each MLP output';

export interface DemoPair {
  unsafe: TokensOrText;
  safe: TokensOrText;
}

export interface InContextVector {
  /** Decoder layers the vector steers, ascending. */
  layers: number[];
  hiddenSize: number;
  /** [layers.length, hiddenSize] row-major. */
  vectors: Float32Array;
  defaultAlpha: number;
  /** Fingerprint of the model it was computed on. */
  modelFingerprint: string;
  /** The folder of the model it was computed on, when known (saveIcv never writes into it). */
  modelDir?: string;
  metadata: Record<string, string>;
}

export interface IcvOptions {
  /** Decoder layers to compute and steer, as a list or text such as "4-6" (default: all). */
  layers?: LayersInput;
  /** Stored as the default steering strength (default 0.12, as published). */
  defaultAlpha?: number;
  /** Pairs per forward batch (default 16). */
  batchSize?: number;
}

function invalid(field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field}: ${message}`, { field });
}

/** Reads demonstration pairs from JSONL: one {"unsafe": ..., "safe": ...} per line, text or token ids. */
export function readDemos(file: string): DemoPair[] {
  const text = readTextFile(file, 'the demonstrations file', undefined, 'demos');
  const pairs: DemoPair[] = [];
  const refuse = (line: number, message: string) =>
    new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${file}:${line}: ${message}`, { file, field: 'demos' });
  const isIds = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0);
  const ok = (v: unknown) => (typeof v === 'string' ? v.length > 0 : isIds(v));
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      throw refuse(i + 1, `not valid JSON (${(err as Error).message}); each line must be {"unsafe": ..., "safe": ...}`);
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw refuse(i + 1, 'not a JSON object; each line must be {"unsafe": ..., "safe": ...}');
    const o = obj as Record<string, unknown>;
    if (!ok(o.unsafe) || !ok(o.safe)) throw refuse(i + 1, '"unsafe" and "safe" must each be non-empty text or a list of token ids');
    pairs.push({ unsafe: o.unsafe as TokensOrText, safe: o.safe as TokensOrText });
  });
  if (pairs.length === 0) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${file}: no demonstration pairs; give one {"unsafe": ..., "safe": ...} per line`, { file, field: 'demos' });
  return pairs;
}

/** The demonstrations shipped with the package (data/default-demos.jsonl). */
export function defaultDemosFile(): string {
  return path.join(__dirname, '..', '..', 'data', 'default-demos.jsonl');
}

/** Hash of the model's config, tensor layout and a sample of every tensor's bytes. */
export function modelFingerprint(model: LanguageModel): string {
  const h = crypto.createHash('sha256');
  const c = model.config;
  h.update(JSON.stringify([c.architecture, c.vocabSize, c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim]));
  for (const f of fs.readdirSync(model.dir).filter((f) => f.endsWith('.safetensors') && f !== ICV_FILE).sort()) {
    const file = path.join(model.dir, f);
    const header = readSafetensorsHeader(file);
    const fd = fs.openSync(file, 'r');
    try {
      for (const t of header.tensors) {
        h.update(`${t.name}:${t.dtype}:${t.shape.join('x')};`);
        const n = Math.min(t.nbytes, 256);
        const buf = Buffer.alloc(2 * n);
        fs.readSync(fd, buf, 0, n, t.offset);
        fs.readSync(fd, buf, n, n, t.offset + t.nbytes - n);
        h.update(buf);
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return h.digest('hex').slice(0, 32);
}

/** Computes the ICV of a model from demonstration pairs. */
export async function computeIcv(model: LanguageModel, demos: DemoPair[], options: IcvOptions = {}): Promise<InContextVector> {
  const L = model.config.numLayers, H = model.config.hiddenSize;
  const layers = resolveLayers(options.layers ?? `0-${L - 1}`, L, model.dir, 'layers');
  if (demos.length === 0) throw invalid('demos', 'at least one demonstration pair is needed');
  const defaultAlpha = options.defaultAlpha ?? DEFAULT_ALPHA;
  if (!Number.isFinite(defaultAlpha)) throw invalid('defaultAlpha', 'must be a finite number');
  const batchSize = options.batchSize ?? 16;
  const D = layers.length * H;
  const rows: Float64Array[] = [];
  for (let start = 0; start < demos.length; start += batchSize) {
    const chunk = demos.slice(start, start + batchSize);
    const inputs = chunk.flatMap((p) => [p.unsafe, p.safe]);
    const outs = await model.forward(inputs, { capture: ['layer_out'], lastOnly: true });
    for (let k = 0; k < chunk.length; k++) {
      const pooled = [outs[2 * k]!, outs[2 * k + 1]!].map((r) => {
        const T = r.tokens.length;
        const first = Math.max(0, T - LAST_POSITIONS), count = T - first;
        const out = new Float64Array(D);
        layers.forEach((l, li) => {
          for (let t = first; t < T; t++) {
            const base = (l * T + t) * H;
            for (let j = 0; j < H; j++) out[li * H + j]! += r.layerOut![base + j]!;
          }
          for (let j = 0; j < H; j++) out[li * H + j]! /= count;
        });
        return out;
      });
      const row = new Float64Array(D);
      for (let j = 0; j < D; j++) row[j] = pooled[0]![j]! - pooled[1]![j]!;
      rows.push(row);
    }
  }
  const pca = rankOnePca(rows, D);
  const vectors = new Float32Array(D);
  for (let j = 0; j < D; j++) vectors[j] = pca.component[j]! + pca.mean[j]!;
  return {
    layers,
    hiddenSize: H,
    vectors,
    defaultAlpha,
    modelFingerprint: modelFingerprint(model),
    modelDir: model.dir,
    metadata: { pairs: String(demos.length) },
  };
}

/** The bytes of an ICV file. */
export function icvFileBytes(icv: InContextVector): Buffer[] {
  return renderSafetensors([{ name: 'icv', dtype: 'F32', shape: [icv.layers.length, icv.hiddenSize], data: icv.vectors }], {
    ...icv.metadata,
    format: ICV_FORMAT,
    version: ICV_VERSION,
    layers: icv.layers.join(','),
    hook: 'mlp_out',
    formula: STEERING_FORMULA,
    pooling: `mean of the last ${LAST_POSITIONS} positions of each decoder layer output; unsafe - safe`,
    pca: 'joint rank-1 over the chosen layers; first right singular vector (svd_flip sign) + mean row',
    default_alpha: String(icv.defaultAlpha),
    hidden_size: String(icv.hiddenSize),
    model_fingerprint: icv.modelFingerprint,
  });
}

/**
 * Saves an ICV file under the output policy: an existing file is replaced only with force, and the
 * file is never written into the model folder the ICV was computed on (nor any of options.inputs).
 * Returns the absolute path written.
 */
export function saveIcv(file: string, icv: InContextVector, options: FileOutputOptions = {}): string {
  const inputs = [...(options.inputs ?? [])];
  if (icv.modelDir !== undefined) inputs.push({ path: icv.modelDir, role: 'model' });
  return writeOutputFile(file, icvFileBytes(icv), { ...options, inputs });
}

function bad(file: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: ${message}`, { file });
}

export function loadIcv(file: string): InContextVector {
  // Number('') and Number(' ') are 0: only a plain decimal number counts.
  const strictNumber = (text: string | undefined): number =>
    text !== undefined && /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text) ? Number(text) : Number.NaN;
  const h = readSafetensorsHeader(file);
  const m = h.metadata;
  if (m.format !== ICV_FORMAT) throw bad(file, `not an ICV file (__metadata__.format is ${JSON.stringify(m.format)}, expected "${ICV_FORMAT}"); make one with "safety-arithmetic icv"`);
  if (m.version !== ICV_VERSION) throw bad(file, `ICV version ${m.version} is not supported (this version reads ${ICV_VERSION})`);
  const t = h.tensors.find((x) => x.name === 'icv');
  if (!t || t.dtype !== 'F32' || t.shape.length !== 2) throw bad(file, 'must hold an F32 tensor "icv" of shape [layers, hidden]');
  const layers = (m.layers ?? '').split(',').filter((s) => s !== '').map(strictNumber);
  if (layers.length !== t.shape[0] || !layers.every((l) => Number.isSafeInteger(l) && l >= 0))
    throw bad(file, `__metadata__.layers (${m.layers}) does not match the tensor's ${t.shape[0]} rows`);
  const hidden = strictNumber(m.hidden_size);
  if (hidden !== t.shape[1]) throw bad(file, `__metadata__.hidden_size (${m.hidden_size}) does not match the tensor's ${t.shape[1]} columns`);
  const alpha = strictNumber(m.default_alpha);
  if (!Number.isFinite(alpha))
    throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: __metadata__.default_alpha is ${JSON.stringify(m.default_alpha ?? null)}, not a finite number; write a number there (the published default is ${DEFAULT_ALPHA}) or compute the ICV again`, { file, field: 'default_alpha' });
  const buf = Buffer.alloc(t.nbytes);
  const fd = openRegularFile(file, 'the ICV file');
  try {
    for (let done = 0; done < t.nbytes; ) {
      const n = io(file, 'cannot read the ICV file', () => fs.readSync(fd, buf, done, t.nbytes - done, t.offset + done));
      if (n === 0) throw bad(file, `the file ends inside tensor "icv"; it is truncated: compute the ICV again`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  const vectors = new Float32Array(buf.buffer, buf.byteOffset, t.numel).slice();
  const at = vectors.findIndex((v) => !Number.isFinite(v));
  if (at >= 0) {
    const row = Math.floor(at / hidden);
    throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: tensor "icv" row ${row} (layer ${layers[row]}) holds ${vectors[at]} at column ${at % hidden}; an ICV must be finite: compute it again with "safety-arithmetic icv"`, { file, tensor: 'icv' });
  }
  return { layers, hiddenSize: hidden, vectors, defaultAlpha: alpha, modelFingerprint: m.model_fingerprint ?? '', metadata: m };
}

/** Refuses an ICV that does not fit the model: wrong hidden size or a layer it does not have. */
export function checkIcvFits(icv: InContextVector, model: LanguageModel, file = 'ICV'): void {
  if (icv.hiddenSize !== model.config.hiddenSize)
    throw new SafetyArithmeticError('SA_MISMATCH', `${file}: the ICV has hidden size ${icv.hiddenSize} but ${model.dir} has ${model.config.hiddenSize}; it was made for another model`, { file });
  const bad = icv.layers.filter((l) => l >= model.config.numLayers);
  if (bad.length > 0)
    throw new SafetyArithmeticError('SA_MISMATCH', `${file}: the ICV steers layer ${bad.join(', ')} but ${model.dir} has ${model.config.numLayers} layers; it was made for another model`, { file });
}
