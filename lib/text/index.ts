/** Text in and out: tokenizer.json through @huggingface/tokenizers, chat templates through @huggingface/jinja. */
export { TextTokenizer } from './tokenizer';
export type { EncodeOptions, DecodeOptions, ChatTemplateOptions, FromFolderOptions, TextOrIds, TokenizerFiles } from './tokenizer';
export { ChatTemplate, findChatTemplate, specialTokensMap, tokenContent, SPECIAL_TOKEN_KEYS, CHAT_TEMPLATE_LIMITS } from './chat-template';
export type { ChatMessage, ChatRenderOptions, ChatTemplateSource } from './chat-template';
