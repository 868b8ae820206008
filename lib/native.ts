/** The native binding: its whole surface, typed, and the loader that finds it. */
import path from 'node:path';
import { SafetyArithmeticError } from './errors';

export type NativeDType = 'F32' | 'F16' | 'BF16' | 'OTHER';

export interface NativeTensorSource {
  file: number;
  offset: number;
  dtype: NativeDType;
}

export interface NativeSparseSource {
  file: number;
  indicesOffset: number;
  indexBytes: 4 | 8;
  valuesOffset: number;
  count: number;
}

export interface NativeHdrTensor {
  name: string;
  shape: number[];
  numel: number;
  nbytes: number;
  compute: boolean;
  wholeRegion: boolean;
  base: NativeTensorSource | null;
  harmful: NativeTensorSource | null;
  target: NativeTensorSource;
  sparse: NativeSparseSource | null;
  outFile: number;
  outOffset: number;
}

export interface NativeHdrSpec {
  files: string[];
  tensors: NativeHdrTensor[];
  outputs: { path: string; header: Buffer; size: number }[];
  fromHarmVector: boolean;
  trim: boolean;
  topK: number;
  lambda: number;
  editMask: boolean;
  saveHarmVector: string;
  harmVectorMetadata: string;
  device: string;
  bufferBytes: number;
  durable: boolean;
  /** Threshold passes: auto, 1 (single pass, falling back to 3 when its band misses) or 3. */
  passes?: 'auto' | '1' | '3';
  /** The benchmark's I/O floor: read the inputs, write the target unchanged. */
  ioOnly?: boolean;
}

export interface NativeHdrPasses {
  ran: number;
  reason: string;
  band: { sampleElements: number; loBits: number; hiBits: number; provisionalBits: number; entries: number; capacityBytes: number; patched: number } | null;
}

export interface NativeHdrResult {
  backend: string;
  regionElements: number;
  keepTarget: number;
  kept: number;
  ties: number;
  thresholdBits: number | null;
  threshold: number | null;
  bytesRead: number;
  bytesWritten: number;
  seconds: { histogram: number; threshold: number; apply: number; sample: number; patch: number };
  passes: NativeHdrPasses;
}

/**
 * What the addon's errors carry (csrc/addon/native_errors.h): a code from the shared list, and the
 * file, tensor and field where known. lib/errors.ts `fromNative` turns them into SafetyArithmeticError.
 */
export interface NativeErrorProperties {
  code: string;
  file?: string;
  tensor?: string;
  field?: string;
}

export interface NativeBackendStatus {
  name: string;
  available: boolean;
  reason: string;
  description: string;
  library: string;
}

export interface NativeCancelToken {
  cancel(): void;
  readonly cancelled: boolean;
}

/**
 * A KV cache and its seeded generator. reset, seed and dispose are refused while a forward or step
 * using the session runs; every use after dispose() is an SA_INVALID_ARGUMENT error.
 */
export interface NativeSession {
  reset(): void;
  seed(n: number): void;
  /** Frees the KV cache now (V8 is told); disposing twice does nothing. */
  dispose(): void;
  readonly length: number;
  /** KV-cache bytes allocated now (0 once disposed). */
  readonly bytes: number;
  readonly disposed: boolean;
}

export interface NativeSeq {
  tokens: Int32Array;
  session?: NativeSession;
  /** (steering vector id, alpha) pairs */
  steer?: [number, number][];
  sampling?: { temperature: number; topK: number; topP: number };
  /**
   * step only (default true): false for a chunk carrying part of a prompt; the cache grows, nothing
   * is sampled, the generator does not advance, and the step returns -1 for this sequence.
   */
  sample?: boolean;
}

export interface NativeForwardResult {
  logits: Float32Array;
  layerOut?: Float32Array;
  mlpOut?: Float32Array;
  mlpRaw?: Float32Array;
}

