/**
 * evaluate(): answers every prompt set with one or more models and steering strengths, judges the
 * answers, and writes results.jsonl, summary.json and report.html.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SafetyArithmeticError } from '../errors';
import { withStagedOutputs, type OutputInput } from '../io/output';
import { ICV_FILE, loadIcv, type InContextVector } from '../icv';
import { LanguageModel, type SteerRequest } from '../model/model';
import { steerWithIcv } from '../steering';
import { EVAL_FILES, packageVersion, prepareInputs, unparsedReplies, writeEvalFiles, type EvalCommonOptions, type PreparedInputs } from './inputs';
import { headline, type AnswerRecord, type Headline, type SettingMetrics } from './metrics';
import { renderReport } from './report';
import { answerAndJudge, type SettingRun } from './run';

export interface EvalModel {
  dir: string;
  /** ICV file (default: the evaluate() icv option, else the folder's own icv.safetensors, else none). */
  icv?: string;
  /** Steering strengths (default: the evaluate() alphas, else the ICV's default alpha, or 0 without an ICV). */
  alphas?: number[];
  /** Name in the report (default: the folder's name). */
  label?: string;
}

export interface EvaluateOptions extends EvalCommonOptions {
  /** Model folders to compare (side by side in one report). */
  models: (string | EvalModel)[];
  /** ICV file for every model without its own. */
  icv?: string;
  /** Steering strengths for every model without its own list. */
  alphas?: number[];
}

export interface EvalSettingSummary {
  label: string;
  model: string;
  icv: string | null;
  alpha: number;
  headline: Headline;
  metrics: SettingMetrics;
}

export interface EvalSummary {
  tool: 'safety-arithmetic eval';
  version: string;
  created: string;
  out: string | null;
  settings: EvalSettingSummary[];
  prompts: PreparedInputs['describe']['prompts'];
  judge: PreparedInputs['describe']['judge'];
  /** LLM judge replies that named no verdict (the rules decided those). */
  unparsedJudgeReplies: number;
  seconds: number;
}

export interface EvalResult {
  summary: EvalSummary;
  records: AnswerRecord[];
}

