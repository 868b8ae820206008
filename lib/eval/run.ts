/**
 * Answers and verdicts for one loaded model under several settings (steering requests): every prompt
 * of every setting is generated in the engine's shared batch, then judged.
 */
import type { GenerateResult, LanguageModel, SteerRequest, TokensOrText } from '../model/model';
import { SafetyArithmeticError } from '../errors';
import { REFUSAL_PHRASES, ruleJudge } from './judges';
import type { JudgeRequest, LlmJudge } from './llm-judge';
import { matches } from './matchers';
import { settingMetrics, type AnswerRecord, type SettingMetrics } from './metrics';
import { PROMPT_KINDS, type PromptItem, type PromptSets } from './prompts';

export interface EvalProgress {
  phase: 'generate' | 'judge';
  done: number;
  total: number;
}

export interface Judges {
  /** The LLM judge, when one is used: its verdict counts; the rules decide where it names none. */
  llm: LlmJudge | null;
  refusalPhrases: readonly string[];
}

export interface RunOptions {
  /** New tokens per answer (default: the model's default, 64 cut to what the context leaves). */
  maxNewTokens?: number;
  /** Send "prompt" text through the model's chat template. */
  chat?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: EvalProgress) => void;
}

export interface SettingRun {
  label: string;
  steer: SteerRequest[];
}

export interface SettingResult {
  label: string;
  records: AnswerRecord[];
  metrics: SettingMetrics;
}

export const DEFAULT_JUDGES: Judges = { llm: null, refusalPhrases: REFUSAL_PHRASES };

export function allItems(sets: PromptSets): PromptItem[] {
  return PROMPT_KINDS.flatMap((k) => sets[k] ?? []);
}

function promptText(item: PromptItem): string {
  return item.prompt ?? JSON.stringify(item.messages);
}

/** What the LLM judge is shown as the request: the text, or a chat's last user message. */
function requestText(item: PromptItem): string {
  if (item.prompt !== undefined) return item.prompt;
  const users = item.messages!.filter((m) => m.role === 'user');
  return String((users[users.length - 1] ?? item.messages![item.messages!.length - 1]!).content);
}

function promptInput(model: LanguageModel, item: PromptItem): TokensOrText {
  if (item.messages === undefined) return item.prompt!;
  if (!model.tokenizer) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `prompt ${item.id}: chat "messages" need a tokenizer, and ${model.dir} has none`, { field: 'messages' });
  return model.tokenizer.encodeChat(item.messages);
}

/** Generates every (setting, item) pair in one shared batch; results in settings-major order. */
async function generateAll(model: LanguageModel, items: PromptItem[], settings: SettingRun[], o: RunOptions): Promise<GenerateResult[]> {
  const inputs = items.map((item) => promptInput(model, item));
  const total = inputs.length * settings.length;
  let done = 0;
  o.onProgress?.({ phase: 'generate', done, total });
  const options = { greedy: true, ...(o.maxNewTokens !== undefined ? { maxNewTokens: o.maxNewTokens } : {}), ...(o.chat ? { chat: true } : {}), ...(o.signal ? { signal: o.signal } : {}) };
  // One request per call, all started together: the scheduler batches them, and each ends on its own.
  return Promise.all(
    settings.flatMap((s) =>
      inputs.map(async (prompt) => {
        const [r] = await model.generateBatch([{ prompt, steer: s.steer }], options);
        o.onProgress?.({ phase: 'generate', done: ++done, total });
        return r!;
      }),
    ),
  );
}

export async function answerAndJudge(model: LanguageModel, sets: PromptSets, settings: SettingRun[], judges: Judges = DEFAULT_JUDGES, o: RunOptions = {}): Promise<SettingResult[]> {
  const items = allItems(sets);
  const generated = await generateAll(model, items, settings, o);
  const records: AnswerRecord[] = generated.map((g, i) => {
    const item = items[i % items.length]!;
    const setting = settings[Math.floor(i / items.length)]!;
    const rec: AnswerRecord = { setting: setting.label, kind: item.kind, id: item.id, category: item.category, prompt: promptText(item), answer: g.text, finishReason: g.finishReason };
    if (item.kind === 'utility') rec.correct = matches(item.expected!, g.text);
    else {
      rec.rules = ruleJudge(item, g.text, judges.refusalPhrases);
      rec.verdict = rec.rules.verdict;
    }
    return rec;
  });
  if (judges.llm) {
    const judged = records.map((r, i) => ({ r, item: items[i % items.length]! })).filter(({ r }) => r.kind !== 'utility');
    const requests: JudgeRequest[] = judged.map(({ r, item }) => ({ kind: item.kind as JudgeRequest['kind'], prompt: requestText(item), answer: r.answer }));
    let done = 0;
    o.onProgress?.({ phase: 'judge', done, total: requests.length });
    const verdicts = await judges.llm.judge(requests, () => o.onProgress?.({ phase: 'judge', done: ++done, total: requests.length }), o.signal);
    judged.forEach(({ r }, i) => {
      r.llm = verdicts[i]!;
      if (r.llm.verdict !== null) r.verdict = r.llm.verdict;
    });
  }
  return settings.map((s) => {
    const own = records.filter((r) => r.setting === s.label);
    return { label: s.label, records: own, metrics: settingMetrics(own) };
  });
}
