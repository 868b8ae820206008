/** safety-arithmetic sweep: HDR and ICV over a grid of lambda, top-k and alpha, evaluated, with the Pareto front and a recommendation. */
import type { HdrMode } from '../../hdr';
import { sweep, type SweepOptions } from '../../eval/sweep';
import { parseCommandArgs, parseLayers, parseNumber, requireFlags } from '../args';
import { progressBar } from '../progress';
import { interruptSignal } from '../interrupt';
import { EVAL_FLAGS, evalOptionsFromFlags, headlineTable, parseNumberList, writtenLine } from './eval';

export const SWEEP_USAGE = `  sweep    Evaluate Safety Arithmetic over a grid of lambda, top-k and alpha; recommends an align command
           safety-arithmetic sweep --base DIR --harmful DIR --target DIR --harmful-set FILE.jsonl [--benign-set FILE.jsonl]
             [--utility-set FILE.jsonl] [--lambda LIST] [--top-k LIST] [--alpha LIST] [--mode ties|task-vector]
             [--layers LIST] [--edit-mask] [--demos FILE.jsonl] [--max-utility-drop F] [--max-over-safety-rise F]
             [eval's judge and generation options] --out DIR [--force] [--json]
`;

export async function runSweep(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      base: { type: 'string' }, harmful: { type: 'string' }, target: { type: 'string' }, mode: { type: 'string' }, lambda: { type: 'string' }, 'top-k': { type: 'string' },
      alpha: { type: 'string' }, layers: { type: 'string' }, 'edit-mask': { type: 'boolean' }, demos: { type: 'string' },
      'max-utility-drop': { type: 'string' }, 'max-over-safety-rise': { type: 'string' }, ...EVAL_FLAGS,
    },
  });
  requireFlags('sweep', values, ['base', 'harmful', 'target', 'out']);
  const bar = progressBar(process.stderr, 'items');
  const { harmful: _model, ...evalFlags } = values;
  const o: SweepOptions = { ...evalOptionsFromFlags('sweep', evalFlags, (phase, done, total) => bar.update(phase, done, total)), base: values.base!, harmful: values.harmful!, target: values.target!, out: values.out! };
  if (values.mode) o.mode = values.mode as HdrMode;
  const lambdas = parseNumberList('--lambda', values.lambda);
  if (lambdas) o.lambdas = lambdas;
  const topKs = parseNumberList('--top-k', values['top-k']);
  if (topKs) o.topKs = topKs;
  const alphas = parseNumberList('--alpha', values.alpha);
  if (alphas) o.alphas = alphas;
  const layers = parseLayers(values.layers);
  if (layers) o.layers = layers;
  if (values['edit-mask']) o.editMask = true;
  if (values.demos) o.demos = values.demos;
  const drop = parseNumber('--max-utility-drop', values['max-utility-drop']);
  if (drop !== undefined) o.maxUtilityDrop = drop;
  const rise = parseNumber('--max-over-safety-rise', values['max-over-safety-rise']);
  if (rise !== undefined) o.maxOverSafetyRise = rise;
  o.signal = interruptSignal();
  try {
    const { summary } = await sweep(o);
    bar.finish();
    if (values.json) process.stdout.write(JSON.stringify(summary) + '\n');
    else {
      const rec = summary.recommended;
      process.stdout.write(
        headlineTable(summary.points) +
          `Pareto front: ${summary.points.filter((p) => p.front).map((p) => p.label).join('; ')}\n` +
          (rec ? `recommended: ${rec.label}\n  ${rec.command}\n` : 'recommended: nothing (no setting lowered attack success within the tolerances)\n') +
          `rule: ${summary.rule}\n` +
          writtenLine(summary.out, summary.seconds),
      );
    }
    return 0;
  } finally {
    bar.finish();
  }
}
