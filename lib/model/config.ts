/**
 * config.json of a decoder-only model, read in the transformers 4 layout (top-level rope_theta,
 * rope_scaling, torch_dtype) and the transformers 5 layout (rope_parameters, dtype). Anything that
 * would change the math and is not implemented is an error naming the field, never a silently
 * different model.
 */
import path from 'node:path';
import { SafetyArithmeticError } from '../errors';
import { exists, readTextFile } from '../io/files';

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
  /** The context in tokens (max_position_embeddings), or null when config.json does not say. */
  maxPositionEmbeddings: number | null;
}

type Json = Record<string, unknown>;

/**
 * The largest value this engine accepts for each size field of config.json: well above any published
 * model, low enough that a damaged file cannot make it allocate without bound.
 */
export const CONFIG_LIMITS = {
  num_hidden_layers: 1024,
  hidden_size: 1 << 18,
  intermediate_size: 1 << 21,
  num_attention_heads: 4096,
  num_key_value_heads: 4096,
  head_dim: 4096,
  vocab_size: 1 << 24,
  max_position_embeddings: 1 << 30,
  sliding_window: 1 << 30,
  original_max_position_embeddings: 1 << 30,
} as const;

const FIX = 'fix config.json (or copy it again from the model\'s original repository)';

function configError(file: string, field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: ${field} ${message}`, { file, field });
}

function shown(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** A positive integer no larger than `max`; `label` is how the error names the field (default: `field`). */
function boundedInt(v: unknown, file: string, label: string, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw configError(file, label, `must be a positive integer, got ${shown(v)}; ${FIX}`);
  if (v > max) throw configError(file, label, `is ${v}, over the limit of ${max} this engine accepts; the file is damaged or not the config of a decoder-only model: ${FIX}`);
  return v;
}

function intField(c: Json, file: string, field: keyof typeof CONFIG_LIMITS, fallback?: number): number {
  const v = c[field];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw configError(file, field, `is missing; the config must give it: ${FIX}`);
  }
  return boundedInt(v, file, field, CONFIG_LIMITS[field]);
}

/** A positive finite number, below `max` when given. */
function numField(c: Json, file: string, field: string, fallback: number, max = Number.MAX_VALUE, label = field): number {
  const v = c[field];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw configError(file, label, `must be a positive number, got ${shown(v)}; ${FIX}`);
  if (v >= max) throw configError(file, label, `is ${v}; it must be below ${max}: ${FIX}`);
  return v;
}

/** Token ids as non-negative safe integers; anything else in the field is ignored, as before. */
function tokenIds(v: unknown): number[] {
  const list = Array.isArray(v) ? v : [v];
  return list.filter((x): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0);
}

function objectField(c: Json, file: string, field: string): Json | null {
  const v = c[field];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw configError(file, field, `must be an object, got ${shown(v)}; ${FIX}`);
  return v as Json;
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
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw configError(file, `rope_scaling.${k}`, `must be a positive number for rope type llama3, got ${shown(v)}; ${FIX}`);
    return v;
  };
  const factor = need('factor'), low = need('low_freq_factor'), high = need('high_freq_factor');
  const old = boundedInt(p.original_max_position_embeddings, file, 'rope_scaling.original_max_position_embeddings', CONFIG_LIMITS.original_max_position_embeddings);
  if (!(high > low)) throw configError(file, 'rope_scaling.high_freq_factor', `(${high}) must be greater than low_freq_factor (${low}) for rope type llama3; ${FIX}`);
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
  // Every size is checked against its bound before anything is allocated from it.
  const vocabSize = intField(c, file, 'vocab_size');
  const hiddenSize = intField(c, file, 'hidden_size');
  const intermediateSize = intField(c, file, 'intermediate_size');
  const numLayers = intField(c, file, 'num_hidden_layers');
  const numHeads = intField(c, file, 'num_attention_heads');
  const numKvHeads = intField(c, file, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) throw configError(file, 'num_key_value_heads', `(${numKvHeads}) must divide num_attention_heads (${numHeads}); ${FIX}`);
  if ((c.head_dim === undefined || c.head_dim === null) && hiddenSize % numHeads !== 0)
    throw configError(file, 'head_dim', `is missing and hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads}); ${FIX}`);
  const headDim = intField(c, file, 'head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) throw configError(file, 'head_dim', `must be even for rotary embeddings, got ${headDim}; ${FIX}`);
  const maxPositionEmbeddings = c.max_position_embeddings !== undefined && c.max_position_embeddings !== null ? intField(c, file, 'max_position_embeddings') : null;
  const rmsNormEps = numField(c, file, 'rms_norm_eps', 1e-6, 1);
  if (c.partial_rotary_factor !== undefined && c.partial_rotary_factor !== null && c.partial_rotary_factor !== 1)
    throw configError(file, 'partial_rotary_factor', `is ${JSON.stringify(c.partial_rotary_factor)}; only full rotary embeddings are implemented`);

  // Rotary parameters: transformers 5 puts them in rope_parameters; transformers 4 in rope_theta + rope_scaling.
  const ropeParams = objectField(c, file, 'rope_parameters');
  const scaling = objectField(c, file, 'rope_scaling');
  const params: Json = { ...(scaling ?? {}), ...(ropeParams ?? {}) };
  const thetaSource = ropeParams && ropeParams.rope_theta !== undefined ? ropeParams : c;
  const ropeTheta = numField(thetaSource, file, 'rope_theta', 10000, Number.MAX_VALUE, thetaSource === c ? 'rope_theta' : 'rope_parameters.rope_theta');
  const typeRaw = params.rope_type ?? params.type ?? 'default';
  let ropeType: ModelConfig['ropeType'];
  let invFreq = ropeInvFreq(ropeTheta, headDim);
  if (typeRaw === 'default') {
    ropeType = 'default';
  } else if (typeRaw === 'linear') {
    ropeType = 'linear';
    const factor = params.factor;
    if (typeof factor !== 'number' || !Number.isFinite(factor) || !(factor > 0)) throw configError(file, 'rope_scaling.factor', `must be a positive number for rope type linear, got ${shown(factor)}; ${FIX}`);
    invFreq = invFreq.map((v) => Math.fround(v / factor));
  } else if (typeRaw === 'llama3') {
    ropeType = 'llama3';
    invFreq = llama3Scaling(invFreq, params, file);
  } else {
    throw configError(file, 'rope_scaling', `has rope type ${JSON.stringify(typeRaw)}; implemented: default, linear, llama3`);
  }

  let slidingWindow = 0;
  if (arch === 'MistralForCausalLM' && c.sliding_window !== undefined && c.sliding_window !== null) slidingWindow = intField(c, file, 'sliding_window');
  if (arch === 'Qwen2ForCausalLM' && c.use_sliding_window === true)
    throw configError(file, 'use_sliding_window', 'is true; Qwen2 sliding-window attention is not implemented');
  if (arch === 'LlamaForCausalLM' && c.sliding_window !== undefined && c.sliding_window !== null)
    throw configError(file, 'sliding_window', 'is set; Llama has no sliding-window attention in transformers, so this config is not a Llama');

  const tie = c.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') throw configError(file, 'tie_word_embeddings', 'must be true or false');
  return {
    architecture: arch,
    vocabSize,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps,
    ropeTheta,
    ropeType,
    invFreq,
    attentionScaling: 1,
    slidingWindow,
    tieWordEmbeddings: tie,
    bosTokenId: typeof c.bos_token_id === 'number' && Number.isSafeInteger(c.bos_token_id) && c.bos_token_id >= 0 ? c.bos_token_id : null,
    eosTokenIds: tokenIds(c.eos_token_id),
    maxPositionEmbeddings,
  };
}

/** Limit for config.json and generation_config.json: real ones are a few kilobytes. */
const CONFIG_FILE_MAX_BYTES = 16 * 1024 * 1024;

function readJsonObject(file: string, role: string): Json {
  const text = readTextFile(file, role, CONFIG_FILE_MAX_BYTES);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: not valid JSON (${(err as Error).message}); the file is damaged or truncated: copy it again from the model's repository`, { file });
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: must hold a JSON object; copy it again from the model's repository`, { file });
  return raw as Json;
}

