/** safety-arithmetic align: Harm Direction Removal, then the ICV of the patched model, in one output folder. */
import { align, type AlignOptions } from '../../align';
import type { HdrMode } from '../../hdr';
import { UsageError, parseInteger, parseLayers, parseNumber, requireFlags, parseCommandArgs } from '../args';
import { progressBar } from '../progress';
import { interruptSignal } from '../interrupt';

export const ALIGN_USAGE = `  align    The whole framework: HDR on the target, then the ICV of the patched model saved with it
           safety-arithmetic align --base DIR --harmful DIR --target DIR --out DIR [--demos FILE.jsonl]
             [--mode ties|task-vector] [--top-k PCT] [--lambda L] [--layers LIST] [--edit-mask] [--alpha A]
             [--device cpu|cuda|auto] [--threads N] [--force] [--json]
`;

export async function runAlign(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      base: { type: 'string' }, harmful: { type: 'string' }, target: { type: 'string' }, out: { type: 'string' }, demos: { type: 'string' },
      mode: { type: 'string' }, 'top-k': { type: 'string' }, lambda: { type: 'string' }, layers: { type: 'string' }, 'edit-mask': { type: 'boolean' },
      alpha: { type: 'string' }, device: { type: 'string' }, threads: { type: 'string' }, 'max-shard-size': { type: 'string' }, force: { type: 'boolean' }, json: { type: 'boolean' },
    },
  });
  requireFlags('align', values, ['base', 'harmful', 'target', 'out']);
  const o: AlignOptions = { base: values.base!, harmful: values.harmful!, target: values.target!, out: values.out! };
  if (values.demos) o.demos = values.demos;
  if (values.mode) o.mode = values.mode as HdrMode;
  const topK = parseNumber('--top-k', values['top-k']);
  if (topK !== undefined) o.topK = topK;
  const lambda = parseNumber('--lambda', values.lambda);
  if (lambda !== undefined) o.lambda = lambda;
  const layers = parseLayers(values.layers);
  if (layers) o.layers = layers;
  if (values['edit-mask']) o.editMask = true;
  const alpha = parseNumber('--alpha', values.alpha);
  if (alpha !== undefined) o.alpha = alpha;
  if (values.device) o.device = values.device as 'cpu';
  o.threads = parseInteger('--threads', values.threads);
  if (values['max-shard-size']) o.maxShardSize = values['max-shard-size'];
  if (values.force) o.force = true;
  if (values['edit-mask'] && !layers) throw new UsageError('--edit-mask is for edited models: give the edited layers with --layers');
  const bar = progressBar();
  o.onProgress = (p) => (p.stage === 'hdr' ? bar.update('hdr', p.doneBytes ?? 0, p.totalBytes ?? 0) : bar.finish());
  o.signal = interruptSignal();
  try {
    const s = await align(o);
    bar.finish();
    if (values.json) process.stdout.write(JSON.stringify(s) + '\n');
    else
      process.stdout.write(
        `wrote ${s.out} in ${s.seconds.toFixed(2)} s\n` +
          `  HDR ${s.hdr.mode}${s.hdr.topK !== null ? ` top-k ${s.hdr.topK}%` : ''}, lambda ${s.hdr.lambda}: ${s.hdr.kept} of ${s.hdr.regionElements} elements changed\n` +
          `  ICV over layers ${s.icv.layers.join(',')} from ${s.icv.pairs} pairs, default alpha ${s.icv.defaultAlpha}: generate --model ${s.out} steers with it\n`,
      );
    return 0;
  } finally {
    bar.finish();
  }
}
