/** safety-arithmetic export-gguf: an ICV as a llama.cpp control vector (an additive, lossy approximation). */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { SafetyArithmeticError } from '../../errors';
import { exportControlVector } from '../../export';
import { ICV_FILE, checkIcvFits, defaultDemosFile, loadIcv, readDemos } from '../../icv';
import { LanguageModel } from '../../model/model';
import { parseNumber, requireFlags } from '../args';

export const EXPORT_USAGE = `  export-gguf  Export an ICV as a llama.cpp control vector GGUF (additive approximation, lossy)
           safety-arithmetic export-gguf --model DIR --out FILE.gguf [--icv FILE] [--demos FILE.jsonl] [--alpha A] [--force] [--json]
`;

export async function runExportGguf(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { model: { type: 'string' }, out: { type: 'string' }, icv: { type: 'string' }, demos: { type: 'string' }, alpha: { type: 'string' }, device: { type: 'string' }, force: { type: 'boolean' }, json: { type: 'boolean' } },
  });
  requireFlags('export-gguf', values, ['model', 'out']);
  if (fs.existsSync(values.out!) && !values.force)
    throw new SafetyArithmeticError('SA_OUTPUT_EXISTS', `--out ${values.out} already exists; pass --force to replace it`, { file: values.out!, field: 'out' });
  const icvFile = values.icv ?? path.join(values.model!, ICV_FILE);
  const icv = loadIcv(icvFile);
  const model = await LanguageModel.load(values.model!, values.device ? { device: values.device as 'cpu' } : {});
  try {
    checkIcvFits(icv, model, icvFile);
    const r = await exportControlVector(model, icv, readDemos(values.demos ?? defaultDemosFile()), values.out!, parseNumber('--alpha', values.alpha));
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
