/**
 * Chat templates: the Jinja `chat_template` of a Hugging Face model folder, rendered with
 * @huggingface/jinja the way transformers' `apply_chat_template` renders it.
 */
import path from 'node:path';
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { SafetyArithmeticError } from '../errors';
import { exists, readTextFile } from '../io/files';

/**
 * Bounds on rendering one conversation: a template is code from the model folder, and one that loops
 * (`range(10000000)`, nested loops, a string doubled in a loop) must end with an error, not hang.
 * Real chat templates take a few hundred evaluation steps per message.
 */
export const CHAT_TEMPLATE_LIMITS = {
  /** Evaluation steps (one per expression or statement evaluated). */
  maxSteps: 1_000_000,
  /** Wall-clock time. */
  maxMilliseconds: 2_000,
  /** Characters in any string the template builds, the prompt included. */
  maxOutputChars: 32 * 1024 * 1024,
  /** Elements of one range(). */
  maxRangeLength: 1_000_000,
};

/** Largest chat template file read. */
const TEMPLATE_FILE_MAX_BYTES = 4 * 1024 * 1024;

/** Thrown by the bounded interpreter; turned into an error naming the template's file. */
class TemplateLimitError extends Error {}

type Statement = Parameters<Interpreter['evaluate']>[0];
type RuntimeValue = ReturnType<Interpreter['evaluate']>;

/**
 * The library's interpreter with a step budget, a deadline and a bound on the strings it builds. A
 * step is one evaluated expression or statement, or one block run (so each loop iteration counts,
 * even with an empty body).
 */
class BoundedInterpreter extends Interpreter {
  private steps = 0;
  private readonly deadline: number;

  constructor(env: Environment) {
    super(env);
    this.deadline = Date.now() + CHAT_TEMPLATE_LIMITS.maxMilliseconds;
    // evaluateBlock is private in the library's typings: wrap this instance's own copy, so loops count per iteration.
    const self = this as unknown as { evaluateBlock: (...args: unknown[]) => unknown };
    const evaluateBlock = self.evaluateBlock;
    if (typeof evaluateBlock === 'function') {
      self.evaluateBlock = (...args: unknown[]) => {
        this.step();
        return evaluateBlock.apply(this, args);
      };
    }
  }

  private step(): void {
    const step = ++this.steps;
    if (step > CHAT_TEMPLATE_LIMITS.maxSteps)
      throw new TemplateLimitError(`it did not finish within ${CHAT_TEMPLATE_LIMITS.maxSteps} evaluation steps (the limit for one render; a loop that does not end?)`);
    if (step % 1024 === 0 && Date.now() > this.deadline)
      throw new TemplateLimitError(`it did not finish within ${CHAT_TEMPLATE_LIMITS.maxMilliseconds} ms (the time limit for one render; a loop that does not end?)`);
  }

  override evaluate(statement: Statement, environment: Environment): RuntimeValue {
    this.step();
    const value = super.evaluate(statement, environment);
    const v = (value as { value?: unknown }).value;
    if (typeof v === 'string' && v.length > CHAT_TEMPLATE_LIMITS.maxOutputChars)
      throw new TemplateLimitError(`it built a string of ${v.length} characters, over the limit of ${CHAT_TEMPLATE_LIMITS.maxOutputChars}`);
    return value;
  }
}

/** Python's range(), refusing more than maxRangeLength elements before building any. */
function boundedRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) {
    stop = start;
    start = 0;
  }
  for (const n of [start, stop, step]) if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw new Error(`range() takes integers, got ${String(n)}`);
  if (step === 0) throw new Error('range() step must not be zero');
  const length = Math.max(0, Math.ceil((stop - start) / step));
  if (length > CHAT_TEMPLATE_LIMITS.maxRangeLength)
    throw new TemplateLimitError(`range(${start}, ${stop}, ${step}) has ${length} elements, over the limit of ${CHAT_TEMPLATE_LIMITS.maxRangeLength} for one range`);
  return Array.from({ length }, (_, i) => start + i * step);
}

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

