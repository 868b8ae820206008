/** safety-arithmetic eval: attack success, refusals, over-safety and utility of one or more models, with a report. */
import path from 'node:path';
import { evaluate, type EvaluateOptions } from '../../eval/evaluate';
import type { EvalCommonOptions } from '../../eval/inputs';
import { HEADLINE_LABELS, type Headline } from '../../eval/metrics';
import { rateText } from '../../eval/svg';
import { EVAL_FILES } from '../../eval/inputs';
import { UsageError, parseInteger, parseNumber, requireFlags, parseCommandArgs } from '../args';
import { progressBar } from '../progress';
import { interruptSignal } from '../interrupt';

export const EVAL_USAGE = `  eval     Measure refusals, attack success, over-safety and utility; writes results.jsonl, summary.json, report.html
           safety-arithmetic eval --model DIR [--model DIR]... [--icv FILE] [--alpha LIST] --harmful FILE.jsonl
             [--benign FILE.jsonl] [--utility FILE.jsonl] [--refusal-phrases FILE] [--max-new-tokens N] [--chat]
             [--judge-url URL --judge-model NAME [--judge-template FILE] [--judge-api-key KEY]
              [--judge-concurrency N] [--judge-retries N]] --out DIR [--force] [--device cpu|cuda|auto] [--threads N] [--json]
`;

/** The options eval and sweep share: prompt sets, judges, generation, output. */
export const EVAL_FLAGS = {
  'harmful-set': { type: 'string' }, 'benign-set': { type: 'string' }, 'utility-set': { type: 'string' },
  'refusal-phrases': { type: 'string' }, 'max-new-tokens': { type: 'string' }, chat: { type: 'boolean' },
  'judge-url': { type: 'string' }, 'judge-model': { type: 'string' }, 'judge-template': { type: 'string' }, 'judge-api-key': { type: 'string' },
  'judge-concurrency': { type: 'string' }, 'judge-retries': { type: 'string' },
  out: { type: 'string' }, force: { type: 'boolean' }, device: { type: 'string' }, threads: { type: 'string' }, json: { type: 'boolean' },
} as const;

type Flags = Partial<Record<keyof typeof EVAL_FLAGS, string | boolean | undefined>> & { harmful?: string | boolean; benign?: string | boolean; utility?: string | boolean };

/** "0,0.5,1" -> [0, 0.5, 1]. */
export function parseNumberList(flag: string, value: string | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(',').map((s) => s.trim());
  if (parts.some((p) => p === '')) throw new UsageError(`${flag} expects comma-separated numbers, got "${value}"`);
  return parts.map((p) => parseNumber(flag, p)!);
}

/** EvalCommonOptions from the shared flags; prompt sets come from --harmful-set etc. (and, for eval, --harmful etc.). */
export function evalOptionsFromFlags(command: string, v: Flags, progress: (phase: string, done: number, total: number) => void): EvalCommonOptions {
  const str = (x: string | boolean | undefined) => (typeof x === 'string' ? x : undefined);
  const prompts: EvalCommonOptions['prompts'] = {};
  for (const kind of ['harmful', 'benign', 'utility'] as const) {
    const file = str(v[`${kind}-set`]) ?? str(v[kind]);
    if (file !== undefined) prompts[kind] = file;
  }
  if (Object.keys(prompts).length === 0) throw new UsageError(`${command} needs a prompt set: ${command === 'eval' ? '--harmful' : '--harmful-set'} FILE.jsonl (and/or benign, utility)`);
  const o: EvalCommonOptions = { prompts, out: str(v.out)!, onProgress: (p) => progress(`${p.phase === 'generate' ? 'gen' : 'judge'} ${p.stage ?? ''}`.trim(), p.done, p.total) };
  if (v.force) o.force = true;
  if (v.chat) o.chat = true;
  const phrases = str(v['refusal-phrases']);
  if (phrases !== undefined) o.refusalPhrases = phrases;
  const maxNew = parseInteger('--max-new-tokens', str(v['max-new-tokens']));
  if (maxNew !== undefined) o.maxNewTokens = maxNew;
  const url = str(v['judge-url']), model = str(v['judge-model']);
  const judgeOnly = ['judge-template', 'judge-api-key', 'judge-concurrency', 'judge-retries'] as const;
  if ((url === undefined) !== (model === undefined)) throw new UsageError('--judge-url and --judge-model go together (the OpenAI-compatible endpoint and the model it serves)');
  if (url === undefined && judgeOnly.some((f) => v[f] !== undefined)) throw new UsageError(`--${judgeOnly.find((f) => v[f] !== undefined)} needs --judge-url and --judge-model`);
  if (url !== undefined) {
    const apiKey = str(v['judge-api-key']) ?? process.env.SAFETY_ARITHMETIC_JUDGE_API_KEY;
    const concurrency = parseInteger('--judge-concurrency', str(v['judge-concurrency']));
    const retries = parseInteger('--judge-retries', str(v['judge-retries']));
    const template = str(v['judge-template']);
    o.llmJudge = { url, model: model!, ...(apiKey ? { apiKey } : {}), ...(concurrency !== undefined ? { concurrency } : {}), ...(retries !== undefined ? { retries } : {}), ...(template !== undefined ? { templateFile: template } : {}) };
  }
  if (v.device) o.device = v.device as 'cpu';
  const threads = parseInteger('--threads', str(v.threads));
  if (threads !== undefined) o.threads = threads;
  return o;
}

/** The headline metrics as a text table, one column per setting. */
export function headlineTable(settings: { label: string; headline: Headline }[]): string {
  const keys = (Object.keys(HEADLINE_LABELS) as (keyof Headline)[]).filter((k) => settings.some((s) => s.headline[k] !== null));
  const first = Math.max(...keys.map((k) => HEADLINE_LABELS[k].length));
  const cells = settings.map((s) => keys.map((k) => rateText(s.headline[k])));
  const widths = settings.map((s, i) => Math.max(s.label.length, ...cells[i]!.map((c) => c.length)));
  const row = (head: string, cols: string[]) => [head.padEnd(first), ...cols.map((c, i) => c.padEnd(widths[i]!))].join('  ').trimEnd();
  return [row('', settings.map((s) => s.label)), ...keys.map((k, j) => row(HEADLINE_LABELS[k], cells.map((c) => c[j]!)))].join('\n') + '\n';
}

export function writtenLine(out: string, seconds: number): string {
  return `wrote ${out} (${Object.values(EVAL_FILES).join(', ')}) in ${seconds.toFixed(2)} s; open ${path.join(out, EVAL_FILES.report)}\n`;
}

export async function runEval(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: { model: { type: 'string', multiple: true }, icv: { type: 'string' }, alpha: { type: 'string' }, harmful: { type: 'string' }, benign: { type: 'string' }, utility: { type: 'string' }, ...EVAL_FLAGS },
  });
  requireFlags('eval', values, ['model', 'out']);
  const bar = progressBar(process.stderr, 'items');
  const o: EvaluateOptions = { ...evalOptionsFromFlags('eval', values, (phase, done, total) => bar.update(phase, done, total)), models: values.model! };
  if (values.icv) o.icv = values.icv;
  const alphas = parseNumberList('--alpha', values.alpha);
  if (alphas) o.alphas = alphas;
  o.signal = interruptSignal();
  try {
    const { summary } = await evaluate(o);
    bar.finish();
    if (values.json) process.stdout.write(JSON.stringify(summary) + '\n');
    else process.stdout.write(headlineTable(summary.settings) + writtenLine(summary.out!, summary.seconds));
    return 0;
  } finally {
    bar.finish();
  }
}
