/**
 * Harm Direction Removal: theta_safe = theta_target - lambda * trim_k(theta_harmful - theta_base),
 * with the trimming global over the region (docs/semantics.md, "Harm Direction Removal"), streamed natively.
 */
import fs from 'node:fs';
import path from 'node:path';
import { checkSameTensors, layerOf, openCheckpoint, type Checkpoint, INDEX_FILE } from './checkpoint/checkpoint';
import { planLayout, parseSize, type OutputLayout } from './checkpoint/layout';
import { COMPUTE_DTYPES, type TensorInfo } from './checkpoint/safetensors';
import { requestedDevice, resolveDevice, type Device } from './device';
import { applyThreads } from './threads';
import { SafetyArithmeticError, abortError, fromNative } from './errors';
import { LayerSelection, type LayersInput } from './layers';
import { harmVectorMetadataMembers, readHarmVector, type HarmVectorFile } from './harm-vector';
import { io, statRegularFile } from './io/files';
import { withStagedOutputs, type OutputInput, type OutputRequest } from './io/output';
import { native, type NativeDType, type NativeHdrPasses, type NativeHdrResult, type NativeHdrSpec, type NativeHdrTensor } from './native';

export type HdrMode = 'ties' | 'task-vector';
export type HdrPasses = 'auto' | 1 | 3;

export interface HdrProgress {
  phase: 'histogram' | 'threshold' | 'apply';
  doneBytes: number;
  totalBytes: number;
}

export interface HdrOptions {
  /** The model to patch: the base itself, an SFT model, or an edited model. */
  target: string;
  /** Output folder; written atomically. */
  out: string;
  /** The aligned base model (with harmful), or use harmVector. */
  base?: string;
  /** The base fine-tuned on harmful data. */
  harmful?: string;
  /** A harm vector file saved by an earlier run, in place of base and harmful. */
  harmVector?: string;
  /** ties (default): keep the topK percent of |tau| by magnitude; task-vector: subtract all of tau. */
  mode?: HdrMode;
  /** Percent of the region's elements kept by TIES trimming (default 10). */
  topK?: number;
  /** Scale of the subtracted vector (default 3 for ties; 2 for task-vector, 6 with editMask; a harm vector's own). */
  lambda?: number;
  /** Restrict the region to these decoder layers (`model.layers.N.`). */
  layers?: LayersInput;
  /** Add to the region every element where the target differs from the base (edited models). */
  editMask?: boolean;
  /** cpu, cuda or auto (default: SAFETY_ARITHMETIC_DEVICE, else auto). */
  device?: Device;
  /**
   * CPU threads, process-wide (see LoadOptions.threads; default SAFETY_ARITHMETIC_THREADS, else
   * unchanged). Each pass runs a worker per thread on the CPU (up to four on CUDA), each reading,
   * computing and writing chunks of its own.
   */
  threads?: number;
  /** Re-shard the output under this size ("5GB", "500MB", bytes); default: the target's sharding. */
  maxShardSize?: string | number;
  /** Also write the trimmed harm vector (kept elements only) to this file. */
  saveHarmVector?: string;
  /** Replace existing outputs. */
  force?: boolean;
  /** Staging memory for streaming (default 256MB). */
  bufferSize?: string | number;
  /** fsync the outputs before renaming them into place. */
  durable?: boolean;
  /**
   * How TIES finds its threshold (same result either way): 1 reads the inputs once (a sampled band
   * around the threshold; it falls back to 3 when the band misses), 3 reads base and harmful three
   * times (two histogram passes, then the apply pass); auto (default) tries 1.
   */
  passes?: HdrPasses;
  onProgress?: (p: HdrProgress) => void;
  signal?: AbortSignal;
}

export interface HdrSummary {
  out: string;
  mode: HdrMode | 'harm-vector';
  topK: number | null;
  lambda: number;
  layers: number[] | null;
  editMask: boolean;
  backend: string;
  /** Elements in the region (trimming's d). */
  regionElements: number;
  /** floor(d * k): the published keep count. */
  keepTarget: number;
  /** Elements changed: |tau| >= threshold within the region. */
  kept: number;
  /** Kept elements whose |tau| equals the threshold. */
  ties: number;
  threshold: number | null;
  files: string[];
  harmVector: string | null;
  bytesRead: number;
  bytesWritten: number;
  /** The passes over the inputs that made the output, and why (the single pass's band when it was tried). */
  passes: { requested: HdrPasses } & NativeHdrPasses;
  seconds: { total: number; sample: number; histogram: number; threshold: number; apply: number; patch: number };
}

