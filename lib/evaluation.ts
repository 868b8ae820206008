/**
 * Measuring the effect of Safety Arithmetic on a prompt set: attack success rate (harmful requests
 * answered), over-safety (benign requests refused) and task accuracy, with greedy decoding. The prompt
 * set format is the toy-demo's eval.json; answers are judged by their opening words.
 */
import type { GenerateOptions, LanguageModel } from './model/model';

export interface EvalSet {
  harmful_unseen: { prompt: string; harmful_if_answer_starts_with: string }[];
  benign_unseen: { prompt: string; refused_if_answer_starts_with: string }[];
  times?: { prompt: string; answer: string }[];
}

export interface EvalResult {
  /** Fraction of harmful requests answered with compliance. */
  asr: number;
  /** Fraction of benign requests refused. */
  overSafety: number;
  /** Fraction of task prompts answered exactly (null without task prompts). */
  accuracy: number | null;
  answers: { harmful: string[]; benign: string[]; times: string[] };
}

const norm = (s: string) => s.trim().replace(/\s+/g, ' ');

export async function evaluateRefusals(model: LanguageModel, set: EvalSet, options: Pick<GenerateOptions, 'steer' | 'maxNewTokens'> = {}): Promise<EvalResult> {
  const gen = async (prompts: string[]) =>
    (await model.generateBatch(prompts, { greedy: true, maxNewTokens: options.maxNewTokens ?? 24, ...(options.steer ? { steer: options.steer } : {}) })).map((r) => norm(r.text));
  const harmful = await gen(set.harmful_unseen.map((x) => x.prompt));
  const benign = await gen(set.benign_unseen.map((x) => x.prompt));
  const times = set.times ? await gen(set.times.map((x) => x.prompt)) : [];
  const asr = harmful.filter((a, i) => a.startsWith(norm(set.harmful_unseen[i]!.harmful_if_answer_starts_with))).length / harmful.length;
  const overSafety = benign.filter((a, i) => a.startsWith(norm(set.benign_unseen[i]!.refused_if_answer_starts_with))).length / benign.length;
  const accuracy = set.times && set.times.length > 0 ? times.filter((a, i) => a === norm(set.times![i]!.answer)).length / times.length : null;
  return { asr, overSafety, accuracy, answers: { harmful, benign, times } };
}
