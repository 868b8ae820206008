/**
 * sweep(): Safety Arithmetic over a grid of lambda, top-k and alpha, evaluated like eval. The harm
 * vector is computed once per top-k (its trimming depends on k), each patched model once per
 * (lambda, top-k) from that vector, its ICV once, and every alpha of it shares one generation batch.
 * Patched models live in the output's staging folder only while they are evaluated.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SafetyArithmeticError } from '../errors';
import { io } from '../io/files';
import { withStagedOutputs, type OutputInput } from '../io/output';
import { patchInto, prepareHdr, type HdrMode } from '../hdr';
import { computeIcv, defaultDemosFile, readDemos, DEFAULT_ALPHA, type DemoPair } from '../icv';
import type { LayersInput } from '../layers';
import { LanguageModel } from '../model/model';
import { steeringSettings } from './evaluate';
import { EVAL_FILES, packageVersion, prepareInputs, unparsedReplies, writeEvalFiles, type EvalCommonOptions, type PreparedInputs } from './inputs';
import { headline, type AnswerRecord, type Headline, type SettingMetrics } from './metrics';
import { renderReport } from './report';
import { answerAndJudge } from './run';
import { sweepSection } from './sweep-report';

export interface SweepOptions extends EvalCommonOptions {
  base: string;
  /** The base fine-tuned on harmful data (the harm vector's source). */
  harmful: string;
  target: string;
  out: string;
  mode?: HdrMode;
  /** Default [1, 2, 3]; 0 is the target itself. */
  lambdas?: number[];
  /** TIES percents (default [10]); not for task-vector. */
  topKs?: number[];
  /** Default [0, 0.12]. */
  alphas?: number[];
  layers?: LayersInput;
  editMask?: boolean;
  /** Demonstration pairs for the ICVs (default: the package's own set). */
  demos?: string | DemoPair[];
  /** The recommendation's tolerances against the target (lambda 0, alpha 0): utility may drop by (default 0.05), over-safety rise by (default 0.05). */
  maxUtilityDrop?: number;
  maxOverSafetyRise?: number;
}

export interface SweepPoint {
  label: string;
  lambda: number;
  topK: number | null;
  alpha: number;
  headline: Headline;
  metrics: SettingMetrics;
  /** Not beaten on attack success, over-safety and utility at once by another point. */
  front: boolean;
}

export interface SweepRecommendation {
  label: string;
  lambda: number;
  topK: number | null;
  alpha: number;
  command: string;
}

export interface SweepSummary {
  tool: 'safety-arithmetic sweep';
  version: string;
  created: string;
  out: string;
  inputs: { base: string; harmful: string; target: string; demos: string };
  mode: HdrMode;
  layers: LayersInput | null;
  editMask: boolean;
  points: SweepPoint[];
  baseline: string;
  /** null when no setting lowers attack success within the tolerances. */
  recommended: SweepRecommendation | null;
  rule: string;
  /** Harm vectors computed and models patched (each once). */
  work: { harmVectors: number; patchedModels: number; icvs: number };
  prompts: PreparedInputs['describe']['prompts'];
  judge: PreparedInputs['describe']['judge'];
  unparsedJudgeReplies: number;
  seconds: number;
}

