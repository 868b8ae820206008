/**
 * A language model on the native engine: load a Hugging Face folder, run forward passes over ragged
 * batches (logits, layer outputs, MLP outputs), and generate text or tokens.
 */
import fs from 'node:fs';
import path from 'node:path';
import { openCheckpoint } from '../checkpoint/checkpoint';
import { COMPUTE_DTYPES } from '../checkpoint/safetensors';
import { requestedDevice, resolveDevice, type Device } from '../device';
import { SafetyArithmeticError, fromNative } from '../errors';
import { native } from '../native';
import type { NativeModel, NativeSeq } from '../native';
import { TextTokenizer } from '../text';
import type { ChatMessage } from '../text';
import { checkConfigFitsTensors, expectedTensorNames, readModelConfig, type ModelConfig } from './config';
import { StepScheduler, type SchedulerStats, type StepEvent } from './scheduler';
import { applyThreads } from '../threads';

export type { StepEvent } from './scheduler';

export type TokensOrText = string | ArrayLike<number>;

export interface LoadOptions {
  device?: Device;
  /** 'auto' keeps the checkpoint's dtype on the device (float32 math either way); 'float32' converts the weights. */
  weights?: 'auto' | 'float32';
  /** Load the tokenizer when the folder has one (default true). */
  tokenizer?: boolean;
  /** The most sequences generated in one step; further requests wait for a place (default 64). */
  maxBatchSequences?: number;
  /**
   * Tokens fed per generation step (default 256): every decoding sequence's next token first, then
   * chunks of the prompts being prefilled, so that a long prompt never stalls the streams already
   * decoding. Chunking does not change any sequence's tokens.
   */
  maxStepTokens?: number;
  /**
   * KV-cache bytes that running sequences may reserve in all (default: unlimited). Each sequence
   * reserves (prompt tokens + maxNewTokens) x kvBytesPerToken when it starts; those that do not fit
   * wait, in arrival order, until reservations are released. A request larger than the whole budget
   * fails at once (SA_INVALID_ARGUMENT, field maxNewTokens).
   */
  kvCacheBytes?: number;
  /**
   * How the KV cache holds keys and values (default 'f32'). 'bf16' and 'f16' halve its memory and
   * the bytes attention reads; each key and value is rounded to that type as it enters the cache
   * (docs/semantics.md, "KV cache"), so logits move within that rounding. CPU only: the CUDA backend
   * refuses them (SA_INVALID_ARGUMENT, field kvCacheDtype).
   */
  kvCacheDtype?: KvCacheDtype;
  /**
   * How bf16 weight matrices are multiplied (default 'f32'). 'f32' widens the weights and keeps the
   * activations in float32. 'bf16' rounds the activations to bf16 before each product with a bf16
   * matrix and takes the products in pairs with the CPU's bf16 dot-product instruction (the
   * arithmetic llama.cpp uses for bf16 weights): about twice the prefill speed, logits within
   * bf16 rounding of 'f32' (docs/semantics.md, "The engine's arithmetic"). Results stay the same
   * alone or in any batch. F32 and F16 weights are multiplied in float32 either way. Needs the
   * avx512 kernel variant on a CPU with AVX512_BF16; elsewhere (and on CUDA) loading fails with
   * SA_DEVICE_UNAVAILABLE (field matmulPrecision) and says why.
   */
  matmulPrecision?: MatmulPrecision;
  /**
   * CPU threads (1-1024) for this and later work in the process: the thread pool is shared by every
   * model and HDR run. Default: SAFETY_ARITHMETIC_THREADS, else the count already set (at first, the
   * CPUs available to the process). Results are the same with any count.
   */
  threads?: number;
}

/** Counters of the generation scheduler, for a server's metrics and health. */
export interface GenerationStats extends SchedulerStats {
  /** running + waiting. */
  inFlight: number;
  /** KV-cache bytes allocated now by this model's sessions, and the sessions alive (not disposed or collected). */
  kvBytesAllocated: number;
  liveSessions: number;
}

/** A steering request: the vector (added with addSteeringVector) and its alpha. */
export interface SteerRequest {
  vector: SteeringVectorHandle;
  alpha: number;
}

export interface SteeringVectorHandle {
  readonly id: number;
  readonly layers: readonly number[];
}

