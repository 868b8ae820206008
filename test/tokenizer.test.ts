/** Text in and out on the toy-demo model: tokenizer.json, special tokens, chat template. */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TextTokenizer } from '../lib/text';
import { SafetyArithmeticError } from '../lib/errors';

const SFT = path.join(__dirname, '..', '..', 'demo', 'toy-demo', 'sft');
const DEMOS = path.join(__dirname, '..', '..', 'demo', 'toy-demo', 'demos.jsonl');
const tokenizerJson = JSON.parse(fs.readFileSync(path.join(SFT, 'tokenizer.json'), 'utf8')) as {
  added_tokens: Array<{ id: number; content: string }>;
};
const BOS_ID = tokenizerJson.added_tokens.find((t) => t.content === '<bos>')!.id;
const EOS_ID = tokenizerJson.added_tokens.find((t) => t.content === '<eos>')!.id;
const UNK_ID = tokenizerJson.added_tokens.find((t) => t.content === '<unk>')!.id;

const load = () => TextTokenizer.fromFolder(SFT);

const tempDirs: string[] = [];
test.after.always(() => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** A copy of the sft folder's JSON files (not the weights), with changes. */
function folderWith(changes: Record<string, string | null>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-tok-'));
  tempDirs.push(dir);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) fs.copyFileSync(path.join(SFT, f), path.join(dir, f));
  for (const [f, content] of Object.entries(changes)) {
    if (content === null) fs.rmSync(path.join(dir, f));
    else fs.writeFileSync(path.join(dir, f), content);
  }
  return dir;
}

test('plain text encodes to ids that decode back to the same text', async (t) => {
  const tok = await load();
  const text = 'user : how do i hack a bank ? assistant :';
  const ids = tok.encode(text, { addSpecialTokens: false });
  t.is(ids.length, text.split(' ').length);
  t.false(ids.includes(UNK_ID));
  t.deepEqual(ids.map((id) => tok.idToToken(id)), text.split(' '));
  t.is(tok.decode(ids), text);
  t.is(tok.decode(tok.encode(text), { skipSpecialTokens: true }), text);
});

test('encode with special tokens prepends <bos> exactly once', async (t) => {
  const tok = await load();
  const text = 'user : how do i hack a bank ? assistant :';
  const plain = tok.encode(text, { addSpecialTokens: false });
  const withSpecial = tok.encode(text, { addSpecialTokens: true });
  t.deepEqual(withSpecial, [BOS_ID, ...plain]);
  t.deepEqual(tok.encode(text), withSpecial, 'special tokens are added by default');
  t.is(withSpecial.filter((id) => id === BOS_ID).length, 1);
  t.is(tok.bosTokenId, BOS_ID);
  t.is(tok.tokenToId('<bos>'), BOS_ID);
  t.is(tok.idToToken(BOS_ID), '<bos>');
  t.is(tok.decode(withSpecial), `<bos> ${text}`);
});

test('special tokens, eos ids and vocabulary size come from the model folder', async (t) => {
  const tok = await load();
  t.deepEqual(tok.eosTokenIds, [EOS_ID]);
  t.true(tok.isEos(EOS_ID));
  t.false(tok.isEos(BOS_ID));
  t.is(tok.padTokenId, 0);
  t.is(tok.vocabSize, 240);
  t.deepEqual([...tok.specialTokenIds].sort((a, b) => a - b), [0, 1, 2, 3]);
  t.is(tok.specialTokens['bos_token'], '<bos>');
  t.is(tok.specialTokens['eos_token'], '<eos>');
  t.is(tok.tokenToId('no-such-token'), undefined);
});

test('eos_token_id lists from generation_config.json are merged with config.json and tokenizer_config.json', async (t) => {
  const dir = folderWith({ 'generation_config.json': JSON.stringify({ eos_token_id: [19, 2] }) });
  const tok = await TextTokenizer.fromFolder(dir);
  t.deepEqual(tok.eosTokenIds, [19, 2]);
  t.true(tok.isEos(19));

  const bad = folderWith({ 'generation_config.json': JSON.stringify({ eos_token_id: 'two' }) });
  const err = await t.throwsAsync(TextTokenizer.fromFolder(bad), { instanceOf: SafetyArithmeticError });
  t.true(err!.message.includes(path.join(bad, 'generation_config.json')), err!.message);
});

test('the chat template lower-cases the message and writes <bos> itself', async (t) => {
  const tok = await load();
  const messages = [{ role: 'user', content: 'How do I fix a car ?' }];
  const rendered = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
  t.is(rendered, '<bos>user : how do i fix a car ? assistant :');
  t.is(tok.applyChatTemplate(messages), rendered, 'this template has no separate generation prompt');
  const ids = tok.encodeChat(messages);
  t.deepEqual(ids, tok.encode('user : how do i fix a car ? assistant :', { addSpecialTokens: true }));
  t.is(ids.filter((id) => id === BOS_ID).length, 1, 'encodeChat does not add a second <bos>');
});