export const METADATA_FILE = 'safety_arithmetic.json';
/** Files copied from the target folder into the output, when present. */
export const COPIED_FILES = [
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'tokenizer.model',
  'special_tokens_map.json', 'added_tokens.json', 'vocab.json', 'merges.txt', 'chat_template.jinja', 'chat_template.json',
];

function invalid(field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field}: ${message}`, { field });
}

interface Resolved {
  mode: HdrMode | 'harm-vector';
  topK: number | null;
  lambda: number;
  layers: number[] | null;
  editMask: boolean;
}

function resolveParameters(o: HdrOptions, hv: HarmVectorFile | undefined, target: Checkpoint): Resolved {
  if (hv) {
    for (const f of ['mode', 'topK', 'layers', 'editMask', 'saveHarmVector'] as const)
      if (o[f] !== undefined) throw invalid(f, `cannot be combined with harmVector: the harm vector was trimmed over its own region when it was saved`);
    const lambda = o.lambda ?? hv.lambda;
    if (!Number.isFinite(lambda)) throw invalid('lambda', `must be a finite number, got ${o.lambda}`);
    return { mode: 'harm-vector', topK: null, lambda, layers: null, editMask: false };
  }
  const mode = o.mode ?? 'ties';
  if (mode !== 'ties' && mode !== 'task-vector') throw invalid('mode', `is "${mode as string}": use ties or task-vector`);
  const editMask = o.editMask ?? false;
  let topK: number | null = null;
  if (mode === 'ties') {
    topK = o.topK ?? 10;
    if (typeof topK !== 'number' || !(topK > 0 && topK <= 100)) throw invalid('topK', `is ${topK}: give a percent in (0, 100]`);
  } else if (o.topK !== undefined) {
    throw invalid('topK', `applies to mode ties only; task-vector subtracts all of tau`);
  }
  const lambda = o.lambda ?? (mode === 'ties' ? 3 : editMask ? 6 : 2);
  if (typeof lambda !== 'number' || !Number.isFinite(lambda)) throw invalid('lambda', `must be a finite number, got ${lambda}`);
  const layers = o.layers === undefined ? null : checkLayers(target, LayerSelection.from(o.layers, 'layers'));
  return { mode, topK, lambda, layers, editMask };
}

function nativeDType(t: TensorInfo): NativeDType {
  return COMPUTE_DTYPES.has(t.dtype) ? (t.dtype as NativeDType) : 'OTHER';
}

/** The selected layers, ascending, each checked against the target's decoder layers (its `model.layers.N.` tensors) before the selection is expanded. */
function checkLayers(target: Checkpoint, selection: LayerSelection): number[] {
  const present = [...new Set(target.tensors.map((t) => layerOf(t.name)).filter((l): l is number => l !== undefined))].sort((a, b) => a - b);
  return selection.resolve(present, target.dir, 'layers');
}

function fileIndex(files: string[], file: string): number {
  let i = files.indexOf(file);
  if (i < 0) {
    files.push(file);
    i = files.length - 1;
  }
  return i;
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError();
}

/** The inputs of a run: the target, and either base and harmful or a stored harm vector. */
interface Sources {
  target: Checkpoint;
  base?: Checkpoint;
  harmful?: Checkpoint;
  hv?: HarmVectorFile;
  /** Folders and files that outputs must stay out of. */
  inputs: OutputInput[];
}

function openSources(o: HdrOptions): Sources {
  const target = openCheckpoint(o.target, 'target');
  const inputs: OutputInput[] = [{ path: target.dir, role: 'target' }];
  if (o.harmVector !== undefined) {
    const hv = readHarmVector(path.resolve(o.harmVector));
    inputs.push({ path: hv.file, role: 'harm vector' });
    return { target, hv, inputs };
  }
  const base = openCheckpoint(o.base!, 'base');
  const harmful = openCheckpoint(o.harmful!, 'harmful');
  checkSameTensors(base, 'base', harmful, 'harmful');
  checkSameTensors(base, 'base', target, 'target');
  inputs.push({ path: base.dir, role: 'base' }, { path: harmful.dir, role: 'harmful' });
  return { target, base, harmful, inputs };
}

/** What the native job reads and writes for each output tensor, in output order. */
function planTensors(layout: OutputLayout, src: Sources, p: Resolved): { files: string[]; tensors: NativeHdrTensor[]; shapes: Record<string, number[]> } {
  const { base, harmful, hv } = src;
  const files: string[] = [];
  const tensors: NativeHdrTensor[] = [];
  const shapes = Object.create(null) as Record<string, number[]>;
  layout.shards.forEach((shard, outFile) => {
    for (const { tensor: t, offset } of shard.tensors) {
      const compute = COMPUTE_DTYPES.has(t.dtype);
      const nt: NativeHdrTensor = {
        name: t.name, shape: t.shape, numel: t.numel, nbytes: t.nbytes, compute, wholeRegion: false,
        base: null, harmful: null, target: { file: fileIndex(files, t.file), offset: t.offset, dtype: nativeDType(t) },
        sparse: null, outFile, outOffset: offset,
      };
      if (base && harmful) {
        const b = base.byName.get(t.name)!, h = harmful.byName.get(t.name)!;
        if (compute !== COMPUTE_DTYPES.has(b.dtype) || compute !== COMPUTE_DTYPES.has(h.dtype)) {
          // Name the file whose dtype kind differs from the other two.
          const odd = COMPUTE_DTYPES.has(b.dtype) === COMPUTE_DTYPES.has(h.dtype) ? t.file : compute === COMPUTE_DTYPES.has(b.dtype) ? h.file : b.file;
          throw new SafetyArithmeticError('SA_MISMATCH', `${odd}: tensor "${t.name}" is ${t.dtype} in the target (${t.file}), ${b.dtype} in the base (${b.file}) and ${h.dtype} in the harmful model (${h.file}); it must be a float tensor (F32, F16, BF16) in all three or in none: the checkpoints must come from the same architecture`, { tensor: t.name, file: odd });
        }
        if (compute) {
          nt.base = { file: fileIndex(files, b.file), offset: b.offset, dtype: nativeDType(b) };
          nt.harmful = { file: fileIndex(files, h.file), offset: h.offset, dtype: nativeDType(h) };
          nt.wholeRegion = p.layers === null || p.layers.includes(layerOf(t.name) ?? -1);
          shapes[t.name] = t.shape;
        }
      } else if (hv && compute) {
        const shape = hv.shapes.get(t.name);
        if (!shape || shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i]))
          throw new SafetyArithmeticError('SA_MISMATCH', `${hv.file}: the harm vector ${shape ? `has shape ${JSON.stringify(shape)} for` : 'does not list'} tensor "${t.name}" (${JSON.stringify(t.shape)} in ${t.file}); it was made for another architecture`, { file: hv.file, tensor: t.name });
        const e = hv.entries.get(t.name);
        if (e) nt.sparse = { file: fileIndex(files, hv.file), indicesOffset: e.indicesOffset, indexBytes: e.indexBytes, valuesOffset: e.valuesOffset, count: e.count };
      }
      tensors.push(nt);
    }
  });
  if (hv) {
    const targetFloat = new Set(src.target.tensors.filter((t) => COMPUTE_DTYPES.has(t.dtype)).map((t) => t.name));
    const extra = [...hv.shapes.keys()].filter((n) => !targetFloat.has(n));
    if (extra.length > 0)
      throw new SafetyArithmeticError('SA_MISMATCH', `${hv.file}: the harm vector covers tensor "${extra[0]}", which the target ${src.target.dir} does not hold as a float tensor; it was made for another architecture`, { file: hv.file, tensor: extra[0]! });
  }
  return { files, tensors, shapes };
}

/** Runs the native job; an AbortSignal cancels it between chunks. */
async function runNative(spec: NativeHdrSpec, o: HdrOptions): Promise<NativeHdrResult> {
  checkAbort(o.signal);
  const binding = native();
  const token = new binding.CancelToken();
  const onAbort = () => token.cancel();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const progress = o.onProgress;
    return await binding.runHdr(spec, progress ? (phase, done, total) => progress({ phase: phase as HdrProgress['phase'], doneBytes: done, totalBytes: total }) : null, token);
  } catch (err) {
    throw fromNative(err);
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
}

/** The rest of the output folder: the index, the target's config and tokenizer files. Returns the names written. */
function writeCompanions(dir: string, target: Checkpoint, layout: OutputLayout): string[] {
  const written: string[] = [];
  if (layout.index) {
    const file = path.join(dir, INDEX_FILE);
    io(file, 'cannot write the index', () => fs.writeFileSync(file, JSON.stringify(layout.index, null, 2) + '\n'));
    written.push(INDEX_FILE);
  }
  for (const f of COPIED_FILES) {
    const src = path.join(target.dir, f);
    if (!fs.existsSync(src)) continue;
    statRegularFile(src, `the target's ${f}`);
    const dest = path.join(dir, f);
    io(dest, `cannot copy the target's ${f} here`, () => {
      fs.copyFileSync(src, dest);
      fs.chmodSync(dest, 0o644);
    });
    written.push(f);
  }
  return written;
}

