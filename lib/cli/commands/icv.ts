/** safety-arithmetic icv: the in-context vector of a model from demonstration pairs. */
import { planOutputs } from '../../io/output';
import { computeIcv, defaultDemosFile, readDemos, saveIcv } from '../../icv';
import { LanguageModel } from '../../model/model';
import { parseInteger, parseLayers, parseNumber, requireFlags, parseCommandArgs } from '../args';

export const ICV_USAGE = `  icv      Compute an in-context vector (Safety Alignment) from (unsafe, safe) demonstration pairs
           safety-arithmetic icv --model DIR --out FILE [--demos FILE.jsonl] [--layers LIST] [--alpha A]
             [--device cpu|cuda|auto] [--threads N] [--force] [--json]
`;

export async function runIcv(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      model: { type: 'string' }, out: { type: 'string' }, demos: { type: 'string' }, layers: { type: 'string' }, alpha: { type: 'string' },
      device: { type: 'string' }, threads: { type: 'string' }, force: { type: 'boolean' }, json: { type: 'boolean' },
    },
  });
  requireFlags('icv', values, ['model', 'out']);
  const layers = parseLayers(values.layers);
  const demosFile = values.demos ?? defaultDemosFile();
  const output = { force: values.force ?? false, inputs: [{ path: values.model!, role: 'model' }, { path: demosFile, role: 'demonstrations file' }] };
  planOutputs([{ dest: values.out!, kind: 'file', field: 'out' }], output);
  const demos = readDemos(demosFile);
  const model = await LanguageModel.load(values.model!, { ...(values.device ? { device: values.device as 'cpu' } : {}), threads: parseInteger('--threads', values.threads) });
  try {
    const alpha = parseNumber('--alpha', values.alpha);
    const icv = await computeIcv(model, demos, { ...(layers ? { layers } : {}), ...(alpha !== undefined ? { defaultAlpha: alpha } : {}) });
    const written = saveIcv(values.out!, icv, output);
    const summary = { out: written, layers: icv.layers, hiddenSize: icv.hiddenSize, pairs: demos.length, defaultAlpha: icv.defaultAlpha, modelFingerprint: icv.modelFingerprint };
    process.stdout.write(values.json ? JSON.stringify(summary) + '\n' : `wrote ${written}: ICV over layers ${icv.layers.join(',')} from ${demos.length} pairs (default alpha ${icv.defaultAlpha})\n`);
    return 0;
  } finally {
    model.dispose();
  }
}
