/**
 * Export of an ICV as a llama.cpp control vector. llama.cpp can only add a fixed vector to each
 * block's output, where Safety Alignment rescales and turns each MLP output according to its own
 * direction; so the export is an additive approximation: for each steered block, the mean change
 * the transform makes to the MLP output over the demonstration tokens (the MLP output is added to
 * the block's output, so the same change added there has the same effect on average). It is lossy:
 * the change of any single token differs from the mean, and llama.cpp never steers block 0.
 */
import { SafetyArithmeticError } from './errors';
import type { DemoPair, InContextVector } from './icv';
import type { LanguageModel } from './model/model';
import { steerWithIcv } from './steering';
import { writeControlVectorGguf } from './gguf';
import { planOutputs, type FileOutputOptions } from './io/output';

export interface ControlVectorExport {
  file: string;
  alpha: number;
  /** Blocks written (direction.<k>). */
  blocks: number[];
  /** Steered layers llama.cpp cannot express (block 0). */
  dropped: number[];
  /** Demonstration tokens the mean was taken over. */
  calibrationTokens: number;
  /** Mean over tokens of |mean change| / |change|, per block: 1 means every token changed alike. */
  agreement: Record<number, number>;
}

const MODEL_HINTS: Record<string, string> = { LlamaForCausalLM: 'llama', MistralForCausalLM: 'llama', Qwen2ForCausalLM: 'qwen2' };

/**
 * Writes the control vector to `file` under the output policy: never into the model folder or over
 * an input in options.inputs; an existing file is replaced only with options.force.
 */
export async function exportControlVector(model: LanguageModel, icv: InContextVector, demos: DemoPair[], file: string, alpha?: number, options: FileOutputOptions = {}): Promise<ControlVectorExport> {
  const outputOptions: FileOutputOptions = { ...options, inputs: [...(options.inputs ?? []), { path: model.dir, role: 'model' }] };
  planOutputs([{ dest: file, kind: 'file', field: outputOptions.field ?? 'out' }], { force: outputOptions.force ?? false, inputs: outputOptions.inputs! });
  const a = alpha ?? icv.defaultAlpha;
  if (demos.length === 0) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', 'demos: the calibration needs at least one demonstration pair', { field: 'demos' });
  const steer = steerWithIcv(model, icv, a);
  const H = model.config.hiddenSize, L = model.config.numLayers;
  const sums = new Map<number, Float64Array>(icv.layers.map((l) => [l, new Float64Array(H)]));
  const deltas: Map<number, Float32Array[]> = new Map(icv.layers.map((l) => [l, []]));
  let tokens = 0;
  try {
    const texts = demos.flatMap((d) => [d.unsafe, d.safe]);
    for (let i = 0; i < texts.length; i += 16) {
      const outs = await model.forward(texts.slice(i, i + 16), { capture: ['mlp_raw', 'mlp_out'], lastOnly: true, steer: [steer] });
      for (const r of outs) {
        const T = r.tokens.length;
        tokens += T;
        for (const l of icv.layers) {
          const sum = sums.get(l)!;
          for (let t = 0; t < T; t++) {
            const base = (l * T + t) * H;
            const d = new Float32Array(H);
            for (let j = 0; j < H; j++) {
              d[j] = r.mlpOut![base + j]! - r.mlpRaw![base + j]!;
              sum[j]! += d[j]!;
            }
            deltas.get(l)!.push(d);
          }
        }
      }
    }
  } finally {
    model.removeSteeringVector(steer.vector);
  }
  const directions = new Map<number, Float32Array>();
  const agreement: Record<number, number> = {};
  for (const l of icv.layers) {
    if (l === 0) continue;
    const mean = Float32Array.from(sums.get(l)!, (v) => v / tokens);
    directions.set(l, mean);
    let score = 0;
    for (const d of deltas.get(l)!) {
      let dot = 0, dd = 0, mm = 0;
      for (let j = 0; j < H; j++) { dot += d[j]! * mean[j]!; dd += d[j]! * d[j]!; mm += mean[j]! * mean[j]!; }
      score += dd > 0 && mm > 0 ? dot / Math.sqrt(dd * mm) : 0;
    }
    agreement[l] = score / deltas.get(l)!.length;
  }
  if (directions.size === 0) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', 'the ICV steers only layer 0, which llama.cpp control vectors cannot steer', { field: 'icv' });
  const written = writeControlVectorGguf(file, {
    modelHint: MODEL_HINTS[model.config.architecture] ?? 'llama',
    layerCount: L - 1,
    directions,
    metadata: {
      source: 'safety-arithmetic ICV, additive approximation (lossy)',
      alpha: String(a),
      calibration_tokens: String(tokens),
      note: 'mean change of the MLP output under Safety Alignment over the demonstrations; added to the block output by llama.cpp',
    },
  }, outputOptions);
  return { file: written, alpha: a, blocks: [...directions.keys()], dropped: icv.layers.filter((l) => l === 0), calibrationTokens: tokens, agreement };
}