function checkOptions(o: HdrOptions): void {
  if (!o || typeof o !== 'object') throw invalid('options', 'must be an object');
  if (typeof o.target !== 'string') throw invalid('target', 'the folder of the model to patch is required');
  if (typeof o.out !== 'string') throw invalid('out', 'the output folder is required');
  if (o.harmVector !== undefined && (o.base !== undefined || o.harmful !== undefined))
    throw invalid('harmVector', 'give either harmVector or base and harmful, not both');
  if (o.harmVector === undefined && (o.base === undefined || o.harmful === undefined))
    throw invalid(o.base === undefined ? 'base' : 'harmful', 'base and harmful are required (or a harmVector file)');
}

/** A run whose inputs are open and whose parameters are checked; nothing is written yet. */
export interface PreparedHdr {
  options: HdrOptions;
  sources: Sources;
  params: Resolved;
  device: Device;
  bufferBytes: number;
  passes: HdrPasses;
  layout: OutputLayout;
  started: bigint;
}

/** Validates the options, opens and checks every input. Writes nothing. */
export function prepareHdr(options: HdrOptions): PreparedHdr {
  const started = process.hrtime.bigint();
  const o = options;
  checkOptions(o);
  applyThreads(o.threads);
  checkAbort(o.signal);
  const device = requestedDevice(o.device);
  resolveDevice(device);
  const bufferBytes = o.bufferSize === undefined ? 256 * 1024 * 1024 : parseSize(o.bufferSize, 'bufferSize');
  const maxShard = o.maxShardSize === undefined ? undefined : parseSize(o.maxShardSize, 'maxShardSize');
  const passes = o.passes ?? 'auto';
  if (passes !== 'auto' && passes !== 1 && passes !== 3) throw invalid('passes', `is ${JSON.stringify(passes)}: use 'auto', 1 or 3`);
  const sources = openSources(o);
  const params = resolveParameters(o, sources.hv, sources.target);
  const layout = planLayout(sources.target, maxShard);
  return { options: o, sources, params, device, bufferBytes, passes, layout, started };
}

