/** What eval and sweep share: prompt sets, judges, and the output folder they write. */
import fs from 'node:fs';
import path from 'node:path';
import { SafetyArithmeticError } from '../errors';
import { io, readTextFile } from '../io/files';
import type { OutputInput } from '../io/output';
import type { Device } from '../device';
import { REFUSAL_PHRASES } from './judges';
import { LlmJudge, readJudgeTemplate, type LlmJudgeOptions } from './llm-judge';
import type { AnswerRecord } from './metrics';
import { PROMPT_KINDS, readPromptSet, type PromptItem, type PromptKind, type PromptSets } from './prompts';
import type { EvalProgress, Judges } from './run';

export interface EvalCommonOptions {
  /** Prompt sets: JSONL files or parsed items (at least one set). */
  prompts: Partial<Record<PromptKind, string | PromptItem[]>>;
  /** An LLM judge over an OpenAI-compatible endpoint; templateFile reads its template from a file. */
  llmJudge?: LlmJudgeOptions & { templateFile?: string };
  /** Replaces the package's refusal phrases (REFUSAL_PHRASES). */
  refusalPhrases?: readonly string[] | string;
  /** New tokens per answer (default: the model's default, 64 cut to what the context leaves). */
  maxNewTokens?: number;
  /** Send "prompt" text through each model's chat template. */
  chat?: boolean;
  device?: Device;
  threads?: number;
  /** Output folder for results.jsonl, summary.json and report.html (written atomically). */
  out?: string;
  force?: boolean;
  onProgress?: (p: EvalProgress & { stage?: string }) => void;
  signal?: AbortSignal;
}

export const EVAL_FILES = { results: 'results.jsonl', summary: 'summary.json', report: 'report.html' } as const;

export interface PreparedInputs {
  sets: PromptSets;
  judges: Judges;
  /** For summary.json. */
  describe: { prompts: Partial<Record<PromptKind, { source: string; n: number }>>; judge: Record<string, unknown> };
  /** Files read, for the output policy. */
  inputs: OutputInput[];
}

function readPhrases(file: string): string[] {
  const lines = readTextFile(file, 'the refusal phrases file', 16 * 1024 * 1024, 'refusalPhrases').split('\n').map((l) => l.trim().toLowerCase()).filter((l) => l !== '' && !l.startsWith('#'));
  if (lines.length === 0) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${file}: holds no refusal phrases (one a line; # starts a comment)`, { file, field: 'refusalPhrases' });
  return lines;
}

/** Reads the prompt sets and sets up the judges; an LLM judge that nothing answers for is an error here, before any generation. */
export async function prepareInputs(o: EvalCommonOptions): Promise<PreparedInputs> {
  if (!o.prompts || typeof o.prompts !== 'object') throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', 'prompts: give at least one prompt set (harmful, benign, utility)', { field: 'prompts' });
  const sets: PromptSets = {};
  const inputs: OutputInput[] = [];
  const describe: PreparedInputs['describe'] = { prompts: {}, judge: {} };
  for (const kind of PROMPT_KINDS) {
    const src = o.prompts[kind];
    if (src === undefined) continue;
    const items = typeof src === 'string' ? readPromptSet(src, kind) : src.map((x) => ({ ...x, kind }));
    sets[kind] = items;
    if (typeof src === 'string') inputs.push({ path: src, role: `${kind} prompt set` });
    describe.prompts[kind] = { source: typeof src === 'string' ? path.resolve(src) : 'given in code', n: items.length };
  }
  if (Object.keys(sets).length === 0) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', 'prompts: give at least one prompt set (harmful, benign, utility)', { field: 'prompts' });
  let refusalPhrases: readonly string[] = REFUSAL_PHRASES;
  if (typeof o.refusalPhrases === 'string') {
    inputs.push({ path: o.refusalPhrases, role: 'refusal phrases file' });
    refusalPhrases = readPhrases(o.refusalPhrases);
  } else if (o.refusalPhrases) refusalPhrases = o.refusalPhrases.map((p) => p.toLowerCase());
  let llm: LlmJudge | null = null;
  if (o.llmJudge) {
    const { templateFile, ...rest } = o.llmJudge;
    if (templateFile !== undefined) inputs.push({ path: templateFile, role: 'judge template' });
    llm = new LlmJudge({ ...rest, ...(templateFile !== undefined ? { template: readJudgeTemplate(templateFile) } : {}) });
    await llm.checkReachable();
  }
  describe.judge = {
    counted: llm ? 'the LLM judge; the rules where its reply names no verdict' : 'the rules: dataset matchers, then the refusal phrases',
    refusalPhrases: refusalPhrases === REFUSAL_PHRASES ? "the package's (REFUSAL_PHRASES)" : refusalPhrases,
    llm: llm ? llm.describe() : null,
  };
  return { sets, judges: { llm, refusalPhrases }, describe, inputs };
}

export function packageVersion(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('../../../package.json') as { version: string }).version;
}

/** LLM replies that named no verdict (the rules decided those). */
export function unparsedReplies(records: AnswerRecord[]): number {
  return records.filter((r) => r.llm && r.llm.verdict === null).length;
}

/** Writes results.jsonl, summary.json and report.html into a staging folder. */
export function writeEvalFiles(folder: string, records: AnswerRecord[], summary: unknown, html: string): void {
  const write = (name: string, text: string) => {
    const file = path.join(folder, name);
    io(file, `cannot write ${name}`, () => fs.writeFileSync(file, text));
  };
  write(EVAL_FILES.results, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  write(EVAL_FILES.summary, JSON.stringify(summary, null, 2) + '\n');
  write(EVAL_FILES.report, html);
}
