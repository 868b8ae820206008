/** --icv FILE --alpha A, shared by forward and generate. Filled in by the steering commands. */
import type { LanguageModel, SteerRequest } from '../../model/model';
import { UsageError, parseNumber } from '../args';

export const STEER_FLAGS = {
  icv: { type: 'string' },
  alpha: { type: 'string' },
} as const;

export async function steeringFromFlags(model: LanguageModel, values: { icv?: string | undefined; alpha?: string | undefined }): Promise<SteerRequest[]> {
  void model;
  const alpha = parseNumber('--alpha', values.alpha);
  if (values.icv !== undefined) throw new UsageError('--icv is not available yet in this version');
  if (alpha !== undefined && alpha !== 0) throw new UsageError('--alpha needs --icv FILE (or a model folder that holds icv.safetensors)');
  return [];
}
