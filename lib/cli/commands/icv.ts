/** safety-arithmetic icv: the in-context vector of a model from demonstration pairs. */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { SafetyArithmeticError } from '../../errors';
import { computeIcv, defaultDemosFile, readDemos, saveIcv } from '../../icv';
import { LanguageModel } from '../../model/model';
import { parseLayers, parseNumber, requireFlags } from '../args';

export const ICV_USAGE = `  icv      Compute an in-context vector (Safety Alignment) from (unsafe, safe) demonstration pairs
           safety-arithmetic icv --model DIR --out FILE [--demos FILE.jsonl] [--layers LIST] [--alpha A]
             [--device cpu|cuda|auto] [--force] [--json]
`;

export async function runIcv(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' }, out: { type: 'string' }, demos: { type: 'string' }, layers: { type: 'string' }, alpha: { type: 'string' },
      device: { type: 'string' }, force: { type: 'boolean' }, json: { type: 'boolean' },
    },
  });
  requireFlags('icv', values, ['model', 'out']);
  if (fs.existsSync(values.out!) && !values.force)
    throw new SafetyArithmeticError('SA_OUTPUT_EXISTS', `--out ${values.out} already exists; pass --force to replace it`, { file: values.out!, field: 'out' });
  const demos = readDemos(values.demos ?? defaultDemosFile());
  const model = await LanguageModel.load(values.model!, values.device ? { device: values.device as 'cpu' } : {});
  try {
    const layers = parseLayers(values.layers);
    const alpha = parseNumber('--alpha', values.alpha);
    const icv = await computeIcv(model, demos, { ...(layers ? { layers } : {}), ...(alpha !== undefined ? { defaultAlpha: alpha } : {}) });
    saveIcv(values.out!, icv);
    const summary = { out: values.out, layers: icv.layers, hiddenSize: icv.hiddenSize, pairs: demos.length, defaultAlpha: icv.defaultAlpha, modelFingerprint: icv.modelFingerprint };
    process.stdout.write(values.json ? JSON.stringify(summary) + '\n' : `wrote ${values.out}: ICV over layers ${icv.layers.join(',')} from ${demos.length} pairs (default alpha ${icv.defaultAlpha})\n`);
    return 0;
  } finally {
    model.dispose();
  }
}
