/**
 * Code paths of the Mistral and Qwen2 families that the Llama golden suite does not reach: attention
 * biases, sliding windows, tied embeddings. Checked against equivalences that must hold exactly.
 */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { renderSafetensors, type SmallTensor } from '../lib/checkpoint/safetensors';
import { LanguageModel } from '../lib/model/model';
import { loadTensors, toFloat32 } from './helpers/safetensors';
import { maxRelativeError } from './helpers/compare';

const G = path.join(__dirname, '..', '..', 'test', 'fixtures', 'llama-tiny');
const baseConfig = JSON.parse(fs.readFileSync(path.join(G, 'model', 'config.json'), 'utf8')) as Record<string, unknown>;
const weights = loadTensors(path.join(G, 'model', 'model.safetensors'));
const seq = (JSON.parse(fs.readFileSync(path.join(G, 'manifest.json'), 'utf8')) as { forward: { sequences: number[][] } }).forward.sequences[2]!;

function variant(t: { teardown(fn: () => void): void }, config: Record<string, unknown>, extra: SmallTensor[] = [], drop: string[] = []): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-variant-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const tensors: SmallTensor[] = [...weights].filter(([n]) => !drop.includes(n)).map(([name, v]) => ({ name, dtype: 'F32', shape: v.shape, data: toFloat32(v) }));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat(renderSafetensors([...tensors, ...extra])));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...baseConfig, ...config }));
  return dir;
}

async function logits(dir: string): Promise<Float32Array> {
  const m = await LanguageModel.load(dir);
  try {
    return (await m.forward([seq]))[0]!.logits;
  } finally {
    m.dispose();
  }
}

test('Qwen2: zero q/k/v biases give the Llama logits; a nonzero bias changes them', async (t) => {
  const llama = await logits(path.join(G, 'model'));
  const cfg = baseConfig as { num_hidden_layers: number; num_attention_heads: number; num_key_value_heads: number; hidden_size: number };
  const hd = cfg.hidden_size / cfg.num_attention_heads;
  const biases = (fill: number): SmallTensor[] =>
    Array.from({ length: cfg.num_hidden_layers }, (_, l) => [
      { name: `model.layers.${l}.self_attn.q_proj.bias`, dtype: 'F32' as const, shape: [cfg.num_attention_heads * hd], data: new Float32Array(cfg.num_attention_heads * hd).fill(fill) },
      { name: `model.layers.${l}.self_attn.k_proj.bias`, dtype: 'F32' as const, shape: [cfg.num_key_value_heads * hd], data: new Float32Array(cfg.num_key_value_heads * hd) },
      { name: `model.layers.${l}.self_attn.v_proj.bias`, dtype: 'F32' as const, shape: [cfg.num_key_value_heads * hd], data: new Float32Array(cfg.num_key_value_heads * hd).fill(fill) },
    ]).flat();
  const qwen = { architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2' };
  t.true(maxRelativeError(await logits(variant(t, qwen, biases(0))), llama) <= 1e-6);
  t.true(maxRelativeError(await logits(variant(t, qwen, biases(0.05))), llama) > 1e-4);
});

test('Mistral: a sliding window as long as the prompt changes nothing; a short one changes the logits', async (t) => {
  const llama = await logits(path.join(G, 'model'));
  const mistral = { architectures: ['MistralForCausalLM'], model_type: 'mistral' };
  t.true(maxRelativeError(await logits(variant(t, { ...mistral, sliding_window: seq.length })), llama) <= 1e-6);
  t.true(maxRelativeError(await logits(variant(t, { ...mistral, sliding_window: 4 })), llama) > 1e-4);
});

test('tied embeddings: lm_head is read from the embedding', async (t) => {
  const embed = weights.get('model.embed_tokens.weight')!;
  const tiedHead: SmallTensor = { name: 'lm_head.weight', dtype: 'F32', shape: embed.shape, data: toFloat32(embed) };
  const untied = await logits(variant(t, {}, [tiedHead], ['lm_head.weight']));
  const tied = await logits(variant(t, { tie_word_embeddings: true }, [], ['lm_head.weight']));
  t.true(maxRelativeError(tied, untied) <= 1e-6);
});