export function readModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  if (!exists(file)) throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file} is missing: a model folder needs its config.json`, { file });
  const cfg = parseModelConfig(readJsonObject(file, 'config.json'), file);
  const gen = path.join(dir, 'generation_config.json');
  if (exists(gen)) {
    const g = readJsonObject(gen, 'generation_config.json');
    for (const id of tokenIds(g.eos_token_id)) if (!cfg.eosTokenIds.includes(id)) cfg.eosTokenIds.push(id);
  }
  return cfg;
}

/** The shape the engine needs for each tensor it reads, and the config fields that set it. */
function expectedShape(cfg: ModelConfig, name: string): { shape: number[]; fields: string } | undefined {
  const H = cfg.hiddenSize, V = cfg.vocabSize, I = cfg.intermediateSize;
  const q = cfg.numHeads * cfg.headDim, kv = cfg.numKvHeads * cfg.headDim;
  if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') return { shape: [V, H], fields: `vocab_size ${V}, hidden_size ${H}` };
  if (name === 'model.norm.weight') return { shape: [H], fields: `hidden_size ${H}` };
  const m = /^model\.layers\.\d+\.(.+)$/.exec(name);
  if (!m) return undefined;
  const heads = `num_attention_heads ${cfg.numHeads} x head_dim ${cfg.headDim}`;
  const kvHeads = `num_key_value_heads ${cfg.numKvHeads} x head_dim ${cfg.headDim}`;
  const shapes: Record<string, { shape: number[]; fields: string }> = {
    'input_layernorm.weight': { shape: [H], fields: `hidden_size ${H}` },
    'post_attention_layernorm.weight': { shape: [H], fields: `hidden_size ${H}` },
    'self_attn.q_proj.weight': { shape: [q, H], fields: `${heads}, hidden_size ${H}` },
    'self_attn.q_proj.bias': { shape: [q], fields: heads },
    'self_attn.k_proj.weight': { shape: [kv, H], fields: `${kvHeads}, hidden_size ${H}` },
    'self_attn.k_proj.bias': { shape: [kv], fields: kvHeads },
    'self_attn.v_proj.weight': { shape: [kv, H], fields: `${kvHeads}, hidden_size ${H}` },
    'self_attn.v_proj.bias': { shape: [kv], fields: kvHeads },
    'self_attn.o_proj.weight': { shape: [H, q], fields: `hidden_size ${H}, ${heads}` },
    'self_attn.o_proj.bias': { shape: [H], fields: `hidden_size ${H}` },
    'mlp.gate_proj.weight': { shape: [I, H], fields: `intermediate_size ${I}, hidden_size ${H}` },
    'mlp.gate_proj.bias': { shape: [I], fields: `intermediate_size ${I}` },
    'mlp.up_proj.weight': { shape: [I, H], fields: `intermediate_size ${I}, hidden_size ${H}` },
    'mlp.up_proj.bias': { shape: [I], fields: `intermediate_size ${I}` },
    'mlp.down_proj.weight': { shape: [H, I], fields: `hidden_size ${H}, intermediate_size ${I}` },
    'mlp.down_proj.bias': { shape: [H], fields: `hidden_size ${H}` },
  };
  return shapes[m[1]!];
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Checks that the checkpoint's tensors are the model config.json describes: num_hidden_layers equals
 * the decoder layers present (model.layers.N), and every tensor the engine reads has the shape the
 * config's sizes give it.
 */
export function checkConfigFitsTensors(cfg: ModelConfig, configFile: string, tensors: readonly { name: string; file: string; shape: readonly number[] }[]): void {
  const layers = new Set<number>();
  for (const t of tensors) {
    const m = /^model\.layers\.(\d+)\./.exec(t.name);
    if (m) layers.add(Number(m[1]));
  }
  const sorted = [...layers].sort((a, b) => a - b);
  const contiguous = sorted.length === 0 || sorted[sorted.length - 1] === sorted.length - 1;
  if (sorted.length !== cfg.numLayers || !contiguous) {
    const has = sorted.length === 0 ? 'no decoder layers (no model.layers.N tensors)' : contiguous ? `decoder layers 0-${sorted.length - 1}` : `decoder layers ${sorted.slice(0, 8).join(', ')}${sorted.length > 8 ? ', ...' : ''} (not numbered 0 to ${sorted.length - 1})`;
    const advice = contiguous && sorted.length > 0 ? `set num_hidden_layers to ${sorted.length}` : 'the checkpoint is incomplete: download it again';
    throw configError(configFile, 'num_hidden_layers', `is ${cfg.numLayers} but the checkpoint has ${has}; ${advice}`);
  }
  for (const t of tensors) {
    const want = expectedShape(cfg, t.name);
    if (!want) continue;
    if (want.shape.length === t.shape.length && want.shape.every((d, i) => d === t.shape[i])) continue;
    throw new SafetyArithmeticError(
      'SA_BAD_CHECKPOINT',
      `${t.file}: tensor "${t.name}" has shape ${JSON.stringify(t.shape)} (${numel(t.shape)} elements) but ${configFile} (${want.fields}) needs ${JSON.stringify(want.shape)} (${numel(want.shape)} elements); the checkpoint and its config.json do not match: ${FIX}`,
      { file: t.file, tensor: t.name },
    );
  }
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
