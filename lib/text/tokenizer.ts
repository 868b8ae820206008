/**
 * Text in and out for the model engine: a Hugging Face `tokenizer.json` run through
 * @huggingface/tokenizers, with the model folder's special tokens, end-of-sequence ids and chat template.
 *
 * Both @huggingface packages ship a CommonJS build (their `exports` map has a `require` condition),
 * so plain imports compile to `require()` and load on Node 20.19+.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { SafetyArithmeticError } from '../errors';
import { exists, readTextFile } from '../io/files';
import {
  ChatTemplate,
  findChatTemplate,
  specialTokensMap,
  type ChatMessage,
  type ChatRenderOptions,
} from './chat-template';

export interface EncodeOptions {
  /** Apply the tokenizer's post-processor (for example prepend BOS). Default true, as in transformers. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens (BOS, EOS, padding, ...). Default false, as in transformers. */
  skipSpecialTokens?: boolean;
  /**
   * Remove spaces before punctuation and in contractions. Default: the tokenizer config's
   * `clean_up_tokenization_spaces`, or false when it has none (transformers' current default).
   */
  cleanUpTokenizationSpaces?: boolean;
}

export type ChatTemplateOptions = ChatRenderOptions;

export interface FromFolderOptions {
  /** Use this Jinja source instead of the folder's chat template. */
  chatTemplate?: string;
  /** Pick a named template (a `{ name, template }` entry of tokenizer_config.json's chat_template list). */
  templateName?: string;
}

/** Text, or token ids that are taken as they are. */
export type TextOrIds = string | ArrayLike<number>;

/** The parsed JSON files of a model folder that the tokenizer uses. */
export interface TokenizerFiles {
  /** tokenizer.json */
  tokenizer: Record<string, unknown>;
  /** tokenizer_config.json (special_tokens_map.json, when present, already merged in). */
  tokenizerConfig: Record<string, unknown>;
  /** config.json, if any. */
  config?: Record<string, unknown> | null;
  /** generation_config.json, if any. */
  generationConfig?: Record<string, unknown> | null;
  /** The chat template, if any. */
  chatTemplate?: { source: string; origin: string } | null;
}

export class TextTokenizer {
  /** The model folder (or a label, for tokenizers built from objects). */
  readonly dir: string;
  /** The id of the beginning-of-sequence token, or null when the model has none. */
  readonly bosTokenId: number | null;
  /** Every id that ends generation: generation_config.json, config.json and tokenizer_config.json's eos, in that order, without repeats. */
  readonly eosTokenIds: readonly number[];
  /** The id of the padding token, or null. */
  readonly padTokenId: number | null;
  /** One more than the largest token id of tokenizer.json (vocabulary plus added tokens). */
  readonly vocabSize: number;
  /** Ids of the tokens marked special in tokenizer.json's added_tokens. */
  readonly specialTokenIds: ReadonlySet<number>;
  /** bos_token, eos_token, ... as strings: what chat templates receive. */
  readonly specialTokens: Readonly<Record<string, string | string[]>>;
  /** The chat template, or null when the folder has none. */
  readonly chatTemplate: ChatTemplate | null;

  private readonly tokenizer: Tokenizer;
  private readonly tokenizerFile: string;
  private readonly cleanUpDefault: boolean;

