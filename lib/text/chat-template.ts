/**
 * Chat templates: the Jinja `chat_template` of a Hugging Face model folder, rendered with
 * @huggingface/jinja the way transformers' `apply_chat_template` renders it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { SafetyArithmeticError } from '../errors';

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
      return this.template.render(context);
    } catch (err) {
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

async function readOptionalText(file: string): Promise<string | null> {
  try {
    return await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new SafetyArithmeticError('SA_IO', `cannot read ${file}: ${(err as Error).message}`, { file });
  }
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