export interface ForwardOptions {
  /**
   * Capture each decoder layer's output (residual stream after the layer), each MLP output as the
   * steering hook left it (mlp_out), or before the hook (mlp_raw).
   */
  capture?: ('layer_out' | 'mlp_out' | 'mlp_raw')[];
  /** Only the last position's logits (default: all positions). */
  lastOnly?: boolean;
  steer?: SteerRequest[];
}

export interface ForwardResult {
  tokens: number[];
  /** [T, V] row-major (T = 1 with lastOnly). */
  logits: Float32Array;
  /** [L, T, H] row-major, when captured. */
  layerOut?: Float32Array;
  mlpOut?: Float32Array;
  mlpRaw?: Float32Array;
}

export interface GenerateOptions {
  maxNewTokens?: number;
  /** Greedy decoding (the default unless temperature is given). */
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Stop when the generated text contains one of these (it is cut before it). */
  stop?: string[];
  /** Keep generating past end-of-sequence tokens (as fixed-length reference decoding does). */
  ignoreEos?: boolean;
  /** Render text prompts with the chat template (user message) before encoding. */
  chat?: boolean;
  steer?: SteerRequest[];
  signal?: AbortSignal;
}

export interface GeneratedToken {
  token: number;
  /** The text of all generated tokens so far. */
  text: string;
}

/** One request of a batch: its prompt, and optionally its own steering (else the batch's). */
export interface GenerateRequest {
  prompt: TokensOrText;
  steer?: SteerRequest[];
}

export interface GenerateResult {
  tokens: number[];
  text: string;
  finishReason: 'length' | 'eos' | 'stop';
  /** Tokens of the prompt (after the chat template), for usage reports. */
  promptTokens: number;
}

