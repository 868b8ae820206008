/** safety-arithmetic generate: text or tokens from a prompt, streamed, or one JSON line. */
import { LanguageModel, type GenerateOptions, type KvCacheDtype, type MatmulPrecision } from '../../model/model';
import { UsageError, parseInteger, parseNumber, parseTokens, requireFlags, parseCommandArgs } from '../args';
import { steeringFromFlags, STEER_FLAGS } from './steer-flags';
import { interruptSignal } from '../interrupt';

export const GENERATE_USAGE = `  generate Generate from a prompt
           safety-arithmetic generate --model DIR (--prompt TEXT [--chat] | --tokens LIST) [--max-new-tokens N]
             [--greedy | --temperature T --top-k K --top-p P --seed S] [--stop STR]... [--icv FILE --alpha A]
             [--device cpu|cuda|auto] [--threads N] [--float32] [--kv-cache-dtype f32|bf16|f16]
             [--matmul-precision f32|bf16] [--json]
`;

export async function runGenerate(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      model: { type: 'string' }, prompt: { type: 'string' }, chat: { type: 'boolean' }, tokens: { type: 'string' },
      'max-new-tokens': { type: 'string' }, greedy: { type: 'boolean' }, temperature: { type: 'string' }, 'top-k': { type: 'string' },
      'top-p': { type: 'string' }, seed: { type: 'string' }, stop: { type: 'string', multiple: true }, device: { type: 'string' }, threads: { type: 'string' },
      float32: { type: 'boolean' }, 'kv-cache-dtype': { type: 'string' }, 'matmul-precision': { type: 'string' }, json: { type: 'boolean' }, ...STEER_FLAGS,
    },
  });
  requireFlags('generate', values, ['model']);
  if ((values.tokens === undefined) === (values.prompt === undefined)) throw new UsageError('generate needs exactly one of --prompt TEXT and --tokens LIST');
  if (values.chat && values.tokens !== undefined) throw new UsageError('--chat applies to --prompt text, not to --tokens');
  const temperature = parseNumber('--temperature', values.temperature);
  if (values.greedy && (temperature !== undefined || values['top-k'] !== undefined || values['top-p'] !== undefined))
    throw new UsageError('--greedy cannot be combined with --temperature, --top-k or --top-p');
  const options: GenerateOptions = {};
  const maxNewTokens = parseInteger('--max-new-tokens', values['max-new-tokens']);
  if (maxNewTokens !== undefined) options.maxNewTokens = maxNewTokens; // else 64, cut to the context
  if (values.greedy || temperature === undefined) options.greedy = true;
  else {
    options.greedy = false;
    options.temperature = temperature;
    const topK = parseInteger('--top-k', values['top-k']);
    const topP = parseNumber('--top-p', values['top-p']);
    if (topK !== undefined) options.topK = topK;
    if (topP !== undefined) options.topP = topP;
  }
  const seed = parseInteger('--seed', values.seed);
  if (seed !== undefined) options.seed = seed;
  if (values.stop) options.stop = values.stop;
  if (values.chat) options.chat = true;
  const model = await LanguageModel.load(values.model!, { ...(values.device ? { device: values.device as 'cpu' } : {}), weights: values.float32 ? 'float32' : 'auto', threads: parseInteger('--threads', values.threads),
    ...(values['kv-cache-dtype'] !== undefined ? { kvCacheDtype: values['kv-cache-dtype'] as KvCacheDtype } : {}),
    ...(values['matmul-precision'] !== undefined ? { matmulPrecision: values['matmul-precision'] as MatmulPrecision } : {}),
  });
  options.signal = interruptSignal();
  try {
    options.steer = await steeringFromFlags(model, values);
    const prompt = values.tokens !== undefined ? parseTokens(values.tokens) : values.prompt!;
    const stream = model.generate(prompt, options);
    let printed = '';
    let final;
    for (;;) {
      const step = await stream.next();
      if (step.done) {
        final = step.value;
        break;
      }
      if (!values.json && model.tokenizer) {
        process.stdout.write(step.value.text.slice(printed.length));
        printed = step.value.text;
      }
    }
    if (values.json) process.stdout.write(JSON.stringify({ tokens: final.tokens, text: final.text, finishReason: final.finishReason }) + '\n');
    else if (model.tokenizer) process.stdout.write(final.text.slice(printed.length) + '\n');
    else process.stdout.write(final.tokens.join(',') + '\n');
    return 0;
  } finally {
    model.dispose();
  }
}
