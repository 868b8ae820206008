/** safety-arithmetic export-gguf: an ICV as a llama.cpp control vector (an additive, lossy approximation). */
import path from 'node:path';
import { exportControlVector } from '../../export';
import { planOutputs } from '../../io/output';
import { ICV_FILE, checkIcvFits, defaultDemosFile, loadIcv, readDemos } from '../../icv';
import { LanguageModel } from '../../model/model';
import { parseNumber, requireFlags, parseCommandArgs } from '../args';

export const EXPORT_USAGE = `  export-gguf  Export an ICV as a llama.cpp control vector GGUF (additive approximation, lossy)
           safety-arithmetic export-gguf --model DIR --out FILE.gguf [--icv FILE] [--demos FILE.jsonl] [--alpha A] [--force] [--json]
`;

export async function runExportGguf(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: { model: { type: 'string' }, out: { type: 'string' }, icv: { type: 'string' }, demos: { type: 'string' }, alpha: { type: 'string' }, device: { type: 'string' }, force: { type: 'boolean' }, json: { type: 'boolean' } },
  });
  requireFlags('export-gguf', values, ['model', 'out']);
  const icvFile = values.icv ?? path.join(values.model!, ICV_FILE);
  const demosFile = values.demos ?? defaultDemosFile();
  const output = {
    force: values.force ?? false,
    inputs: [{ path: values.model!, role: 'model' }, { path: icvFile, role: 'ICV file' }, { path: demosFile, role: 'demonstrations file' }],
  };
  planOutputs([{ dest: values.out!, kind: 'file', field: 'out' }], output);
  const icv = loadIcv(icvFile);
  const model = await LanguageModel.load(values.model!, values.device ? { device: values.device as 'cpu' } : {});
  try {
    checkIcvFits(icv, model, icvFile);
    const r = await exportControlVector(model, icv, readDemos(demosFile), values.out!, parseNumber('--alpha', values.alpha), output);
    if (values.json) process.stdout.write(JSON.stringify(r) + '\n');
    else {
      process.stdout.write(`wrote ${r.file}: direction.${r.blocks.join(', direction.')} at alpha ${r.alpha}, calibrated on ${r.calibrationTokens} tokens\n`);
      process.stdout.write(`this is an additive approximation of Safety Alignment (lossy); per-block agreement of token changes with their mean: ${r.blocks.map((b) => `${b}: ${r.agreement[b]!.toFixed(2)}`).join(', ')}\n`);
      if (r.dropped.length) process.stdout.write(`layer 0 is steered by the ICV but llama.cpp cannot steer block 0: dropped\n`);
      process.stdout.write(`use it with: llama-cli -m MODEL.gguf --control-vector ${r.file}\n`);
    }
    return 0;
  } finally {
    model.dispose();
  }
}