function invalid(field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field}: ${message}`, { field });
}

const DEFAULT_MAX_NEW_TOKENS = 64;

export type KvCacheDtype = 'f32' | 'bf16' | 'f16';
const KV_CACHE_DTYPES: Record<KvCacheDtype, 'F32' | 'BF16' | 'F16'> = { f32: 'F32', bf16: 'BF16', f16: 'F16' };

export type MatmulPrecision = 'f32' | 'bf16';
const MATMUL_PRECISIONS: Record<MatmulPrecision, 'F32' | 'BF16'> = { f32: 'F32', bf16: 'BF16' };

/** LoadOptions.matmulPrecision, checked, as the native name. */
function matmulPrecision(options: LoadOptions): 'F32' | 'BF16' {
  const precision = options.matmulPrecision ?? 'f32';
  if (!Object.hasOwn(MATMUL_PRECISIONS, precision)) throw invalid('matmulPrecision', `must be one of ${Object.keys(MATMUL_PRECISIONS).join(', ')}, got ${JSON.stringify(precision)}`);
  return MATMUL_PRECISIONS[precision];
}

/** LoadOptions.kvCacheDtype, checked, as the native dtype name. */
function kvCacheDtype(options: LoadOptions): 'F32' | 'BF16' | 'F16' {
  const dtype = options.kvCacheDtype ?? 'f32';
  if (!Object.hasOwn(KV_CACHE_DTYPES, dtype)) throw invalid('kvCacheDtype', `must be one of ${Object.keys(KV_CACHE_DTYPES).join(', ')}, got ${JSON.stringify(dtype)}`);
  return KV_CACHE_DTYPES[dtype];
}

interface GenerationLimits {
  maxBatchSequences: number;
  maxStepTokens: number;
  kvCacheBytes: number | null;
}

/** LoadOptions' generation limits, checked and with their defaults. */
function generationLimits(options: LoadOptions): GenerationLimits {
  const maxBatchSequences = options.maxBatchSequences ?? 64;
  if (!Number.isSafeInteger(maxBatchSequences) || maxBatchSequences < 1) throw invalid('maxBatchSequences', `must be a positive integer, got ${maxBatchSequences}`);
  const maxStepTokens = options.maxStepTokens ?? 256;
  if (!Number.isSafeInteger(maxStepTokens) || maxStepTokens < 1) throw invalid('maxStepTokens', `must be a positive integer, got ${maxStepTokens}`);
  const kvCacheBytes = options.kvCacheBytes ?? null;
  if (kvCacheBytes !== null && (!Number.isSafeInteger(kvCacheBytes) || kvCacheBytes < 1))
    throw invalid('kvCacheBytes', `must be a positive integer number of bytes (or left out for no limit), got ${kvCacheBytes}`);
  return { maxBatchSequences, maxStepTokens, kvCacheBytes };
}

export class LanguageModel {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly tokenizer: TextTokenizer | null;
  private nativeModel: NativeModel;
  private readonly scheduler: StepScheduler;

  private constructor(dir: string, config: ModelConfig, tokenizer: TextTokenizer | null, nativeModel: NativeModel, limits: GenerationLimits) {
    this.dir = dir;
    this.config = config;
    this.tokenizer = tokenizer;
    this.nativeModel = nativeModel;
    this.scheduler = new StepScheduler(
      {
        step: async (batch) => (await nativeModel.step(batch)).tokens,
        createSession: (maxTokens) => nativeModel.createSession(maxTokens),
        kvBytesPerToken: nativeModel.kvBytesPerToken,
      },
      { maxSequences: limits.maxBatchSequences, maxStepTokens: limits.maxStepTokens, kvBudgetBytes: limits.kvCacheBytes },
    );
  }

  static async load(dirArg: string, options: LoadOptions = {}): Promise<LanguageModel> {
    const limits = generationLimits(options);
    const kvDtype = kvCacheDtype(options);
    const precision = matmulPrecision(options);
    applyThreads(options.threads);
    const dir = path.resolve(dirArg);
    const config = readModelConfig(dir);
    const ckpt = openCheckpoint(dir, 'model');
    const allowed = expectedTensorNames(config);
    for (const t of ckpt.tensors) {
      if (t.name.endsWith('.rotary_emb.inv_freq')) continue;
      if (!allowed.has(t.name)) {
        const layer = /^model\.layers\.(\d+)\./.exec(t.name);
        const hint = layer && Number(layer[1]) >= config.numLayers
          ? `config.json's num_hidden_layers is ${config.numLayers}, so its layers are 0-${config.numLayers - 1}: set num_hidden_layers to the number of model.layers.N in the checkpoint`
          : 'the checkpoint is another architecture or its config is wrong';
        throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${t.file}: tensor "${t.name}" is not part of ${config.architecture} as configured in config.json; ${hint}`, { file: t.file, tensor: t.name });
      }
      if (!COMPUTE_DTYPES.has(t.dtype))
        throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${t.file}: tensor "${t.name}" is ${t.dtype}; the engine reads F32, BF16 and F16 weights`, { file: t.file, tensor: t.name });
    }
    checkConfigFitsTensors(config, path.join(dir, 'config.json'), ckpt.tensors);
    const device = requestedDevice(options.device);
    resolveDevice(device);
    let tokenizer: TextTokenizer | null = null;
    if ((options.tokenizer ?? true) && fs.existsSync(path.join(dir, 'tokenizer.json'))) tokenizer = await TextTokenizer.fromFolder(dir);
    let nativeModel: NativeModel;
    try {
      nativeModel = await native().loadModel({
        device,
        vocab: config.vocabSize, hidden: config.hiddenSize, intermediate: config.intermediateSize, layers: config.numLayers,
        heads: config.numHeads, kvHeads: config.numKvHeads, headDim: config.headDim, rmsEps: config.rmsNormEps,
        invFreq: config.invFreq, attentionScaling: config.attentionScaling, slidingWindow: config.slidingWindow,
        tieEmbeddings: config.tieWordEmbeddings, weightsFloat32: options.weights === 'float32', kvCacheDtype: kvDtype,
        matmulPrecision: precision,
        weights: ckpt.tensors.map((t) => ({ name: t.name, file: t.file, offset: t.offset, dtype: t.dtype, numel: t.numel })),
      });
    } catch (err) {
      throw fromNative(err);
    }
    return new LanguageModel(dir, config, tokenizer, nativeModel, limits);
  }

  /** The model's context in tokens (config.json max_position_embeddings), or null when it does not say. */
  get contextLength(): number | null {
    return this.config.maxPositionEmbeddings;
  }

  /** The backend the weights live on. */
  get backend(): string {
    return this.nativeModel.backend;
  }

  /** Token ids for a prompt: ids pass through (checked), text is encoded (with the chat template when chat is set). */
  toIds(input: TokensOrText, chat = false): number[] {
    if (typeof input !== 'string') {
      const ids = Array.from(input);
      for (const id of ids)
        if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) throw invalid('tokens', `token id ${id} is outside the vocabulary (0..${this.config.vocabSize - 1})`);
      if (ids.length === 0) throw invalid('tokens', 'the prompt is empty');
      return ids;
    }
    if (!this.tokenizer) throw invalid('prompt', `${this.dir} has no tokenizer.json; pass token ids instead of text`);
    if (chat) return this.tokenizer.encodeChat([{ role: 'user', content: input } as ChatMessage]);
    return this.tokenizer.encode(input);
  }

  decode(ids: ArrayLike<number>): string {
    if (!this.tokenizer) throw invalid('decode', `${this.dir} has no tokenizer.json`);
    return this.tokenizer.decode(ids, { skipSpecialTokens: true });
  }

  private steerPairs(steer: SteerRequest[] | undefined): [number, number][] {
    if (!steer) return [];
    return steer.map((s) => {
      if (!Number.isFinite(s.alpha)) throw invalid('alpha', `must be a finite number, got ${s.alpha}`);
      return [s.vector.id, s.alpha];
    });
  }

  /** One forward pass over a ragged batch: each sequence gets the result it would get alone. */
  async forward(inputs: TokensOrText[], options: ForwardOptions = {}): Promise<ForwardResult[]> {
    const capture = new Set(options.capture ?? []);
    for (const c of capture) if (c !== 'layer_out' && c !== 'mlp_out' && c !== 'mlp_raw') throw invalid('capture', `unknown capture "${c as string}": use layer_out, mlp_out or mlp_raw`);
    const ids = inputs.map((x) => this.toIds(x));
    const steer = this.steerPairs(options.steer);
    const batch: NativeSeq[] = ids.map((t) => ({ tokens: Int32Array.from(t), steer }));
    let out;
    try {
      out = await this.nativeModel.forward(batch, { lastOnly: options.lastOnly ?? false, layerOut: capture.has('layer_out'), mlpOut: capture.has('mlp_out'), mlpRaw: capture.has('mlp_raw') });
    } catch (err) {
      throw fromNative(err);
    }
    return out.map((r, i) => {
      const res: ForwardResult = { tokens: ids[i]!, logits: r.logits };
      if (r.layerOut) res.layerOut = r.layerOut;
      if (r.mlpOut) res.mlpOut = r.mlpOut;
      if (r.mlpRaw) res.mlpRaw = r.mlpRaw;
      return res;
    });
  }

  /** Generates from one prompt, token by token; concurrent calls share the engine's steps. */
  async *generate(prompt: TokensOrText, options: GenerateOptions = {}): AsyncGenerator<GeneratedToken, GenerateResult> {
    const [request] = this.startRequests([prompt], options, true);
    const r = request!;
    try {
      for (;;) {
        const event = await r.next();
        if (event.done) return event.result;
        yield event.token;
      }
    } finally {
      r.abandon(); // the caller stopped early: free its place in the batch
    }
  }

  /** Generates to completion for one prompt. */
  async generateText(prompt: TokensOrText, options: GenerateOptions = {}): Promise<GenerateResult> {
    const [r] = await this.generateBatch([prompt], options);
    return r!;
  }

  /**
   * Generates for many prompts at once, in one ragged batch per step (shared with any other
   * generation running on this model). A request may carry its own steering (vectors and alphas),
   * so differently steered requests share the batch.
   */
  async generateBatch(prompts: (TokensOrText | GenerateRequest)[], options: GenerateOptions = {}): Promise<GenerateResult[]> {
    return Promise.all(this.startRequests(prompts, options).map((r) => r.finished));
  }

  private startRequests(requests: (TokensOrText | GenerateRequest)[], o: GenerateOptions, streaming = false): GenerationRequest[] {
    const isRequest = (r: TokensOrText | GenerateRequest): r is GenerateRequest => typeof r === 'object' && r !== null && 'prompt' in r;
    if (o.maxNewTokens !== undefined && (!Number.isSafeInteger(o.maxNewTokens) || o.maxNewTokens < 1)) throw invalid('maxNewTokens', `must be a positive integer, got ${o.maxNewTokens}`);
    const sampled = o.greedy === false || (o.greedy !== true && o.temperature !== undefined && o.temperature > 0);
    const sampling = sampled
      ? { temperature: o.temperature ?? 1, topK: o.topK ?? 0, topP: o.topP ?? 1 }
      : { temperature: 0, topK: 0, topP: 1 };
    if (!(sampling.temperature >= 0)) throw invalid('temperature', `must be >= 0, got ${sampling.temperature}`);
    if (!(sampling.topP > 0 && sampling.topP <= 1)) throw invalid('topP', `must be in (0, 1], got ${sampling.topP}`);
    if (!Number.isSafeInteger(sampling.topK) || sampling.topK < 0) throw invalid('topK', `must be a non-negative integer, got ${sampling.topK}`);
    const stops = o.stop ?? [];
    if (stops.length > 0 && !this.tokenizer) throw invalid('stop', 'stop strings need a tokenizer');
    if (o.signal?.aborted) throw new SafetyArithmeticError('ABORT_ERR', 'the operation was aborted');
    const eos = o.ignoreEos ? new Set<number>() : new Set([...(this.tokenizer?.eosTokenIds ?? []), ...this.config.eosTokenIds]);
    const prepared = requests.map((r) => {
      const ids = this.toIds(isRequest(r) ? r.prompt : r, o.chat ?? false);
      return { ids, maxNew: this.newTokenLimit(ids.length, o.maxNewTokens), steer: this.steerPairs(isRequest(r) && r.steer ? r.steer : o.steer) };
    });
    return prepared.map(({ ids, maxNew, steer }, i) => {
      const request = new GenerationRequest(this.tokenizer, eos, stops, maxNew, ids.length, o.signal, streaming);
      this.scheduler.add({
        prompt: ids, maxTokens: ids.length + maxNew, seed: (o.seed ?? 0) + i, steer, sampling,
        accept: (token) => request.accept(token),
        cancelled: () => request.abandoned || (o.signal?.aborted ?? false),
        fail: (err) => request.fail(err === undefined ? new SafetyArithmeticError('ABORT_ERR', 'the operation was aborted') : fromNative(err)),
      });
      return request;
    });
  }

  /**
   * The tokens a request may generate: maxNewTokens, or by default 64 cut to what the context leaves.
   * Refuses a prompt that fills the context, a prompt + maxNewTokens past it, and a request whose
   * worst-case KV cache exceeds the whole kvCacheBytes budget.
   */
  private newTokenLimit(promptTokens: number, maxNewTokens: number | undefined): number {
    const context = this.contextLength;
    if (context !== null && promptTokens >= context)
      throw invalid('prompt', `has ${promptTokens} tokens; the model's context is ${context} tokens (max_position_embeddings), which leaves no room to generate: shorten the prompt`);
    const maxNew = maxNewTokens ?? (context === null ? DEFAULT_MAX_NEW_TOKENS : Math.min(DEFAULT_MAX_NEW_TOKENS, context - promptTokens));
    if (context !== null && promptTokens + maxNew > context)
      throw invalid('maxNewTokens', `${maxNew} new tokens after a prompt of ${promptTokens} tokens need ${promptTokens + maxNew} positions; the model's context is ${context} tokens: ask for at most ${context - promptTokens}`);
    const stats = this.scheduler.stats;
    const bytes = this.scheduler.kvBytesFor(promptTokens + maxNew);
    if (stats.kvBytesBudget !== null && bytes > stats.kvBytesBudget)
      throw invalid('maxNewTokens', `a prompt of ${promptTokens} tokens and ${maxNew} new tokens need ${bytes} bytes of KV cache (${stats.kvBytesPerToken} per token); the KV-cache budget (kvCacheBytes) is ${stats.kvBytesBudget} bytes: ask for fewer tokens or raise the budget`);
    return maxNew;
  }

  /**
   * Generation counters and state: engine steps and the sequence-steps they carried, sequences running
   * and waiting, the last batch, KV-cache reservations against the budget and the memory in use.
   */
  generationStats(): GenerationStats {
    return { ...this.scheduler.stats, inFlight: this.scheduler.size, kvBytesAllocated: this.nativeModel.kvCacheBytes, liveSessions: this.nativeModel.liveSessions };
  }

  /**
   * Calls listener after every generation step (engine step), before the step's tokens reach their
   * requests; returns the function that unsubscribes it. A listener that throws is reported as a
   * process warning and does not disturb generation.
   */
  onStep(listener: (e: StepEvent) => void): () => void {
    return this.scheduler.onStep(listener);
  }

  /** Registers a steering vector [layers.length, hidden] for the given decoder layers. */
  addSteeringVector(layers: readonly number[], vectors: Float32Array): SteeringVectorHandle {
    if (vectors.length !== layers.length * this.config.hiddenSize)
      throw invalid('vectors', `has ${vectors.length} values; ${layers.length} layers x hidden ${this.config.hiddenSize} needs ${layers.length * this.config.hiddenSize}`);
    for (const l of layers)
      if (!Number.isSafeInteger(l) || l < 0 || l >= this.config.numLayers) throw invalid('layers', `layer ${l} does not exist (the model has ${this.config.numLayers})`);
    let id: number;
    try {
      id = this.nativeModel.addIcv(Int32Array.from(layers), vectors);
    } catch (err) {
      throw fromNative(err);
    }
    return { id, layers: [...layers] };
  }

  removeSteeringVector(handle: SteeringVectorHandle): void {
    this.nativeModel.removeIcv(handle.id);
  }

  /** Frees the weights; the model cannot be used afterwards. */
  dispose(): void {
    this.nativeModel.dispose();
  }
}