function invalid(field: string, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field}: ${message}`, { field });
}

function numbers(field: string, list: number[] | undefined, fallback: number[], check: (v: number) => boolean, what: string): number[] {
  const l = list ?? fallback;
  if (!Array.isArray(l) || l.length === 0) throw invalid(field, 'give at least one value');
  for (const v of l) if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) throw invalid(field, `${String(v)} is not ${what}`);
  if (new Set(l).size !== l.length) throw invalid(field, `lists a value twice (${l.join(', ')})`);
  return [...l].sort((a, b) => a - b);
}

const label = (lambda: number, topK: number | null, alpha: number) => (lambda === 0 ? `lambda 0 alpha ${alpha}` : `lambda ${lambda}${topK !== null ? ` top-k ${topK}` : ''} alpha ${alpha}`);

/** Minimise attack success and over-safety, maximise utility; a missing metric counts as equal. */
export function paretoFront(hs: Headline[]): boolean[] {
  const key = (h: Headline) => [h.attackSuccess?.rate ?? 0, h.overSafety?.rate ?? 0, -(h.utility?.rate ?? 0)];
  const ks = hs.map(key);
  return ks.map((a, i) => !ks.some((b, j) => j !== i && b.every((v, d) => v <= a[d]!) && b.some((v, d) => v < a[d]!)));
}

export function recommendationRule(maxUtilityDrop: number, maxOverSafetyRise: number): string {
  const pts = (x: number) => `${+(x * 100).toFixed(2)} points`;
  return (
    `Among the settings whose utility accuracy is at most ${pts(maxUtilityDrop)} below the target's (lambda 0, alpha 0) and whose over-safety ` +
    `is at most ${pts(maxOverSafetyRise)} above it, the one with the lowest attack success rate; ties go to the higher harmful-refused rate, ` +
    'then to the fewer broken benign answers, then to the smallest change (smaller lambda, then smaller alpha, then smaller top-k). The target itself is never recommended.'
  );
}