/** Python's time.strftime for the current local time, for the directives chat templates use (C locale). */
function strftimeNow(format: string): string {
  const d = new Date();
  const two = (n: number) => String(n).padStart(2, '0');
  const codes: Record<string, () => string> = {
    Y: () => String(d.getFullYear()),
    y: () => two(d.getFullYear() % 100),
    m: () => two(d.getMonth() + 1),
    d: () => two(d.getDate()),
    e: () => String(d.getDate()).padStart(2, ' '),
    B: () => MONTHS[d.getMonth()]!,
    b: () => MONTHS[d.getMonth()]!.slice(0, 3),
    A: () => DAYS[d.getDay()]!,
    a: () => DAYS[d.getDay()]!.slice(0, 3),
    H: () => two(d.getHours()),
    I: () => two(d.getHours() % 12 || 12),
    p: () => (d.getHours() < 12 ? 'AM' : 'PM'),
    M: () => two(d.getMinutes()),
    S: () => two(d.getSeconds()),
    '%': () => '%',
  };
  return String(format).replace(/%(.)/g, (all, c: string) => codes[c]?.() ?? all);
}

/** The globals transformers' chat templates expect, with range() and strftime_now() of our own. */
function templateGlobals(): Record<string, unknown> {
  return {
    true: true, false: false, none: null, True: true, False: false, None: null,
    raise_exception: (message: unknown) => {
      throw new Error(String(message));
    },
    range: boundedRange,
    strftime_now: strftimeNow,
  };
}

/** One chat turn. `content` is usually a string; extra keys (tool calls, names) reach the template as they are. */
export interface ChatMessage {
  role: string;
  content: unknown;
  [key: string]: unknown;
}

/** Variables a chat template sees besides `messages`, as transformers passes them. */
export interface ChatRenderOptions {
  /** End the prompt with the header of an assistant turn (`add_generation_prompt`). Default false. */
  addGenerationPrompt?: boolean;
  /** Tool schemas (`tools`); `null` in the template when absent, as in transformers. */
  tools?: unknown[] | null;
  /** Retrieval documents (`documents`); `null` in the template when absent. */
  documents?: unknown[] | null;
  /** Further template variables (for example `enable_thinking`); they override the special tokens. */
  extraContext?: Record<string, unknown>;
}

/** Where a chat template came from, and its source text. */
export interface ChatTemplateSource {
  source: string;
  /** The file it was read from (with the entry name for named templates). */
  origin: string;
}

/** A compiled chat template. */
export class ChatTemplate {
  readonly source: string;
  readonly origin: string;
  private readonly template: Template;

  constructor(source: string, origin = 'chat template') {
    this.source = source;
    this.origin = origin;
    try {
      this.template = new Template(source);
    } catch (err) {
      throw new SafetyArithmeticError(
        'SA_BAD_CHECKPOINT',
        `the chat template in ${origin} is not valid Jinja: ${(err as Error).message}; fix the template or remove it and pass plain text or token ids`,
        { file: origin, field: 'chat_template' },
      );
    }
  }

  /**
   * Renders `messages` with the special tokens (`bos_token`, `eos_token`, ...) and options as template
   * variables. Errors raised by the template (`raise_exception`) name the template's file.
   */
  render(messages: readonly ChatMessage[], specialTokens: Readonly<Record<string, unknown>>, options: ChatRenderOptions = {}): string {
    validateMessages(messages);
    const context: Record<string, unknown> = {
      ...specialTokens,
      ...(options.extraContext ?? {}),
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
      tools: options.tools ?? null,
      documents: options.documents ?? null,
    };
    try {
      const env = new Environment();
      for (const [key, value] of Object.entries({ ...templateGlobals(), ...context })) env.set(key, value);
      const result = new BoundedInterpreter(env).run(this.template.parsed);
      return String((result as { value?: unknown }).value ?? '');
    } catch (err) {
      if (err instanceof TemplateLimitError || err instanceof RangeError)
        throw new SafetyArithmeticError(
          'SA_BAD_CHECKPOINT',
          `the chat template from ${this.origin} was stopped: ${err instanceof RangeError ? `${err.message} (it recursed or grew without bound)` : err.message}; fix the template, or pass plain text or token ids instead of chat messages`,
          { file: this.origin, field: 'chat_template' },
        );
      throw new SafetyArithmeticError(
        'SA_INVALID_ARGUMENT',
        `rendering the chat template from ${this.origin} failed: ${(err as Error).message}; check the messages' roles and order against what the template accepts`,
        { file: this.origin, field: 'chat_template' },
      );
    }
  }
}

function validateMessages(messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages)) {
    throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', 'messages must be an array of { role, content } objects', { field: 'messages' });
  }
  messages.forEach((m, i) => {
    if (m === null || typeof m !== 'object' || typeof m.role !== 'string') {
      throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `messages[${i}] must be an object with a string role and a content`, {
        field: `messages[${i}]`,
      });
    }
  });
}

