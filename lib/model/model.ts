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
import type { NativeModel, NativeSession, NativeSeq } from '../native';
import { TextTokenizer } from '../text';
import type { ChatMessage } from '../text';
import { expectedTensorNames, readModelConfig, type ModelConfig } from './config';

export type TokensOrText = string | ArrayLike<number>;

export interface LoadOptions {
  device?: Device;
  /** 'auto' keeps the checkpoint's dtype on the device (float32 math either way); 'float32' converts the weights. */
  weights?: 'auto' | 'float32';
  /** Load the tokenizer when the folder has one (default true). */
  tokenizer?: boolean;
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
}

function invalid(field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field}: ${message}`, { field });
}

export class LanguageModel {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly tokenizer: TextTokenizer | null;
  private nativeModel: NativeModel;

  private constructor(dir: string, config: ModelConfig, tokenizer: TextTokenizer | null, nativeModel: NativeModel) {
    this.dir = dir;
    this.config = config;
    this.tokenizer = tokenizer;
    this.nativeModel = nativeModel;
  }

  static async load(dirArg: string, options: LoadOptions = {}): Promise<LanguageModel> {
    const dir = path.resolve(dirArg);
    const config = readModelConfig(dir);
    const ckpt = openCheckpoint(dir, 'model');
    const allowed = expectedTensorNames(config);
    for (const t of ckpt.tensors) {
      if (t.name.endsWith('.rotary_emb.inv_freq')) continue;
      if (!allowed.has(t.name))
        throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${t.file}: tensor "${t.name}" is not part of ${config.architecture} as configured in config.json; the checkpoint is another architecture or its config is wrong`, { file: t.file, tensor: t.name });
      if (!COMPUTE_DTYPES.has(t.dtype))
        throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${t.file}: tensor "${t.name}" is ${t.dtype}; the engine reads F32, BF16 and F16 weights`, { file: t.file, tensor: t.name });
    }
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
        tieEmbeddings: config.tieWordEmbeddings, weightsFloat32: options.weights === 'float32',
        weights: ckpt.tensors.map((t) => ({ name: t.name, file: t.file, offset: t.offset, dtype: t.dtype, numel: t.numel })),
      });
    } catch (err) {
      throw fromNative(err);
    }
    return new LanguageModel(dir, config, tokenizer, nativeModel);
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

  /** Generates from one prompt, token by token. */
  async *generate(prompt: TokensOrText, options: GenerateOptions = {}): AsyncGenerator<GeneratedToken, GenerateResult> {
    const state = await this.startGeneration([prompt], options);
    while (!state.done[0]) {
      const emitted = await state.advance();
      if (emitted[0] !== undefined) yield { token: emitted[0], text: state.texts[0]! };
    }
    return state.result(0);
  }

  /** Generates to completion for one prompt. */
  async generateText(prompt: TokensOrText, options: GenerateOptions = {}): Promise<GenerateResult> {
    const [r] = await this.generateBatch([prompt], options);
    return r!;
  }

  /**
   * Generates for many prompts at once, in one ragged batch per step. A request may carry its own
   * steering (vectors and alphas), so differently steered requests share the batch.
   */
  async generateBatch(prompts: (TokensOrText | GenerateRequest)[], options: GenerateOptions = {}): Promise<GenerateResult[]> {
    const state = await this.startGeneration(prompts, options);
    while (state.done.some((d) => !d)) await state.advance();
    return prompts.map((_, i) => state.result(i));
  }

  private async startGeneration(requests: (TokensOrText | GenerateRequest)[], o: GenerateOptions) {
    const isRequest = (r: TokensOrText | GenerateRequest): r is GenerateRequest => typeof r === 'object' && r !== null && 'prompt' in r;
    const prompts = requests.map((r) => (isRequest(r) ? r.prompt : r));
    const maxNew = o.maxNewTokens ?? 64;
    if (!Number.isSafeInteger(maxNew) || maxNew < 1) throw invalid('maxNewTokens', `must be a positive integer, got ${maxNew}`);
    const sampled = o.greedy === false || (o.greedy !== true && o.temperature !== undefined && o.temperature > 0);
    const sampling = sampled
      ? { temperature: o.temperature ?? 1, topK: o.topK ?? 0, topP: o.topP ?? 1 }
      : { temperature: 0, topK: 0, topP: 1 };
    if (!(sampling.temperature >= 0)) throw invalid('temperature', `must be >= 0, got ${sampling.temperature}`);
    if (!(sampling.topP > 0 && sampling.topP <= 1)) throw invalid('topP', `must be in (0, 1], got ${sampling.topP}`);
    if (!Number.isSafeInteger(sampling.topK) || sampling.topK < 0) throw invalid('topK', `must be a non-negative integer, got ${sampling.topK}`);
    const stops = o.stop ?? [];
    if (stops.length > 0 && !this.tokenizer) throw invalid('stop', 'stop strings need a tokenizer');
    const eos = o.ignoreEos ? new Set<number>() : new Set([...(this.tokenizer?.eosTokenIds ?? []), ...this.config.eosTokenIds]);
    const steerOf = requests.map((r) => this.steerPairs(isRequest(r) && r.steer ? r.steer : o.steer));
    const prompt = prompts.map((p) => this.toIds(p, o.chat ?? false));
    const sessions: NativeSession[] = prompt.map((_, i) => {
      const s = this.nativeModel.createSession();
      s.seed((o.seed ?? 0) + i);
      return s;
    });
    const generated: number[][] = prompt.map(() => []);
    const texts: string[] = prompt.map(() => '');
    const done: boolean[] = prompt.map(() => false);
    const reasons: GenerateResult['finishReason'][] = prompt.map(() => 'length');
    const pending: number[][] = [...prompt];
    const model = this;
    const advance = async (): Promise<(number | undefined)[]> => {
      if (o.signal?.aborted) throw new SafetyArithmeticError('ABORT_ERR', 'the operation was aborted');
      const active = done.map((d, i) => (d ? -1 : i)).filter((i) => i >= 0);
      const batch: NativeSeq[] = active.map((i) => ({ tokens: Int32Array.from(pending[i]!), session: sessions[i]!, steer: steerOf[i]!, sampling }));
      let next: Int32Array;
      try {
        next = (await model.nativeModel.step(batch)).tokens;
      } catch (err) {
        throw fromNative(err);
      }
      const emitted: (number | undefined)[] = prompt.map(() => undefined);
      active.forEach((i, k) => {
        const tok = next[k]!;
        if (eos.has(tok)) {
          done[i] = true;
          reasons[i] = 'eos';
          return;
        }
        generated[i]!.push(tok);
        emitted[i] = tok;
        pending[i] = [tok];
        if (model.tokenizer) texts[i] = model.tokenizer.decode(generated[i]!, { skipSpecialTokens: true });
        const hit = stops.map((s) => texts[i]!.indexOf(s)).filter((x) => x >= 0);
        if (hit.length > 0) {
          texts[i] = texts[i]!.slice(0, Math.min(...hit));
          done[i] = true;
          reasons[i] = 'stop';
        } else if (generated[i]!.length >= maxNew) {
          done[i] = true;
          reasons[i] = 'length';
        }
      });
      return emitted;
    };
    return {
      done,
      texts,
      advance,
      result: (i: number): GenerateResult => ({ tokens: generated[i]!, text: texts[i]!, finishReason: reasons[i]! }),
    };
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