function invalid(field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field}: ${message}`, { field });
}

interface ModelPlan {
  dir: string;
  name: string;
  icvFile: string | null;
  icv: InContextVector | null;
  alphas: number[];
}

function checkAlphas(alphas: number[], field: string): number[] {
  if (!Array.isArray(alphas) || alphas.length === 0) throw invalid(field, 'give at least one alpha');
  for (const a of alphas) if (typeof a !== 'number' || !Number.isFinite(a)) throw invalid(field, `alphas must be finite numbers, got ${String(a)}`);
  if (new Set(alphas).size !== alphas.length) throw invalid(field, `lists an alpha twice (${alphas.join(', ')})`);
  return alphas;
}

function planModels(o: EvaluateOptions): ModelPlan[] {
  if (!Array.isArray(o.models) || o.models.length === 0) throw invalid('models', 'give at least one model folder');
  const specs = o.models.map((m) => (typeof m === 'string' ? { dir: m } : m));
  const names = specs.map((s) => s.label ?? path.basename(path.resolve(s.dir)));
  return specs.map((s, i) => {
    if (typeof s.dir !== 'string' || s.dir === '') throw invalid('models', `model ${i + 1} has no folder`);
    const own = path.join(s.dir, ICV_FILE);
    const icvFile = s.icv ?? o.icv ?? (fs.existsSync(own) ? own : null);
    const icv = icvFile === null ? null : loadIcv(icvFile);
    const alphas = checkAlphas(s.alphas ?? o.alphas ?? [icv ? icv.defaultAlpha : 0], s.alphas ? 'models.alphas' : 'alphas');
    if (!icv && alphas.some((a) => a !== 0)) throw invalid('alphas', `${s.dir} has no ${ICV_FILE} and no ICV file was given: alpha ${alphas.find((a) => a !== 0)} needs one (give --icv FILE, or evaluate it with alpha 0 only)`);
    const name = names.indexOf(names[i]!) !== i || names.lastIndexOf(names[i]!) !== i ? s.dir : names[i]!;
    return { dir: s.dir, name, icvFile, icv, alphas };
  });
}

/** A setting per alpha; the ICV is registered once and alpha 0 steers nothing. */
export function steeringSettings(model: LanguageModel, icv: InContextVector | null, alphas: number[], label: (alpha: number) => string): SettingRun[] {
  let registered: SteerRequest | null = null;
  return alphas.map((alpha) => {
    let steer: SteerRequest[] = [];
    if (alpha !== 0) {
      registered ??= steerWithIcv(model, icv!);
      steer = [{ vector: registered.vector, alpha }];
    }
    return { label: label(alpha), steer };
  });
}

export async function evaluate(options: EvaluateOptions): Promise<EvalResult> {
  const started = Date.now();
  if (!options || typeof options !== 'object') throw invalid('options', 'must be an object');
  const plans = planModels(options);
  const prep = await prepareInputs(options);
  const run = async (outDir: string | null): Promise<EvalResult> => {
    const settings: EvalSettingSummary[] = [];
    const records: AnswerRecord[] = [];
    for (const p of plans) {
      const model = await LanguageModel.load(p.dir, { ...(options.device ? { device: options.device } : {}), threads: options.threads });
      try {
        const label = (alpha: number) => `${p.name} alpha ${alpha}`;
        const runs = steeringSettings(model, p.icv, p.alphas, label);
        const results = await answerAndJudge(model, prep.sets, runs, prep.judges, {
          ...(options.maxNewTokens !== undefined ? { maxNewTokens: options.maxNewTokens } : {}),
          ...(options.chat ? { chat: true } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
          onProgress: (e) => options.onProgress?.({ ...e, stage: p.name }),
        });
        results.forEach((r, i) => {
          settings.push({ label: r.label, model: path.resolve(p.dir), icv: p.icvFile && p.alphas[i] !== 0 ? path.resolve(p.icvFile) : null, alpha: p.alphas[i]!, headline: headline(r.metrics), metrics: r.metrics });
          records.push(...r.records);
        });
      } finally {
        model.dispose();
      }
    }
    const summary: EvalSummary = {
      tool: 'safety-arithmetic eval', version: packageVersion(), created: new Date().toISOString(), out: outDir,
      settings, prompts: prep.describe.prompts, judge: prep.describe.judge, unparsedJudgeReplies: unparsedReplies(records), seconds: (Date.now() - started) / 1000,
    };
    return { summary, records };
  };
  if (options.out === undefined) return run(null);
  const inputs: OutputInput[] = [...prep.inputs, ...plans.map((p) => ({ path: p.dir, role: 'model' })), ...plans.filter((p) => p.icvFile).map((p) => ({ path: p.icvFile!, role: 'ICV file' }))];
  return withStagedOutputs([{ dest: options.out, kind: 'folder', field: 'out' }], { force: options.force ?? false, inputs }, async ([staged]) => {
    const result = await run(staged!.dest);
    writeEvalFiles(staged!.temp, result.records, result.summary, evalReportHtml(result.summary, result.records));
    return result;
  });
}

export function evalReportHtml(s: EvalSummary, records: AnswerRecord[]): string {
  return renderReport({
    title: 'safety-arithmetic eval',
    about: [
      `Prompt sets: ${Object.entries(s.prompts).map(([k, v]) => `${k} ${v!.n} (${v!.source})`).join('; ')}.`,
      `Verdicts counted: ${String(s.judge.counted)}.${s.unparsedJudgeReplies ? ` ${s.unparsedJudgeReplies} LLM replies named no verdict.` : ''}`,
      `Models: ${s.settings.map((x) => `${x.label}: ${x.model}${x.icv ? ` with ${x.icv}` : ''}`).join('; ')}.`,
      `safety-arithmetic ${s.version}, ${s.created}; files: ${Object.values(EVAL_FILES).join(', ')}.`,
    ],
    settings: s.settings,
    records,
  });
}
