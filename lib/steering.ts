/**
 * Safety Alignment at inference: ICVs registered on a model and applied at every steered layer's MLP
 * output, and the same transform as a standalone function for other engines.
 */
import { SafetyArithmeticError } from './errors';
import { checkIcvFits, loadIcv, type InContextVector } from './icv';
import type { LanguageModel, SteerRequest } from './model/model';
import { native } from './native';

function invalid(field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', message, { field });
}

/** Index of the first NaN or infinite value, or -1. */
function firstNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}

/** Registers an ICV on a model and returns the steering request for it (alpha: the ICV's default unless given). */
export function steerWithIcv(model: LanguageModel, icv: InContextVector | string, alpha?: number): SteerRequest {
  const vector = typeof icv === 'string' ? loadIcv(icv) : icv;
  const source = typeof icv === 'string' ? icv : 'ICV';
  checkIcvFits(vector, model, source);
  const bad = firstNonFinite(vector.vectors);
  if (bad >= 0) {
    const row = Math.floor(bad / vector.hiddenSize);
    throw invalid('vectors', `${source}: the vector of layer ${vector.layers[row]} (row ${row}) holds ${vector.vectors[bad]} at column ${bad % vector.hiddenSize}; steer with finite vectors only (recompute the ICV)`);
  }
  const a = alpha ?? vector.defaultAlpha;
  if (typeof a !== 'number' || !Number.isFinite(a)) throw invalid('alpha', `alpha must be a finite number, got ${String(a)}; pass a finite alpha (0 turns steering off)`);
  return { vector: model.addSteeringVector(vector.layers, vector.vectors), alpha: a };
}

/**
 * The steering transform in place on rows of x ([rows, hidden], float32), with one or more vectors of
 * `hidden` values each (docs/semantics.md, "Steering"). With every alpha 0, x is left exactly as it was.
 */
export function steerActivations(x: Float32Array, hidden: number, vectors: Float32Array[], alphas: number[]): void {
  if (vectors.length !== alphas.length) throw invalid('alphas', `steerActivations: ${vectors.length} vectors but ${alphas.length} alphas; pass one alpha per vector`);
  vectors.forEach((v, i) => {
    if (v.length !== hidden) throw invalid('vectors', `steerActivations: vector ${i} has ${v.length} values, hidden is ${hidden}; pass vectors of hidden values`);
    const bad = firstNonFinite(v);
    if (bad >= 0) throw invalid('vectors', `steerActivations: vector ${i} holds ${v[bad]} at index ${bad}; steer with finite vectors only`);
  });
  alphas.forEach((a, i) => {
    if (typeof a !== 'number' || !Number.isFinite(a) || !Number.isFinite(Math.fround(a)))
      throw invalid('alphas', `steerActivations: alpha ${i} is ${String(a)}; pass finite alphas (in float32 range)`);
  });
  const packed = new Float32Array(vectors.length * hidden);
  vectors.forEach((v, i) => packed.set(v, i * hidden));
  native().steerRows(x, hidden, packed, Float32Array.from(alphas));
}