/** The outputs a run writes, for the output policy. */
export function hdrOutputs(o: HdrOptions): OutputRequest[] {
  const requests: OutputRequest[] = [{ dest: o.out, kind: 'folder', field: 'out' }];
  if (o.saveHarmVector !== undefined) requests.push({ dest: o.saveHarmVector, kind: 'file', field: 'saveHarmVector' });
  return requests;
}

/** The native job that writes the run's shards into `folder` (and the harm vector into harmVectorFile). */
function nativeSpec(prep: PreparedHdr, folder: string, harmVectorFile: string | undefined): NativeHdrSpec {
  const { options: o, sources: src, params: p, layout, device } = prep;
  const { target, base, harmful, hv } = src;
  const { files, tensors, shapes } = planTensors(layout, src, p);
  return {
    files,
    tensors,
    outputs: layout.shards.map((s) => ({ path: path.join(folder, s.name), header: s.header, size: s.size })),
    fromHarmVector: hv !== undefined,
    trim: p.mode === 'ties',
    topK: (p.topK ?? 100) / 100,
    lambda: p.lambda,
    editMask: p.editMask,
    saveHarmVector: harmVectorFile ?? '',
    harmVectorMetadata: harmVectorFile
      ? harmVectorMetadataMembers({ mode: p.mode, topKPercent: p.topK, lambda: p.lambda, layers: p.layers, editMask: p.editMask, base: base!.dir, harmful: harmful!.dir, target: target.dir, shapes })
      : '',
    device,
    bufferBytes: prep.bufferBytes,
    durable: o.durable ?? false,
    passes: String(prep.passes) as NativeHdrSpec['passes'],
  };
}

