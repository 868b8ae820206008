/** safety-arithmetic hdr: Harm Direction Removal on checkpoint folders. */
import { removeHarmDirection, type HdrOptions } from '../../hdr';
import { UsageError, parseInteger, parseLayers, parseNumber, parseCommandArgs } from '../args';
import { progressBar } from '../progress';
import { interruptSignal } from '../interrupt';

export const HDR_USAGE = `  hdr      Harm Direction Removal: out = target - lambda * trim_k(harmful - base)
           safety-arithmetic hdr --base DIR --harmful DIR --target DIR --out DIR
             [--mode ties|task-vector] [--top-k PCT] [--lambda L] [--layers 4,5,6] [--edit-mask]
             [--harm-vector FILE | --save-harm-vector FILE] [--max-shard-size 5GB]
             [--device cpu|cuda|auto] [--threads N] [--buffer-size 256MB] [--passes auto|1|3]
             [--force] [--durable] [--json]
           --passes: how TIES finds its threshold, same result either way: 1 reads the inputs once
             (a sampled band; falls back to 3 if the band misses), 3 reads base and harmful three times
`;

export async function runHdr(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      base: { type: 'string' }, harmful: { type: 'string' }, target: { type: 'string' }, out: { type: 'string' },
      mode: { type: 'string' }, 'top-k': { type: 'string' }, lambda: { type: 'string' }, layers: { type: 'string' },
      'edit-mask': { type: 'boolean' }, 'harm-vector': { type: 'string' }, 'save-harm-vector': { type: 'string' },
      'max-shard-size': { type: 'string' }, device: { type: 'string' }, threads: { type: 'string' }, 'buffer-size': { type: 'string' },
      passes: { type: 'string' }, force: { type: 'boolean' }, durable: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(HDR_USAGE);
    return 0;
  }
  for (const required of ['target', 'out'] as const) if (!values[required]) throw new UsageError(`hdr needs --${required}`);
  if (!values['harm-vector'] && (!values.base || !values.harmful)) throw new UsageError('hdr needs --base and --harmful (or --harm-vector FILE)');
  const mode = values.mode as HdrOptions['mode'] | undefined;
  const options: HdrOptions = { target: values.target!, out: values.out! };
  const set = <K extends keyof HdrOptions>(k: K, v: HdrOptions[K] | undefined) => {
    if (v !== undefined) options[k] = v;
  };
  set('base', values.base);
  set('harmful', values.harmful);
  set('harmVector', values['harm-vector']);
  set('saveHarmVector', values['save-harm-vector']);
  set('mode', mode);
  set('topK', parseNumber('--top-k', values['top-k']));
  set('lambda', parseNumber('--lambda', values.lambda));
  set('layers', parseLayers(values.layers));
  if (values['edit-mask']) options.editMask = true;
  set('maxShardSize', values['max-shard-size']);
  set('device', values.device as HdrOptions['device']);
  set('threads', parseInteger('--threads', values.threads));
  set('bufferSize', values['buffer-size']);
  if (values.passes !== undefined) {
    if (!['auto', '1', '3'].includes(values.passes)) throw new UsageError(`--passes is "${values.passes}": use auto, 1 or 3`);
    options.passes = values.passes === 'auto' ? 'auto' : (Number(values.passes) as 1 | 3);
  }
  if (values.force) options.force = true;
  if (values.durable) options.durable = true;

  const bar = progressBar();
  options.signal = interruptSignal();
  options.onProgress = (p) => bar.update(p.phase, p.doneBytes, p.totalBytes);
  try {
    const s = await removeHarmDirection(options);
    bar.finish();
    if (values.json) {
      process.stdout.write(JSON.stringify(s) + '\n');
    } else {
      const thr = s.threshold === null ? '' : `, threshold |tau| >= ${s.threshold.toPrecision(6)}`;
      process.stdout.write(
        `wrote ${s.out} (${s.files.length} files) on ${s.backend} in ${s.seconds.total.toFixed(2)} s\n` +
          `${s.mode}${s.topK !== null ? ` top-k ${s.topK}%` : ''}, lambda ${s.lambda}${s.layers ? `, layers ${s.layers.join(',')}` : ''}${s.editMask ? ', edit mask' : ''}: ` +
          `${s.kept} of ${s.regionElements} region elements changed (${s.ties} ties${thr})\n` +
          `${s.passes.ran === 1 ? 'one pass' : 'three passes'} over the inputs: ${s.passes.reason}\n` +
          (s.harmVector ? `harm vector saved to ${s.harmVector}\n` : ''),
      );
    }
    return 0;
  } finally {
    bar.finish();
  }
}

