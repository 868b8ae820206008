/**
 * The server's ICVs: each registered on the model once, at start; a request chooses one by name and
 * its alpha, which is a per-sequence value of the steering kernel, so nothing a client sends
 * allocates anything.
 */
import path from 'node:path';
import { SafetyArithmeticError } from '../errors';
import { ICV_FILE, checkIcvFits, loadIcv, type InContextVector } from '../icv';
import { exists } from '../io/files';
import type { LanguageModel, SteerRequest, SteeringVectorHandle } from '../model/model';
import { badRequest } from './api-error';

export const DEFAULT_ICV_NAME = 'default';

interface RegisteredIcv {
  name: string;
  handle: SteeringVectorHandle;
  defaultAlpha: number;
  source: string;
}

export interface SteeringChoice {
  /** The ICV applied, or null when none is. */
  icv: string | null;
  alpha: number;
  steer: SteerRequest[];
}

export interface SteeringLimits {
  minAlpha: number;
  maxAlpha: number;
}

function invalid(field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field}: ${message}`, { field });
}

export class SteeringRegistry {
  private readonly byName = new Map<string, RegisteredIcv>();
  readonly defaultName: string | null;
  private readonly defaultAlpha: number | undefined;

  constructor(
    private readonly model: LanguageModel,
    icvs: Record<string, string | InContextVector>,
    defaultIcv: string | null | undefined,
    alpha: number | undefined,
    private readonly limits: SteeringLimits,
  ) {
    const all: [string, string | InContextVector][] = Object.entries(icvs);
    const own = path.join(model.dir, ICV_FILE);
    if (!Object.hasOwn(icvs, DEFAULT_ICV_NAME) && exists(own)) all.unshift([DEFAULT_ICV_NAME, own]);
    try {
      for (const [name, source] of all) {
        if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw invalid('icvs', `the ICV name "${name}" must be 1-64 letters, digits, ".", "_" or "-"`);
        const icv = typeof source === 'string' ? loadIcv(source) : source;
        const where = typeof source === 'string' ? source : `ICV "${name}"`;
        checkIcvFits(icv, model, where);
        this.byName.set(name, { name, handle: model.addSteeringVector(icv.layers, icv.vectors), defaultAlpha: icv.defaultAlpha, source: where });
      }
    } catch (err) {
      this.dispose();
      throw err;
    }
    const chosen = defaultIcv === undefined ? (this.byName.has(DEFAULT_ICV_NAME) ? DEFAULT_ICV_NAME : null) : defaultIcv;
    if (chosen !== null && !this.byName.has(chosen))
      throw invalid('defaultIcv', `"${chosen}" is not one of the ICVs given (${this.names().join(', ') || 'none'})`);
    this.defaultName = chosen;
    if (alpha !== undefined && (typeof alpha !== 'number' || !Number.isFinite(alpha))) throw invalid('alpha', 'must be a finite number');
    this.defaultAlpha = alpha;
    const applied = this.defaultAlphaOf(chosen);
    if (applied < limits.minAlpha || applied > limits.maxAlpha)
      throw invalid('alpha', `the default alpha ${applied} is outside [${limits.minAlpha}, ${limits.maxAlpha}]; ${chosen === null && limits.minAlpha > 0 ? 'a floor on alpha needs an ICV: give --icv NAME=FILE, or a model folder made by align' : 'choose a default alpha inside the allowed range'}`);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  describe(): { name: string; source: string; defaultAlpha: number }[] {
    return [...this.byName.values()].map((r) => ({ name: r.name, source: r.source, defaultAlpha: r.defaultAlpha }));
  }

  private defaultAlphaOf(name: string | null): number {
    if (name === null) return 0;
    return this.defaultAlpha ?? this.byName.get(name)!.defaultAlpha;
  }

  /** The steering for a request's `safety` object (already checked to be an object or undefined). */
  choose(safety: { icv?: unknown; alpha?: unknown } | undefined): SteeringChoice {
    let name = this.defaultName;
    if (safety?.icv !== undefined && safety.icv !== null) {
      if (typeof safety.icv !== 'string' || !this.byName.has(safety.icv))
        throw badRequest('safety.icv', `unknown ICV ${JSON.stringify(safety.icv)}; this server has ${this.names().map((n) => `"${n}"`).join(', ') || 'no ICVs'}`);
      name = safety.icv;
    }
    let alpha = this.defaultAlphaOf(name);
    if (safety?.alpha !== undefined && safety.alpha !== null) {
      if (typeof safety.alpha !== 'number' || !Number.isFinite(safety.alpha)) throw badRequest('safety.alpha', 'must be a finite number');
      alpha = safety.alpha;
    }
    if (alpha < this.limits.minAlpha) throw badRequest('safety.alpha', `${alpha} is below this server's floor of ${this.limits.minAlpha}; ask for at least ${this.limits.minAlpha}`, 'alpha_below_minimum');
    if (alpha > this.limits.maxAlpha) throw badRequest('safety.alpha', `${alpha} is above this server's limit of ${this.limits.maxAlpha}`);
    if (name === null) {
      if (alpha !== 0) throw badRequest('safety.alpha', 'this server has no ICV to steer with; start it with --icv NAME=FILE (or serve a model made by align)');
      return { icv: null, alpha: 0, steer: [] };
    }
    if (alpha === 0) return { icv: name, alpha: 0, steer: [] };
    return { icv: name, alpha, steer: [{ vector: this.byName.get(name)!.handle, alpha }] };
  }

  dispose(): void {
    for (const r of this.byName.values()) this.model.removeSteeringVector(r.handle);
    this.byName.clear();
  }
}
