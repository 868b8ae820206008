/** The command line: a thin shell over the public API. */
import { parseArgs } from 'node:util';
import { doctor } from '../device';
import { SafetyArithmeticError } from '../errors';
import { removeHarmDirection, type HdrOptions } from '../hdr';
import { progressBar } from './progress';

const USAGE = `safety-arithmetic: make language models safer at test time (Safety Arithmetic, Hazra et al. 2024)

Commands:
  hdr      Harm Direction Removal: out = target - lambda * trim_k(harmful - base)
           safety-arithmetic hdr --base DIR --harmful DIR --target DIR --out DIR
             [--mode ties|task-vector] [--top-k PCT] [--lambda L] [--layers 4,5,6] [--edit-mask]
             [--harm-vector FILE | --save-harm-vector FILE] [--max-shard-size 5GB]
             [--device cpu|cuda|auto] [--buffer-size 256MB] [--force] [--durable] [--json]
  doctor   Report the native backends, the GPU, and why CUDA is not in use when it is not
           safety-arithmetic doctor [--json]

Environment: SAFETY_ARITHMETIC_DEVICE=cpu|cuda|auto chooses the device when --device is absent.
`;

class UsageError extends Error {}

function parseNumber(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${flag} expects a number, got "${value}"`);
  return n;
}

function parseLayers(value: string | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  const layers: number[] = [];
  for (const p of parts) {
    const range = /^(\d+)-(\d+)$/.exec(p);
    if (range) {
      for (let l = Number(range[1]); l <= Number(range[2]); l++) layers.push(l);
    } else if (/^\d+$/.test(p)) {
      layers.push(Number(p));
    } else {
      throw new UsageError(`--layers expects layer indices such as 4,5,6 or 4-6, got "${value}"`);
    }
  }
  if (layers.length === 0) throw new UsageError('--layers is empty');
  return layers;
}

async function runHdr(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      base: { type: 'string' }, harmful: { type: 'string' }, target: { type: 'string' }, out: { type: 'string' },
      mode: { type: 'string' }, 'top-k': { type: 'string' }, lambda: { type: 'string' }, layers: { type: 'string' },
      'edit-mask': { type: 'boolean' }, 'harm-vector': { type: 'string' }, 'save-harm-vector': { type: 'string' },
      'max-shard-size': { type: 'string' }, device: { type: 'string' }, 'buffer-size': { type: 'string' },
      force: { type: 'boolean' }, durable: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(USAGE);
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
  set('bufferSize', values['buffer-size']);
  if (values.force) options.force = true;
  if (values.durable) options.durable = true;

  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = progressBar();
  options.signal = controller.signal;
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
          (s.harmVector ? `harm vector saved to ${s.harmVector}\n` : ''),
      );
    }
    return 0;
  } finally {
    bar.finish();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

function runDoctor(argv: string[]): number {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' } } });
  const r = doctor();
  if (values.json) {
    process.stdout.write(JSON.stringify(r) + '\n');
    return 0;
  }
  const lines = [`safety-arithmetic ${r.packageVersion} on Node ${r.node} (${r.platform})`, `addon: ${r.addon ?? 'unknown'}`];
  for (const b of r.backends) {
    const details = Object.entries(b.details).filter(([k]) => k !== 'name').map(([k, v]) => `${k}=${String(v)}`).join(' ');
    lines.push(`${b.name.padEnd(5)} ${b.available ? 'available' : 'unavailable'}${details ? '  ' + details : ''}${b.available ? '' : `\n      why: ${b.reason}`}`);
  }
  lines.push(r.selected.error ? `selected (${r.selected.requested}): error: ${r.selected.error}` : `selected (${r.selected.requested}): ${r.selected.backend}`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'hdr':
        return await runHdr(rest);
      case 'doctor':
        return runDoctor(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || (err as { code?: string }).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      process.stderr.write(`safety-arithmetic: ${(err as Error).message}\nRun "safety-arithmetic --help" for usage.\n`);
      return 2;
    }
    if (err instanceof SafetyArithmeticError) {
      process.stderr.write(`safety-arithmetic: error [${err.code}]: ${err.message}\n`);
      return err.code === 'ABORT_ERR' ? 130 : 1;
    }
    process.stderr.write(`safety-arithmetic: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}
