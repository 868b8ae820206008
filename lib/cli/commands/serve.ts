/** safety-arithmetic serve: the OpenAI-compatible server with Safety Alignment per request. */
import { parseSize } from '../../checkpoint/layout';
import type { Device } from '../../device';
import { LanguageModel, type KvCacheDtype, type LoadOptions, type MatmulPrecision } from '../../model/model';
import { createServer, type ServerOptions } from '../../server';
import { interruptSignal } from '../interrupt';
import { UsageError, parseCommandArgs, parseInteger, parseNumber, requireFlags } from '../args';

export const SERVE_USAGE = `  serve    An OpenAI-compatible server (/v1/chat/completions, /v1/completions) steering each request
           safety-arithmetic serve --model DIR [--host 127.0.0.1] [--port 8080] [--api-key KEY]
             [--icv NAME=FILE]... [--default-icv NAME] [--alpha A] [--min-alpha A] [--max-alpha A]
             [--max-batch N] [--max-queue N] [--max-tokens N] [--context N] [--max-step-tokens N] [--kv-cache SIZE] [--kv-cache-dtype f32|bf16|f16]
             [--matmul-precision f32|bf16] [--max-body SIZE] [--drain-timeout SECONDS] [--log-format json|text|none] [--cors-origin ORIGIN]
             [--model-name NAME] [--device cpu|cuda|auto] [--threads N]
`;

function icvFlags(list: string[] | undefined): Record<string, string> {
  const icvs: Record<string, string> = {};
  for (const item of list ?? []) {
    const eq = item.indexOf('=');
    if (eq <= 0 || eq === item.length - 1) throw new UsageError(`--icv expects NAME=FILE, got "${item}"`);
    const name = item.slice(0, eq);
    if (Object.hasOwn(icvs, name)) throw new UsageError(`--icv ${name} is given twice`);
    icvs[name] = item.slice(eq + 1);
  }
  return icvs;
}

export async function runServe(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      model: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, 'api-key': { type: 'string' },
      icv: { type: 'string', multiple: true }, 'default-icv': { type: 'string' }, alpha: { type: 'string' }, 'min-alpha': { type: 'string' },
      'max-alpha': { type: 'string' }, 'max-batch': { type: 'string' }, 'max-queue': { type: 'string' }, 'max-tokens': { type: 'string' },
      context: { type: 'string' }, 'max-step-tokens': { type: 'string' }, 'kv-cache': { type: 'string' }, 'kv-cache-dtype': { type: 'string' }, 'matmul-precision': { type: 'string' }, 'max-body': { type: 'string' },
      'drain-timeout': { type: 'string' }, 'log-format': { type: 'string' }, 'cors-origin': { type: 'string' }, 'model-name': { type: 'string' },
      device: { type: 'string' }, threads: { type: 'string' },
    },
  });
  requireFlags('serve', values, ['model']);
  const o: ServerOptions = { icvs: icvFlags(values.icv), logFormat: (values['log-format'] ?? 'text') as ServerOptions['logFormat'] };
  const set = <K extends keyof ServerOptions>(k: K, v: ServerOptions[K] | undefined) => {
    if (v !== undefined) o[k] = v;
  };
  set('host', values.host);
  set('port', parseInteger('--port', values.port));
  set('apiKey', values['api-key']);
  set('defaultIcv', values['default-icv']);
  set('alpha', parseNumber('--alpha', values.alpha));
  set('minAlpha', parseNumber('--min-alpha', values['min-alpha']));
  set('maxAlpha', parseNumber('--max-alpha', values['max-alpha']));
  set('maxBatch', parseInteger('--max-batch', values['max-batch']));
  set('maxQueue', parseInteger('--max-queue', values['max-queue']));
  set('maxTokens', parseInteger('--max-tokens', values['max-tokens']));
  set('context', parseInteger('--context', values.context));
  set('maxBodyBytes', values['max-body'] === undefined ? undefined : parseSize(values['max-body'], '--max-body'));
  const drain = parseNumber('--drain-timeout', values['drain-timeout']);
  set('drainTimeoutMs', drain === undefined ? undefined : Math.round(drain * 1000));
  set('corsOrigin', values['cors-origin']);
  set('modelName', values['model-name']);

  const load: LoadOptions = {};
  if (values.device) load.device = values.device as Device;
  load.threads = parseInteger('--threads', values.threads);
  if (o.maxBatch !== undefined) load.maxBatchSequences = o.maxBatch;
  const stepTokens = parseInteger('--max-step-tokens', values['max-step-tokens']);
  if (stepTokens !== undefined) (load as { maxStepTokens?: number }).maxStepTokens = stepTokens;
  if (values['kv-cache'] !== undefined) (load as { kvCacheBytes?: number }).kvCacheBytes = parseSize(values['kv-cache'], '--kv-cache');
  if (values['kv-cache-dtype'] !== undefined) load.kvCacheDtype = values['kv-cache-dtype'] as KvCacheDtype;
  if (values['matmul-precision'] !== undefined) load.matmulPrecision = values['matmul-precision'] as MatmulPrecision;

  const model = await LanguageModel.load(values.model!, load);
  let server;
  try {
    server = createServer(model, o);
  } catch (err) {
    model.dispose();
    throw err;
  }
  const { url } = await server.listen();
  const { names, default: def } = server.icvs;
  process.stderr.write(
    `safety-arithmetic serve: ${server.options.modelName} on ${model.backend} at ${url}/v1 ` +
      `(ICVs: ${names.length ? names.join(', ') : 'none'}${def ? `; applied by default: ${def}` : ''}${Number.isFinite(server.options.minAlpha) ? `; alpha >= ${server.options.minAlpha}` : ''}` +
      `${server.options.apiKey ? '; API key required' : ''})\n`,
  );
  const interrupted = interruptSignal();
  await new Promise<void>((resolve) => interrupted.addEventListener('abort', () => resolve(), { once: true }));
  process.stderr.write(`safety-arithmetic serve: stopping: finishing running requests (up to ${server.options.drainTimeoutMs / 1000} s), taking no new ones; a second Ctrl-C stops at once\n`);
  await server.close();
  model.dispose();
  process.stderr.write('safety-arithmetic serve: stopped\n');
  return 0;
}
