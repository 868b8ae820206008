/**
 * config.json of a decoder-only model, read in the transformers 4 layout (top-level rope_theta,
 * rope_scaling, torch_dtype) and the transformers 5 layout (rope_parameters, dtype). Anything that
 * would change the math and is not implemented is an error naming the field, never a silently
 * different model.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SafetyArithmeticError } from '../errors';

export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM'] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

const MODEL_TYPES: Record<string, Architecture> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' };

export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeType: 'default' | 'linear' | 'llama3';
  /** head_dim / 2 rotary frequencies, scaling applied, float32 as transformers computes them. */
  invFreq: Float32Array;
  attentionScaling: number;
  slidingWindow: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

type Json = Record<string, unknown>;

function configError(file: string, field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: ${field} ${message}`, { file, field });
}

function intField(c: Json, file: string, field: string, fallback?: number): number {
  const v = c[field];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw configError(file, field, 'is missing; the config must give it');
  }
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw configError(file, field, `must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function numField(c: Json, file: string, field: string, fallback: number): number {
  const v = c[field];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw configError(file, field, `must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

function tokenIds(v: unknown): number[] {
  if (typeof v === 'number') return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number');
  return [];
}

/** The rotary frequencies as transformers computes them, in float32. */
export function ropeInvFreq(theta: number, headDim: number): Float32Array {
  const f = Math.fround;
  const out = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) out[i] = f(1 / f(Math.pow(theta, f(f(2 * i) / headDim))));
  return out;
}

function llama3Scaling(inv: Float32Array, p: Json, file: string): Float32Array {
  const need = (k: string) => {
    const v = p[k];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw configError(file, `rope_scaling.${k}`, `must be a number for rope type llama3`);
    return v;
  };
  const factor = need('factor'), low = need('low_freq_factor'), high = need('high_freq_factor'), old = need('original_max_position_embeddings');
  const f = Math.fround;
  const lowWavelen = old / low, highWavelen = old / high;
  const out = new Float32Array(inv.length);
  for (let i = 0; i < inv.length; i++) {
    const freq = inv[i]!;
    const wavelen = f((2 * Math.PI) / freq);
    let v = wavelen > lowWavelen ? f(freq / factor) : freq;
    const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    if (medium) {
      const smooth = f(f(f(old / wavelen) - low) / (high - low));
      v = f(f(f(1 - smooth) * f(v / factor)) + f(smooth * v));
    }
    out[i] = v;
  }
  return out;
}

export function parseModelConfig(raw: unknown, file: string): ModelConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw configError(file, 'the file', 'must hold a JSON object');
  const c = raw as Json;
  const archs = Array.isArray(c.architectures) ? (c.architectures as unknown[]) : [];
  let architecture: Architecture | undefined;
  if (archs.length > 0) {
    const a = archs[0];
    if (typeof a === 'string' && (SUPPORTED_ARCHITECTURES as readonly string[]).includes(a)) architecture = a as Architecture;
    else throw configError(file, 'architectures', `is ${JSON.stringify(archs)}; the engine runs ${SUPPORTED_ARCHITECTURES.join(', ')}`);
  } else if (typeof c.model_type === 'string' && MODEL_TYPES[c.model_type]) {
    architecture = MODEL_TYPES[c.model_type];
  } else {
    throw configError(file, 'model_type', `is ${JSON.stringify(c.model_type)} and there is no "architectures"; the engine runs ${SUPPORTED_ARCHITECTURES.join(', ')}`);
  }
  const arch = architecture!;
  const act = c.hidden_act ?? c.hidden_activation ?? 'silu';
  if (act !== 'silu') throw configError(file, 'hidden_act', `is ${JSON.stringify(act)}; only silu (SwiGLU) is implemented`);
  const hiddenSize = intField(c, file, 'hidden_size');
  const numHeads = intField(c, file, 'num_attention_heads');
  const numKvHeads = intField(c, file, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) throw configError(file, 'num_key_value_heads', `(${numKvHeads}) must divide num_attention_heads (${numHeads})`);
  const headDim = intField(c, file, 'head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) throw configError(file, 'head_dim', `must be even for rotary embeddings, got ${headDim}`);
  if (c.partial_rotary_factor !== undefined && c.partial_rotary_factor !== null && c.partial_rotary_factor !== 1)
    throw configError(file, 'partial_rotary_factor', `is ${JSON.stringify(c.partial_rotary_factor)}; only full rotary embeddings are implemented`);

  // Rotary parameters: transformers 5 puts them in rope_parameters; transformers 4 in rope_theta + rope_scaling.
  const ropeParams = (c.rope_parameters ?? null) as Json | null;
  const scaling = (c.rope_scaling ?? null) as Json | null;
  const params: Json = { ...(scaling ?? {}), ...(ropeParams ?? {}) };
  const thetaSource = ropeParams && ropeParams.rope_theta !== undefined ? ropeParams : c;
  const ropeTheta = numField(thetaSource, file, 'rope_theta', 10000);
  const typeRaw = params.rope_type ?? params.type ?? 'default';
  let ropeType: ModelConfig['ropeType'];
  let invFreq = ropeInvFreq(ropeTheta, headDim);
  if (typeRaw === 'default') {
    ropeType = 'default';
  } else if (typeRaw === 'linear') {
    ropeType = 'linear';
    const factor = params.factor;
    if (typeof factor !== 'number' || !(factor > 0)) throw configError(file, 'rope_scaling.factor', 'must be a positive number for rope type linear');
    invFreq = invFreq.map((v) => Math.fround(v / factor));
  } else if (typeRaw === 'llama3') {
    ropeType = 'llama3';
    invFreq = llama3Scaling(invFreq, params, file);
  } else {
    throw configError(file, 'rope_scaling', `has rope type ${JSON.stringify(typeRaw)}; implemented: default, linear, llama3`);
  }

  let slidingWindow = 0;
  if (arch === 'MistralForCausalLM' && typeof c.sliding_window === 'number') slidingWindow = c.sliding_window;
  if (arch === 'Qwen2ForCausalLM' && c.use_sliding_window === true)
    throw configError(file, 'use_sliding_window', 'is true; Qwen2 sliding-window attention is not implemented');
  if (arch === 'LlamaForCausalLM' && c.sliding_window !== undefined && c.sliding_window !== null)
    throw configError(file, 'sliding_window', 'is set; Llama has no sliding-window attention in transformers, so this config is not a Llama');

  const tie = c.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') throw configError(file, 'tie_word_embeddings', 'must be true or false');
  return {
    architecture: arch,
    vocabSize: intField(c, file, 'vocab_size'),
    hiddenSize,
    intermediateSize: intField(c, file, 'intermediate_size'),
    numLayers: intField(c, file, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: numField(c, file, 'rms_norm_eps', 1e-6),
    ropeTheta,
    ropeType,
    invFreq,
    attentionScaling: 1,
    slidingWindow,
    tieWordEmbeddings: tie,
    bosTokenId: typeof c.bos_token_id === 'number' ? c.bos_token_id : null,
    eosTokenIds: tokenIds(c.eos_token_id),
  };
}

export function readModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file} is missing: a model folder needs its config.json`, { file });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: not valid JSON (${(err as Error).message})`, { file });
  }
  const cfg = parseModelConfig(raw, file);
  const gen = path.join(dir, 'generation_config.json');
  if (fs.existsSync(gen)) {
    try {
      const g = JSON.parse(fs.readFileSync(gen, 'utf8')) as Json;
      const ids = tokenIds(g.eos_token_id);
      for (const id of ids) if (!cfg.eosTokenIds.includes(id)) cfg.eosTokenIds.push(id);
    } catch {
      throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${gen}: not valid JSON`, { file: gen });
    }
  }
  return cfg;
}

/** The tensor names the engine reads for this config; used to refuse checkpoints with tensors it would ignore. */
export function expectedTensorNames(cfg: ModelConfig): Set<string> {
  const names = new Set(['model.embed_tokens.weight', 'model.norm.weight']);
  names.add('lm_head.weight'); // tied checkpoints sometimes store it too; the engine then reads the embedding
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    for (const n of ['input_layernorm.weight', 'post_attention_layernorm.weight']) names.add(p + n);
    for (const proj of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) {
      names.add(`${p}self_attn.${proj}.weight`);
      names.add(`${p}self_attn.${proj}.bias`);
    }
    for (const proj of ['gate_proj', 'up_proj', 'down_proj']) {
      names.add(`${p}mlp.${proj}.weight`);
      names.add(`${p}mlp.${proj}.bias`);
    }
  }
  return names;
}