  constructor(files: TokenizerFiles, dir = '(in memory)') {
    this.dir = dir;
    this.tokenizerFile = path.join(dir, 'tokenizer.json');
    const configFile = path.join(dir, 'tokenizer_config.json');
    const tokenizerConfig = files.tokenizerConfig;
    const clean = tokenizerConfig['clean_up_tokenization_spaces'];
    this.cleanUpDefault = typeof clean === 'boolean' ? clean : false;

    try {
      this.tokenizer = new Tokenizer(files.tokenizer, { ...tokenizerConfig, clean_up_tokenization_spaces: this.cleanUpDefault });
    } catch (err) {
      throw new SafetyArithmeticError(
        'SA_BAD_CHECKPOINT',
        `${this.tokenizerFile} could not be loaded by @huggingface/tokenizers: ${(err as Error).message}; ` +
          'check that it is a complete tokenizer.json saved by the tokenizers library (re-save it with transformers if unsure)',
        { file: this.tokenizerFile },
      );
    }

    let maxId = -1;
    for (const id of this.tokenizer.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    const special = new Set<number>();
    for (const [id, token] of this.tokenizer.get_added_tokens_decoder()) if (token.special) special.add(id);
    this.specialTokenIds = special;

    this.specialTokens = specialTokensMap(tokenizerConfig);
    const configs: Array<[Record<string, unknown> | null | undefined, string]> = [
      [files.generationConfig, path.join(dir, 'generation_config.json')],
      [files.config, path.join(dir, 'config.json')],
    ];

    // BOS: the tokenizer config's bos_token, else the id the model configs name.
    let bos = this.specialId(this.specialTokens['bos_token'], configFile, 'bos_token');
    if (bos === null) {
      for (const [cfg, file] of configs) {
        const ids = cfg ? idList(cfg, 'bos_token_id', file) : [];
        if (ids.length > 0) {
          bos = ids[0]!;
          break;
        }
      }
    }
    this.bosTokenId = bos;

    const eos: number[] = [];
    for (const [cfg, file] of configs) if (cfg) eos.push(...idList(cfg, 'eos_token_id', file));
    const eosFromTokenizer = this.specialId(this.specialTokens['eos_token'], configFile, 'eos_token');
    if (eosFromTokenizer !== null) eos.push(eosFromTokenizer);
    this.eosTokenIds = [...new Set(eos)];

    let pad = this.specialId(this.specialTokens['pad_token'], configFile, 'pad_token', false);
    if (pad === null) {
      for (const [cfg, file] of configs) {
        const ids = cfg ? idList(cfg, 'pad_token_id', file) : [];
        if (ids.length > 0) {
          pad = ids[0]!;
          break;
        }
      }
    }
    this.padTokenId = pad;

    // Chat templates need the token strings; fill bos/eos from the ids when only config.json names them.
    const map = { ...this.specialTokens };
    if (map['bos_token'] === undefined && bos !== null) {
      const t = this.idToToken(bos);
      if (t !== undefined) map['bos_token'] = t;
    }
    if (map['eos_token'] === undefined && this.eosTokenIds.length > 0) {
      const t = this.idToToken(this.eosTokenIds[0]!);
      if (t !== undefined) map['eos_token'] = t;
    }
    this.specialTokens = map;

    this.chatTemplate = files.chatTemplate ? new ChatTemplate(files.chatTemplate.source, files.chatTemplate.origin) : null;
  }

  /**
   * Loads the tokenizer of a Hugging Face model folder: tokenizer.json and tokenizer_config.json
   * (both required), special_tokens_map.json, config.json, generation_config.json (optional, for
   * BOS/EOS ids) and the chat template (chat_template.jinja or tokenizer_config.json's chat_template).
   */
  static async fromFolder(dir: string, options: FromFolderOptions = {}): Promise<TextTokenizer> {
    let stat: fs.Stats;
    try {
      stat = await fs.promises.stat(dir);
    } catch {
      throw new SafetyArithmeticError('SA_IO', `model folder ${dir} does not exist; pass the folder that holds tokenizer.json`, { file: dir });
    }
    if (!stat.isDirectory()) {
      throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${dir} is not a folder; pass the model folder that holds tokenizer.json`, { file: dir });
    }
    const tokenizerJson = await readJson(path.join(dir, 'tokenizer.json'), true,
      'the tokenizer must be saved in the fast format: in Python, AutoTokenizer.from_pretrained(...).save_pretrained(folder) writes it');
    const tokenizerConfig = await readJson(path.join(dir, 'tokenizer_config.json'), true,
      'copy tokenizer_config.json from the original model repository into the folder');
    const specialMap = await readJson(path.join(dir, 'special_tokens_map.json'), false, '');
    const config = await readJson(path.join(dir, 'config.json'), false, '');
    const generationConfig = await readJson(path.join(dir, 'generation_config.json'), false, '');

    // special_tokens_map.json overrides tokenizer_config.json, as transformers loads them.
    const merged: Record<string, unknown> = { ...tokenizerConfig! };
    if (specialMap) for (const [k, v] of Object.entries(specialMap)) if (v !== null && v !== undefined) merged[k] = v;

    let chatTemplate: { source: string; origin: string } | null;
    if (options.chatTemplate !== undefined) chatTemplate = { source: options.chatTemplate, origin: 'the chatTemplate option' };
    else chatTemplate = await findChatTemplate(dir, tokenizerConfig!, options.templateName);

    return new TextTokenizer({ tokenizer: tokenizerJson!, tokenizerConfig: merged, config, generationConfig, chatTemplate }, dir);
  }

  /** Token ids of `text`. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') {
      throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `encode expects a string, got ${typeof text}`, { field: 'text' });
    }
    return this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /** The text of token ids. Throws on an id outside the vocabulary. */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const list = this.checkIds(ids, 'ids');
    return this.tokenizer.decode(list, {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: options.cleanUpTokenizationSpaces ?? this.cleanUpDefault,
    });
  }

  /** The token strings of `text` (without special tokens unless asked). */
  tokenize(text: string, options: EncodeOptions = {}): string[] {
    return this.tokenizer.tokenize(text, { add_special_tokens: options.addSpecialTokens ?? false });
  }

  /** Text is encoded (with `options`), token ids are checked and copied: the engine accepts either. */
  toIds(input: TextOrIds, options: EncodeOptions = {}): number[] {
    if (typeof input === 'string') return this.encode(input, options);
    return this.checkIds(input, 'token ids');
  }

  /** The token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** The id of a token string (vocabulary or added token), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** Whether generating `id` ends the sequence. */
  isEos(id: number): boolean {
    return this.eosTokenIds.includes(id);
  }

  /** Renders a conversation with the model's chat template (bos_token, eos_token, ... passed as in transformers). */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (this.chatTemplate === null) {
      throw new SafetyArithmeticError(
        'SA_INVALID_ARGUMENT',
        `${this.dir} has no chat template (no chat_template.jinja and no chat_template in tokenizer_config.json); ` +
          'pass a prompt as plain text or token ids, or give one with the chatTemplate option',
        { file: path.join(this.dir, 'tokenizer_config.json'), field: 'chat_template' },
      );
    }
    return this.chatTemplate.render(messages, this.specialTokens, options);
  }

  /**
   * Renders a conversation and encodes it without adding special tokens again (templates write BOS
   * themselves), as transformers' `apply_chat_template(tokenize=True)`. Adds the generation prompt
   * unless `addGenerationPrompt` is false.
   */
  encodeChat(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    const text = this.applyChatTemplate(messages, { ...options, addGenerationPrompt: options.addGenerationPrompt ?? true });
    return this.encode(text, { addSpecialTokens: false });
  }

  private specialId(token: string | string[] | undefined, file: string, field: string, required = true): number | null {
    if (typeof token !== 'string') return null;
    const id = this.tokenToId(token);
    if (id === undefined) {
      if (!required) return null;
      throw new SafetyArithmeticError(
        'SA_BAD_CHECKPOINT',
        `${field} "${token}" in ${file} is not a token of ${this.tokenizerFile}; the two files come from different tokenizers — copy both from the same model`,
        { file, field },
      );
    }
    return id;
  }

  private checkIds(ids: ArrayLike<number>, what: string): number[] {
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') {
      throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${what} must be an array of integers`, { field: what });
    }
    const out = Array.from(ids);
    for (let i = 0; i < out.length; i++) {
      const id = out[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new SafetyArithmeticError(
          'SA_INVALID_ARGUMENT',
          `${what}[${i}] = ${String(id)} is not a token id of ${this.tokenizerFile} (integers 0 to ${this.vocabSize - 1})`,
          { field: what },
        );
      }
    }
    return out;
  }
}