/**
 * Finds the chat template of a model folder, as transformers does: `chat_template.jinja` when present,
 * otherwise `chat_template` in tokenizer_config.json (a string, or a list of `{ name, template }`),
 * otherwise `chat_template` in chat_template.json. A `name` other than "default" selects a named
 * template: an entry of that list, or `additional_chat_templates/<name>.jinja`.
 * Returns null when the folder has no default template; throws when a named one is missing.
 */
export async function findChatTemplate(
  dir: string,
  tokenizerConfig: Readonly<Record<string, unknown>>,
  name?: string,
): Promise<ChatTemplateSource | null> {
  const wanted = name ?? 'default';
  const configFile = path.join(dir, 'tokenizer_config.json');
  if (wanted === 'default') {
    const jinjaFile = path.join(dir, 'chat_template.jinja');
    const fromFile = await readOptionalText(jinjaFile);
    if (fromFile !== null) return { source: fromFile, origin: jinjaFile };
  } else {
    const namedFile = path.join(dir, 'additional_chat_templates', `${wanted}.jinja`);
    const fromFile = await readOptionalText(namedFile);
    if (fromFile !== null) return { source: fromFile, origin: namedFile };
  }

  const fromConfig = pickTemplate(tokenizerConfig['chat_template'], configFile, wanted, name !== undefined);
  if (fromConfig !== null) return fromConfig;

  const jsonFile = path.join(dir, 'chat_template.json');
  const jsonText = await readOptionalText(jsonFile);
  if (jsonText !== null) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(jsonText);
    } catch (err) {
      throw new SafetyArithmeticError(
        'SA_BAD_CHECKPOINT',
        `${jsonFile} is not valid JSON (${(err as Error).message}); fix or delete it`,
        { file: jsonFile },
      );
    }
    if (parsed !== null && typeof parsed === 'object') {
      const fromJson = pickTemplate((parsed as Record<string, unknown>)['chat_template'], jsonFile, wanted, name !== undefined);
      if (fromJson !== null) return fromJson;
    }
  }
  if (name !== undefined) {
    throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${dir} has no chat template named "${name}"`, {
      file: configFile,
      field: 'chat_template',
    });
  }
  return null;
}

function pickTemplate(value: unknown, file: string, wanted: string, explicit: boolean): ChatTemplateSource | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return wanted === 'default' ? { source: value, origin: file } : null;
  if (Array.isArray(value)) {
    const names: string[] = [];
    for (const entry of value as unknown[]) {
      const e = entry as { name?: unknown; template?: unknown } | null;
      if (e && typeof e.name === 'string' && typeof e.template === 'string') {
        names.push(e.name);
        if (e.name === wanted) return { source: e.template, origin: `${file} (chat_template "${e.name}")` };
      }
    }
    if (!explicit && names.length > 0) {
      throw new SafetyArithmeticError(
        'SA_INVALID_ARGUMENT',
        `${file} has several chat templates (${names.join(', ')}) and none is named "default"; choose one with the templateName option`,
        { file, field: 'chat_template' },
      );
    }
    return null;
  }
  throw new SafetyArithmeticError(
    'SA_BAD_CHECKPOINT',
    `chat_template in ${file} must be a string or a list of { name, template }; fix the file or remove the field`,
    { file, field: 'chat_template' },
  );
}

/** The text of a template file, or null when there is none; a folder, FIFO or unreadable file is an SA_IO error. */
async function readOptionalText(file: string): Promise<string | null> {
  if (!exists(file)) return null;
  return readTextFile(file, path.basename(file), TEMPLATE_FILE_MAX_BYTES);
}

/** The special-token keys transformers passes to chat templates. */
export const SPECIAL_TOKEN_KEYS = [
  'bos_token',
  'eos_token',
  'unk_token',
  'sep_token',
  'pad_token',
  'cls_token',
  'mask_token',
  'additional_special_tokens',
] as const;

/**
 * The special tokens of a tokenizer config as plain strings (`{ content: "<s>" }` objects are
 * unwrapped), like transformers' `special_tokens_map`. Keys whose value is absent or null are left out.
 */
export function specialTokensMap(config: Readonly<Record<string, unknown>>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const value = config[key];
    if (key === 'additional_special_tokens') {
      if (Array.isArray(value)) {
        const list = value.map(tokenContent).filter((s): s is string => s !== null);
        if (list.length > 0) out[key] = list;
      }
      continue;
    }
    const content = tokenContent(value);
    if (content !== null) out[key] = content;
  }
  return out;
}

/** The text of a special token written as a string or as an AddedToken object; null otherwise. */
export function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}