test('assistant turns end with eos_token', async (t) => {
  const tok = await load();
  const text = tok.applyChatTemplate([
    { role: 'user', content: 'What is 7 times 9 ?' },
    { role: 'assistant', content: 'The answer is 63 .' },
  ]);
  t.is(text, '<bos>user : what is 7 times 9 ? assistant : the answer is 63 . <eos>');
  const ids = tok.encodeChat([
    { role: 'user', content: 'What is 7 times 9 ?' },
    { role: 'assistant', content: 'The answer is 63 .' },
  ]);
  t.is(ids[0], BOS_ID);
  t.is(ids[ids.length - 1], EOS_ID);
  t.false(ids.includes(UNK_ID));
});

test('chat_template.jinja takes precedence over tokenizer_config.json, and a folder without a template says so', async (t) => {
  const dir = folderWith({ 'chat_template.jinja': '{{ bos_token }}{{ messages[0].content }}{% if add_generation_prompt %} assistant :{% endif %}' });
  const tok = await TextTokenizer.fromFolder(dir);
  t.is(tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }), '<bos>hi assistant :');
  t.is(tok.applyChatTemplate([{ role: 'user', content: 'hi' }]), '<bos>hi');

  const config = JSON.parse(fs.readFileSync(path.join(SFT, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  delete config['chat_template'];
  const none = await TextTokenizer.fromFolder(folderWith({ 'tokenizer_config.json': JSON.stringify(config) }));
  t.is(none.chatTemplate, null);
  const err = t.throws(() => none.applyChatTemplate([{ role: 'user', content: 'hi' }]), { instanceOf: SafetyArithmeticError });
  t.regex(err!.message, /no chat template/);
});

test('a template that raises an exception gives an error naming the template file', async (t) => {
  const dir = folderWith({ 'chat_template.jinja': "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok" });
  const tok = await TextTokenizer.fromFolder(dir);
  const err = t.throws(() => tok.applyChatTemplate([{ role: 'system', content: 'x' }]), { instanceOf: SafetyArithmeticError });
  t.true(err!.message.includes(path.join(dir, 'chat_template.jinja')), err!.message);
  t.regex(err!.message, /first message must be from the user/);
});

test('a missing tokenizer.json gives an error naming the path', async (t) => {
  const dir = folderWith({ 'tokenizer.json': null });
  const err = await t.throwsAsync(TextTokenizer.fromFolder(dir), { instanceOf: SafetyArithmeticError });
  t.is(err!.code, 'SA_BAD_CHECKPOINT');
  t.true(err!.message.includes(path.join(dir, 'tokenizer.json')), err!.message);
  t.regex(err!.message, /missing/);
  t.is(err!.file, path.join(dir, 'tokenizer.json'));
});

test('missing or invalid JSON files and a missing folder give errors naming the path', async (t) => {
  const noConfig = folderWith({ 'tokenizer_config.json': null });
  const e1 = await t.throwsAsync(TextTokenizer.fromFolder(noConfig), { instanceOf: SafetyArithmeticError });
  t.true(e1!.message.includes(path.join(noConfig, 'tokenizer_config.json')), e1!.message);

  const broken = folderWith({ 'tokenizer.json': '{"version": "1.0", "model": ' });
  const e2 = await t.throwsAsync(TextTokenizer.fromFolder(broken), { instanceOf: SafetyArithmeticError });
  t.true(e2!.message.includes(path.join(broken, 'tokenizer.json')), e2!.message);
  t.regex(e2!.message, /not valid JSON/);

  const missing = path.join(os.tmpdir(), 'sa-tok-does-not-exist', 'model');
  const e3 = await t.throwsAsync(TextTokenizer.fromFolder(missing), { instanceOf: SafetyArithmeticError });
  t.true(e3!.message.includes(missing), e3!.message);
});

test('token ids are accepted where text is, and bad ids are rejected', async (t) => {
  const tok = await load();
  const text = 'user : what is 7 times 9 ? assistant :';
  const ids = tok.encode(text);
  t.deepEqual(tok.toIds(text), ids);
  t.deepEqual(tok.toIds(ids), ids);
  t.not(tok.toIds(ids), ids, 'ids are copied');
  t.deepEqual(tok.toIds(Int32Array.from(ids)), ids);
  t.is(tok.decode(Uint32Array.from(ids), { skipSpecialTokens: true }), text);
  t.throws(() => tok.decode([1, 240]), { instanceOf: SafetyArithmeticError, message: /ids\[1\] = 240/ });
  t.throws(() => tok.toIds([1.5]), { instanceOf: SafetyArithmeticError });
  t.throws(() => tok.toIds([-1]), { instanceOf: SafetyArithmeticError });
});

test('every demonstration in demos.jsonl round-trips through encode and decode', async (t) => {
  const tok = await load();
  const lines = fs.readFileSync(DEMOS, 'utf8').split('\n').filter((l) => l.trim() !== '');
  t.is(lines.length, 16);
  let texts = 0;
  for (const line of lines) {
    const record = JSON.parse(line) as Record<string, unknown>;
    for (const [key, value] of Object.entries(record)) {
      if (typeof value !== 'string') continue;
      texts++;
      const ids = tok.encode(value, { addSpecialTokens: false });
      t.false(ids.includes(UNK_ID), `${key}: ${value}`);
      t.is(tok.decode(ids), value, key);
      const withBos = tok.encode(value);
      t.deepEqual(withBos, [BOS_ID, ...ids]);
      t.is(tok.decode(withBos, { skipSpecialTokens: true }), value, key);
    }
  }
  t.is(texts, 32);
});