export interface NativeModel {
  readonly backend: string;
  readonly weightBytes: number;
  /** Weights, steering vectors and the forward workspace (reported to V8 as external memory). */
  readonly residentBytes: number;
  /** KV-cache bytes per token of one sequence: 2 x layers x kv heads x head_dim x 4 (float32 cache). */
  readonly kvBytesPerToken: number;
  /** KV-cache bytes allocated now by all live sessions of this model. */
  readonly kvCacheBytes: number;
  /** Sessions of this model not yet disposed or collected. */
  readonly liveSessions: number;
  forward(batch: NativeSeq[], options: { lastOnly: boolean; layerOut: boolean; mlpOut: boolean; mlpRaw?: boolean }): Promise<NativeForwardResult[]>;
  /** Model::step: a forward pass, then each sampling sequence's next token (-1 where sample is false). */
  step(batch: NativeSeq[]): Promise<{ tokens: Int32Array }>;
  /** maxTokens bounds the session's cache: it never allocates room for more, and refuses to grow past it. */
  createSession(maxTokens?: number): NativeSession;
  addIcv(layers: Int32Array, vectors: Float32Array): number;
  removeIcv(id: number): void;
  dispose(): void;
}

export interface NativeModelSpec {
  device: string;
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  rmsEps: number;
  invFreq: Float32Array;
  attentionScaling: number;
  slidingWindow: number;
  tieEmbeddings: boolean;
  weightsFloat32: boolean;
  kvCacheDtype: 'F32' | 'BF16' | 'F16';
  matmulPrecision: 'F32' | 'BF16';
  weights: { name: string; file: string; offset: number; dtype: string; numel: number }[];
}

export interface NativeBinding {
  cudaBenchSteer(rows: number, hidden: number, dtype: 'F32' | 'BF16' | 'F16', iters: number): { steerUs: number; copyUs: number };
  steerRows(x: Float32Array, hidden: number, vectors: Float32Array, alphas: Float32Array): void;
  loadModel(spec: NativeModelSpec): Promise<NativeModel>;
  /** The native memory V8 has been told of (weights, steering vectors, workspaces, KV caches), in bytes. */
  externalMemory(): number;
  abiVersion: number;
  backends(): NativeBackendStatus[];
  selectBackend(device: string): string;
  /** Sets the CPU thread count (0: the CPUs available to the process); returns the count in use. */
  setThreads(n: number): number;
  /** Every error code of csrc/common/error_codes.def, as the addon was built with it. */
  errorCodes(): string[];
  runHdr(spec: NativeHdrSpec, onProgress: ((phase: string, done: number, total: number) => void) | null, token: NativeCancelToken): Promise<NativeHdrResult>;
  CancelToken: new () => NativeCancelToken;
}

export const packageRoot = path.resolve(__dirname, '..', '..');

let cached: NativeBinding | undefined;
let cachedPath: string | undefined;

/** Loads the addon (build/Release, then prebuilds/<platform>-<arch>), with a message that says how to fix a failure. */
export function native(): NativeBinding {
  if (cached) return cached;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const load = require('node-gyp-build') as ((dir: string) => NativeBinding) & { resolve?: (dir: string) => string };
  try {
    cachedPath = load.resolve ? load.resolve(packageRoot) : undefined;
    cached = load(packageRoot);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new SafetyArithmeticError(
      'SA_ADDON_LOAD',
      `safety-arithmetic: the native addon could not be loaded for ${process.platform}-${process.arch} (Node ${process.version}): ${why}\n` +
        'Prebuilt binaries ship for linux-x64 (glibc). Elsewhere build from source with `npm rebuild safety-arithmetic` ' +
        '(needs cmake >= 3.18, a C++17 compiler, and cmake-js plus node-addon-api installed; nvcc is optional).',
    );
  }
  return cached;
}

/** The file the addon was loaded from. */
export function nativePath(): string | undefined {
  native();
  return cachedPath;
}
