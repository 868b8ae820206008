/**
 * Safety Alignment at inference: ICVs registered on a model and applied at every steered layer's MLP
 * output, and the same transform as a standalone function for other engines.
 */
import { SafetyArithmeticError } from './errors';
import { checkIcvFits, loadIcv, type InContextVector } from './icv';
import type { LanguageModel, SteerRequest } from './model/model';
import { native } from './native';

/** Registers an ICV on a model and returns the steering request for it (alpha: the ICV's default unless given). */
export function steerWithIcv(model: LanguageModel, icv: InContextVector | string, alpha?: number): SteerRequest {
  const vector = typeof icv === 'string' ? loadIcv(icv) : icv;
  checkIcvFits(vector, model, typeof icv === 'string' ? icv : 'ICV');
  const a = alpha ?? vector.defaultAlpha;
  if (!Number.isFinite(a)) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `alpha must be a finite number, got ${a}`, { field: 'alpha' });
  return { vector: model.addSteeringVector(vector.layers, vector.vectors), alpha: a };
}

/**
 * The steering transform in place on rows of x ([rows, hidden], float32), with one or more vectors of
 * `hidden` values each (DESIGN.md, "Steering"). With every alpha 0, x is left exactly as it was.
 */
export function steerActivations(x: Float32Array, hidden: number, vectors: Float32Array[], alphas: number[]): void {
  if (vectors.length !== alphas.length) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `steerActivations: ${vectors.length} vectors but ${alphas.length} alphas`, { field: 'alphas' });
  for (const v of vectors)
    if (v.length !== hidden) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `steerActivations: a vector has ${v.length} values, hidden is ${hidden}`, { field: 'vectors' });
  const packed = new Float32Array(vectors.length * hidden);
  vectors.forEach((v, i) => packed.set(v, i * hidden));
  native().steerRows(x, hidden, packed, Float32Array.from(alphas));
}