/**
 * Writes the patched checkpoint into `folder` (an empty staging folder the caller owns) and the
 * harm vector into `harmVectorFile`; `dests` are the final paths, for the summary and the record.
 */
export async function patchInto(prep: PreparedHdr, folder: string, harmVectorFile: string | undefined, dests: { out: string; harmVector: string | null }): Promise<HdrSummary> {
  const { options: o, sources: src, params: p, layout, device } = prep;
  const { target, base, harmful, hv } = src;
  const result = await runNative(nativeSpec(prep, folder, harmVectorFile), o);
  checkAbort(o.signal);
  const companions = writeCompanions(folder, target, layout);
  const seconds = {
    total: Number(process.hrtime.bigint() - prep.started) / 1e9,
    sample: result.seconds.sample,
    histogram: result.seconds.histogram,
    threshold: result.seconds.threshold,
    apply: result.seconds.apply,
    patch: result.seconds.patch,
  };
  const passes = { requested: prep.passes, ...result.passes };
  const summary: HdrSummary = {
    out: dests.out,
    mode: p.mode,
    topK: p.topK,
    lambda: p.lambda,
    layers: p.layers,
    editMask: p.editMask,
    backend: result.backend,
    regionElements: result.regionElements,
    keepTarget: p.mode === 'ties' ? result.keepTarget : result.kept,
    kept: result.kept,
    ties: result.ties,
    threshold: result.threshold,
    files: [...layout.shards.map((s) => s.name), ...companions, METADATA_FILE],
    harmVector: dests.harmVector,
    bytesRead: result.bytesRead,
    bytesWritten: result.bytesWritten,
    passes,
    seconds,
  };
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const version = (require('../../package.json') as { version: string }).version;
  const record = {
    tool: 'safety-arithmetic',
    version,
    created: new Date().toISOString(),
    operation: 'harm-direction-removal',
    formula: 'out = target - lambda * trim_k(harmful - base), float32, rounded once to the target dtype',
    inputs: { target: target.dir, base: base?.dir ?? null, harmful: harmful?.dir ?? null, harmVector: hv?.file ?? null },
    parameters: { mode: p.mode, topKPercent: p.topK, lambda: p.lambda, layers: p.layers, editMask: p.editMask, device },
    result: {
      backend: result.backend, regionElements: result.regionElements, keepTarget: summary.keepTarget, kept: result.kept,
      tiesAtThreshold: result.ties, threshold: result.threshold, thresholdBits: result.thresholdBits, passes,
    },
    harmVectorSaved: summary.harmVector,
    seconds,
  };
  const recordFile = path.join(folder, METADATA_FILE);
  io(recordFile, 'cannot write the run record', () => fs.writeFileSync(recordFile, JSON.stringify(record, null, 2) + '\n'));
  return summary;
}

/** Patches a checkpoint: target - lambda * trim_k(harmful - base), written as a new checkpoint folder. */
export async function removeHarmDirection(options: HdrOptions): Promise<HdrSummary> {
  const prep = prepareHdr(options);
  const o = prep.options;
  return withStagedOutputs(hdrOutputs(o), { force: o.force ?? false, inputs: prep.sources.inputs }, ([folder, hvOut]) =>
    patchInto(prep, folder!.temp, hvOut?.temp, { out: folder!.dest, harmVector: hvOut ? hvOut.dest : null }),
  );
}

/**
 * The benchmark's floor (bench/hdr.js): the same job's reads of base, harmful and target and its
 * writes of an output of the same size, through the same staging and rename, with nothing computed
 * (the output holds the target's values). Seconds are measured from the start, as a run's total.
 */
export async function hdrIoFloor(options: HdrOptions): Promise<{ seconds: number; bytesRead: number; bytesWritten: number }> {
  const prep = prepareHdr(options);
  const o = prep.options;
  return withStagedOutputs([{ dest: o.out, kind: 'folder', field: 'out' }], { force: o.force ?? false, inputs: prep.sources.inputs }, async ([folder]) => {
    const result = await runNative({ ...nativeSpec(prep, folder!.temp, undefined), ioOnly: true }, o);
    return { seconds: Number(process.hrtime.bigint() - prep.started) / 1e9, bytesRead: result.bytesRead, bytesWritten: result.bytesWritten };
  });
}