/** Largest tokenizer or config JSON read (tokenizer.json of large vocabularies is tens of megabytes). */
const JSON_FILE_MAX_BYTES = 256 * 1024 * 1024;

/** Reads a JSON object; a missing optional file gives null. Errors name the file and say what to do. */
async function readJson(file: string, required: boolean, hint: string): Promise<Record<string, unknown> | null> {
  if (!exists(file)) {
    if (!required) return null;
    throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file} is missing; ${hint}`, { file });
  }
  const text = readTextFile(file, path.basename(file), JSON_FILE_MAX_BYTES);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new SafetyArithmeticError(
      'SA_BAD_CHECKPOINT',
      `${file} is not valid JSON (${(err as Error).message}); the file is damaged or truncated — download it again`,
      { file },
    );
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file} must hold a JSON object; download it again`, { file });
  }
  return parsed as Record<string, unknown>;
}

/** A token-id field that may be absent, null, one id or a list of ids (also under text_config for multimodal configs). */
function idList(cfg: Record<string, unknown>, key: string, file: string): number[] {
  let value = cfg[key];
  if (value === undefined || value === null) {
    const text = cfg['text_config'];
    if (text !== null && typeof text === 'object') value = (text as Record<string, unknown>)[key];
  }
  if (value === undefined || value === null) return [];
  const list = Array.isArray(value) ? value : [value];
  for (const v of list) {
    if (!Number.isInteger(v) || (v as number) < 0) {
      throw new SafetyArithmeticError(
        'SA_BAD_CHECKPOINT',
        `${key} in ${file} must be a token id or a list of token ids, got ${JSON.stringify(value)}; fix the file`,
        { file, field: key },
      );
    }
  }
  return list as number[];
}
