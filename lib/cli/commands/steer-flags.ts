/** --icv FILE --alpha A for forward and generate; a model folder's own icv.safetensors is used by default. */
import fs from 'node:fs';
import path from 'node:path';
import { ICV_FILE, checkIcvFits, loadIcv, modelFingerprint } from '../../icv';
import type { LanguageModel, SteerRequest } from '../../model/model';
import { steerWithIcv } from '../../steering';
import { UsageError, parseNumber } from '../args';

export const STEER_FLAGS = {
  icv: { type: 'string' },
  alpha: { type: 'string' },
} as const;

export async function steeringFromFlags(model: LanguageModel, values: { icv?: string | undefined; alpha?: string | undefined }): Promise<SteerRequest[]> {
  const alpha = parseNumber('--alpha', values.alpha);
  let file = values.icv;
  if (file === undefined && fs.existsSync(path.join(model.dir, ICV_FILE))) file = path.join(model.dir, ICV_FILE);
  if (file === undefined) {
    if (alpha !== undefined && alpha !== 0) throw new UsageError('--alpha needs --icv FILE (or a model folder that holds icv.safetensors)');
    return [];
  }
  const icv = loadIcv(file);
  checkIcvFits(icv, model, file);
  if (icv.modelFingerprint && icv.modelFingerprint !== modelFingerprint(model))
    process.stderr.write(`safety-arithmetic: warning: ${file} was computed on another model than ${model.dir} (fingerprints differ)\n`);
  const a = alpha ?? icv.defaultAlpha;
  if (a === 0) return [];
  return [steerWithIcv(model, icv, a)];
}