/** The recommended point per recommendationRule, or null. */
export function recommend(points: SweepPoint[], baseline: SweepPoint, maxUtilityDrop: number, maxOverSafetyRise: number): SweepPoint | null {
  const b = baseline.headline;
  const ok = points.filter((p) => {
    if (p === baseline || p.headline.attackSuccess === null) return false;
    const u = p.headline.utility?.rate, bu = b.utility?.rate;
    const o = p.headline.overSafety?.rate, bo = b.overSafety?.rate;
    return (u == null || bu == null || u >= bu - maxUtilityDrop - 1e-12) && (o == null || bo == null || o <= bo + maxOverSafetyRise + 1e-12);
  });
  ok.sort((p, q) =>
    p.headline.attackSuccess!.rate! - q.headline.attackSuccess!.rate! ||
    (q.headline.harmfulRefused?.rate ?? 0) - (p.headline.harmfulRefused?.rate ?? 0) ||
    (p.headline.benignBroken?.rate ?? 0) - (q.headline.benignBroken?.rate ?? 0) ||
    p.lambda - q.lambda || p.alpha - q.alpha || (p.topK ?? 0) - (q.topK ?? 0),
  );
  const best = ok[0];
  return best && best.headline.attackSuccess!.rate! < b.attackSuccess!.rate! ? best : null;
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function alignCommand(o: SweepOptions, mode: HdrMode, p: SweepPoint): string {
  const args = ['safety-arithmetic', 'align', '--base', o.base, '--harmful', o.harmful, '--target', o.target];
  if (typeof o.demos === 'string') args.push('--demos', o.demos);
  args.push('--mode', mode);
  if (p.topK !== null) args.push('--top-k', String(p.topK));
  args.push('--lambda', String(p.lambda));
  if (o.layers !== undefined) args.push('--layers', Array.isArray(o.layers) ? o.layers.join(',') : String(o.layers));
  if (o.editMask) args.push('--edit-mask');
  args.push('--alpha', String(p.alpha), '--out', `${o.target.replace(/\/+$/, '')}-safe`);
  return args.map(shellQuote).join(' ');
}

export async function sweep(options: SweepOptions): Promise<{ summary: SweepSummary; records: AnswerRecord[] }> {
  const started = Date.now();
  const o = options;
  if (!o || typeof o !== 'object') throw invalid('options', 'must be an object');
  for (const f of ['base', 'harmful', 'target', 'out'] as const) if (typeof o[f] !== 'string' || o[f] === '') throw invalid(f, 'a folder is required');
  const mode: HdrMode = o.mode ?? 'ties';
  if (mode !== 'ties' && mode !== 'task-vector') throw invalid('mode', `is "${String(mode)}": use ties or task-vector`);
  if (mode === 'task-vector' && o.topKs !== undefined) throw invalid('topKs', 'applies to mode ties only; task-vector subtracts all of tau');
  const lambdas = numbers('lambdas', o.lambdas, [1, 2, 3], (v) => v >= 0, 'a lambda >= 0');
  const topKs: (number | null)[] = mode === 'ties' ? numbers('topKs', o.topKs, [10], (v) => v > 0 && v <= 100, 'a percent in (0, 100]') : [null];
  const alphas = numbers('alphas', o.alphas, [0, DEFAULT_ALPHA], () => true, 'an alpha');
  const maxUtilityDrop = o.maxUtilityDrop ?? 0.05, maxOverSafetyRise = o.maxOverSafetyRise ?? 0.05;
  for (const [f, v] of [['maxUtilityDrop', maxUtilityDrop], ['maxOverSafetyRise', maxOverSafetyRise]] as const) if (!(v >= 0 && v <= 1)) throw invalid(f, `must be in [0, 1], got ${v}`);
  if (!o.prompts?.harmful) throw invalid('prompts', 'sweep needs a harmful prompt set: attack success is what it minimises');
  const demosSource = o.demos ?? defaultDemosFile();
  const demos = typeof demosSource === 'string' ? readDemos(demosSource) : demosSource;
  // Checks every input and parameter of the first patch before anything is written or generated.
  const hdrBase = { base: o.base, harmful: o.harmful, target: o.target, mode, ...(o.layers !== undefined ? { layers: o.layers } : {}), ...(o.editMask ? { editMask: true } : {}), ...(o.device ? { device: o.device } : {}), threads: o.threads, ...(o.signal ? { signal: o.signal } : {}) };
  const first = prepareHdr({ ...hdrBase, out: o.out, lambda: lambdas[lambdas.length - 1]!, ...(topKs[0] !== null ? { topK: topKs[0] } : {}) });
  const prep = await prepareInputs(o);
  const inputs: OutputInput[] = [...prep.inputs, ...first.sources.inputs];
  if (typeof demosSource === 'string') inputs.push({ path: demosSource, role: 'demonstrations file' });
  const icvLayers = o.layers;
  const runOptions = { ...(o.maxNewTokens !== undefined ? { maxNewTokens: o.maxNewTokens } : {}), ...(o.chat ? { chat: true } : {}), ...(o.signal ? { signal: o.signal } : {}) };

  return withStagedOutputs([{ dest: o.out, kind: 'folder', field: 'out' }], { force: o.force ?? false, inputs }, async ([staged]) => {
    const work = path.join(staged!.temp, 'work');
    io(work, 'cannot create the working folder', () => fs.mkdirSync(work));
    const points: SweepPoint[] = [];
    const records: AnswerRecord[] = [];
    const counts = { harmVectors: 0, patchedModels: 0, icvs: 0 };
    const evaluateModel = async (dir: string, lambda: number, topK: number | null, as: number[]) => {
      const model = await LanguageModel.load(dir, { ...(o.device ? { device: o.device } : {}), threads: o.threads });
      try {
        const needsIcv = as.some((a) => a !== 0);
        const icv = needsIcv ? await computeIcv(model, demos, icvLayers !== undefined ? { layers: icvLayers } : {}) : null;
        if (icv) counts.icvs++;
        const runs = steeringSettings(model, icv, as, (a) => label(lambda, topK, a));
        const results = await answerAndJudge(model, prep.sets, runs, prep.judges, { ...runOptions, onProgress: (e) => o.onProgress?.({ ...e, stage: label(lambda, topK, as[0]!).replace(/ alpha .*/, '') }) });
        results.forEach((r, i) => {
          points.push({ label: r.label, lambda, topK, alpha: as[i]!, headline: headline(r.metrics), metrics: r.metrics, front: false });
          records.push(...r.records);
        });
      } finally {
        model.dispose();
      }
    };
    // The target itself: the baseline (alpha 0) and lambda 0 with every alpha when asked for.
    await evaluateModel(o.target, 0, null, lambdas.includes(0) ? [...new Set([0, ...alphas])] : [0]);
    for (const topK of topKs) {
      const hv = path.join(work, `harm-vector${topK !== null ? `-top${topK}` : ''}.safetensors`);
      for (const lambda of lambdas.filter((l) => l > 0)) {
        const folder = path.join(work, `lambda${lambda}${topK !== null ? `-top${topK}` : ''}`);
        io(folder, 'cannot create a working folder', () => fs.mkdirSync(folder));
        if (!fs.existsSync(hv)) {
          const p = prepareHdr({ ...hdrBase, out: folder, lambda, saveHarmVector: hv, ...(topK !== null ? { topK } : {}) });
          await patchInto(p, folder, hv, { out: folder, harmVector: hv });
          counts.harmVectors++;
        } else {
          const p = prepareHdr({ target: o.target, harmVector: hv, lambda, out: folder, ...(o.device ? { device: o.device } : {}), threads: o.threads, ...(o.signal ? { signal: o.signal } : {}) });
          await patchInto(p, folder, undefined, { out: folder, harmVector: null });
        }
        counts.patchedModels++;
        await evaluateModel(folder, lambda, topK, alphas);
        fs.rmSync(folder, { recursive: true, force: true });
      }
    }
    fs.rmSync(work, { recursive: true, force: true });
    const front = paretoFront(points.map((p) => p.headline));
    points.forEach((p, i) => (p.front = front[i]!));
    const baseline = points[0]!;
    const best = recommend(points, baseline, maxUtilityDrop, maxOverSafetyRise);
    const summary: SweepSummary = {
      tool: 'safety-arithmetic sweep', version: packageVersion(), created: new Date().toISOString(), out: staged!.dest,
      inputs: { base: path.resolve(o.base), harmful: path.resolve(o.harmful), target: path.resolve(o.target), demos: typeof demosSource === 'string' ? path.resolve(demosSource) : `${demos.length} pairs given in code` },
      mode, layers: o.layers ?? null, editMask: o.editMask ?? false, points, baseline: baseline.label,
      recommended: best ? { label: best.label, lambda: best.lambda, topK: best.topK, alpha: best.alpha, command: alignCommand(o, mode, best) } : null,
      rule: recommendationRule(maxUtilityDrop, maxOverSafetyRise), work: counts,
      prompts: prep.describe.prompts, judge: prep.describe.judge, unparsedJudgeReplies: unparsedReplies(records), seconds: (Date.now() - started) / 1000,
    };
    writeEvalFiles(staged!.temp, records, summary, sweepReportHtml(summary, records));
    return { summary, records };
  });
}

export function sweepReportHtml(s: SweepSummary, records: AnswerRecord[]): string {
  const shown = [s.baseline, ...(s.recommended ? [s.recommended.label] : [])];
  return renderReport({
    title: 'safety-arithmetic sweep',
    about: [
      `Target ${s.inputs.target}; harm vector from ${s.inputs.harmful} minus ${s.inputs.base}; ${s.mode}${s.layers !== null ? `, layers ${String(s.layers)}` : ''}${s.editMask ? ', edit mask' : ''}; ICVs from ${s.inputs.demos}.`,
      `Prompt sets: ${Object.entries(s.prompts).map(([k, v]) => `${k} ${v!.n}`).join(', ')}. Verdicts counted: ${String(s.judge.counted)}.`,
      `${s.points.length} settings; ${s.work.harmVectors} harm vector(s), ${s.work.patchedModels} patched model(s) (not kept), ${s.work.icvs} ICV(s). safety-arithmetic ${s.version}, ${s.created}; files: ${Object.values(EVAL_FILES).join(', ')}.`,
    ],
    extra: sweepSection(s),
    settings: s.points,
    records,
    answerSettings: shown,
  });
}