type RequestEvent = { done: false; token: GeneratedToken } | { done: true; result: GenerateResult };

/** One prompt's generation: its stop rules, its tokens so far, and the events its caller awaits. */
class GenerationRequest {
  readonly finished: Promise<GenerateResult>;
  private readonly tokens: number[] = [];
  private text = '';
  private readonly events: RequestEvent[] = [];
  private wake: (() => void) | undefined;
  private error: unknown;
  private resolveFinished!: (r: GenerateResult) => void;
  private complete = false;
  /** The caller no longer wants tokens. */
  abandoned = false;
  private rejectFinished!: (e: unknown) => void;

  constructor(
    private readonly tokenizer: TextTokenizer | null,
    private readonly eos: Set<number>,
    private readonly stops: string[],
    private readonly maxNew: number,
    private readonly promptTokens: number,
    private readonly signal: AbortSignal | undefined,
    /** The caller reads the text after every token (else it is decoded when needed: stop strings, the end). */
    private readonly streaming: boolean,
  ) {
    this.finished = new Promise((resolve, reject) => {
      this.resolveFinished = resolve;
      this.rejectFinished = reject;
    });
    this.finished.catch(() => {});
  }

  /** Takes a sampled token; returns true when the request is complete. */
  accept(token: number): boolean {
    if (this.eos.has(token)) return this.finish('eos');
    this.tokens.push(token);
    if (this.streaming || this.stops.length > 0) {
      this.decodeText();
      const hits = this.stops.map((s) => this.text.indexOf(s)).filter((x) => x >= 0);
      if (hits.length > 0) {
        this.text = this.text.slice(0, Math.min(...hits));
        return this.finish('stop');
      }
    }
    if (this.streaming) this.push({ done: false, token: { token, text: this.text } });
    if (this.tokens.length >= this.maxNew) return this.finish('length');
    return false;
  }

  abandon(): void {
    if (!this.complete) this.abandoned = true;
  }

  fail(err: unknown): void {
    this.complete = true;
    this.error = err;
    this.rejectFinished(err);
    this.notify();
  }

  /** The next event for an async iterator. */
  async next(): Promise<RequestEvent> {
    for (;;) {
      const e = this.events.shift();
      if (e) return e;
      if (this.error !== undefined) throw this.error;
      if (this.signal?.aborted) throw new SafetyArithmeticError('ABORT_ERR', 'the operation was aborted');
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private decodeText(): void {
    if (this.tokenizer) this.text = this.tokenizer.decode(this.tokens, { skipSpecialTokens: true });
  }

  private finish(reason: GenerateResult['finishReason']): boolean {
    if (reason !== 'stop') this.decodeText();
    this.complete = true;
    const result = { tokens: this.tokens, text: this.text, finishReason: reason, promptTokens: this.promptTokens };
    this.push({ done: true, result });
    this.resolveFinished(result);
    return true;
  }

  private push(e: RequestEvent): void {
    this.events.push(e);
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}
