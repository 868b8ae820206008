/**
 * Prompt sets: JSONL files, one item a line. Every item has a "prompt" (text, sent as it is, or
 * through the chat template with the chat option) or chat "messages", and optionally an "id" and a
 * "category". Harmful and benign items may say what compliance and refusal look like
 * ("complied_if", "refused_if": matchers); utility items carry the expected "answer" and how it is
 * matched ("match": exact (default), prefix, regex or number). Other fields are ignored.
 */
import { SafetyArithmeticError } from '../errors';
import { readTextFile } from '../io/files';
import type { ChatMessage } from '../text';
import { makeMatcher, parseMatcher, MATCHER_TYPES, type Matcher, type MatcherType } from './matchers';

export const PROMPT_KINDS = ['harmful', 'benign', 'utility'] as const;
export type PromptKind = (typeof PROMPT_KINDS)[number];

export interface PromptItem {
  id: string;
  kind: PromptKind;
  category: string;
  prompt?: string;
  messages?: ChatMessage[];
  /** harmful and benign: what a compliant answer looks like. */
  compliedIf?: Matcher;
  /** harmful and benign: what a refusal looks like. */
  refusedIf?: Matcher;
  /** utility: what a correct answer looks like. */
  expected?: Matcher;
}

export type PromptSets = Partial<Record<PromptKind, PromptItem[]>>;

/** The category of items that name none. */
export const NO_CATEGORY = '(none)';

function bad(file: string, line: number, message: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${file}:${line}: ${message}`, { file });
}

function parseItem(o: Record<string, unknown>, kind: PromptKind, file: string, line: number): PromptItem {
  const item: PromptItem = { id: '', kind, category: NO_CATEGORY };
  if (o.id !== undefined) {
    if (typeof o.id !== 'string' && typeof o.id !== 'number') throw bad(file, line, '"id" must be a string or a number');
    item.id = String(o.id);
  } else item.id = `${kind}-${line}`;
  if (o.category !== undefined) {
    if (typeof o.category !== 'string' || o.category === '') throw bad(file, line, '"category" must be a non-empty string');
    item.category = o.category;
  }
  if ((o.prompt === undefined) === (o.messages === undefined)) throw bad(file, line, 'give exactly one of "prompt" (text) and "messages" (a chat)');
  if (o.prompt !== undefined) {
    if (typeof o.prompt !== 'string' || o.prompt.trim() === '') throw bad(file, line, '"prompt" must be non-empty text');
    item.prompt = o.prompt;
  } else {
    const msgs = o.messages;
    if (!Array.isArray(msgs) || msgs.length === 0 || !msgs.every((m) => typeof m === 'object' && m !== null && typeof (m as ChatMessage).role === 'string' && typeof (m as ChatMessage).content === 'string'))
      throw bad(file, line, '"messages" must be a non-empty list of {"role": ..., "content": ...} with text content');
    item.messages = msgs as ChatMessage[];
  }
  const matcher = (field: string, raw: unknown): Matcher => {
    const m = parseMatcher(raw);
    if (typeof m === 'string') throw bad(file, line, `"${field}" ${m}`);
    return m;
  };
  if (kind === 'utility') {
    if (o.answer === undefined) throw bad(file, line, 'a utility item needs an "answer" (and optionally "match": exact, prefix, regex or number)');
    const type = (o.match ?? 'exact') as MatcherType;
    if (!MATCHER_TYPES.includes(type)) throw bad(file, line, `"match" is ${JSON.stringify(o.match)}: use one of ${MATCHER_TYPES.join(', ')}`);
    const m = makeMatcher(type, o.answer, o.flags);
    if (typeof m === 'string') throw bad(file, line, `"answer" (match ${m})`);
    item.expected = m;
  } else {
    if (o.complied_if !== undefined) item.compliedIf = matcher('complied_if', o.complied_if);
    if (o.refused_if !== undefined) item.refusedIf = matcher('refused_if', o.refused_if);
  }
  return item;
}

/** Parses JSONL text (file names the source in messages). */
export function parsePromptSet(text: string, kind: PromptKind, file: string): PromptItem[] {
  const items: PromptItem[] = [];
  const ids = new Map<string, number>();
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === '') return;
    let o: unknown;
    try {
      o = JSON.parse(raw);
    } catch (err) {
      throw bad(file, line, `not valid JSON (${(err as Error).message}); each line must be one JSON object`);
    }
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw bad(file, line, 'each line must be one JSON object such as {"prompt": "..."}');
    const item = parseItem(o as Record<string, unknown>, kind, file, line);
    const seen = ids.get(item.id);
    if (seen !== undefined) throw bad(file, line, `id "${item.id}" was already used on line ${seen}; ids must be unique within a file`);
    ids.set(item.id, line);
    items.push(item);
  });
  if (items.length === 0) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${file}: holds no prompts; write one JSON object a line, such as {"prompt": "..."}`, { file });
  return items;
}

export function readPromptSet(file: string, kind: PromptKind): PromptItem[] {
  return parsePromptSet(readTextFile(file, `the ${kind} prompt set`, 256 * 1024 * 1024, kind), kind, file);
}
