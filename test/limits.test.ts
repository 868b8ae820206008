/**
 * Inputs that used to hang, exhaust memory or print raw traces: huge layer ranges, absurd config.json
 * sizes, looping chat templates, FIFOs where files belong; and small parsing gaps (--alpha -1, a BOM
 * at the start of demos.jsonl). Serial, so that the timings measure each case alone.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError, parseCommandArgs, parseInteger, parseLayers, parseNumber } from '../lib/cli/args';
import { SafetyArithmeticError } from '../lib/errors';
import { removeHarmDirection } from '../lib/hdr';
import { computeIcv, readDemos } from '../lib/icv';
import { LayerSelection, resolveLayers } from '../lib/layers';
import { LanguageModel } from '../lib/model/model';
import { ChatTemplate, TextTokenizer } from '../lib/text';

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(ROOT, 'bin', 'safety-arithmetic.js');
const G = path.join(ROOT, 'test', 'fixtures', 'llama-tiny');
const SFT_TOY = path.join(ROOT, 'demo', 'toy-demo', 'sft');
const HAS_MKFIFO = spawnSync('mkfifo', ['--version']).error === undefined;

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-limits-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

function cli(args: string[], timeoutMs = 30_000): CliRun {
  const started = Date.now();
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, SAFETY_ARITHMETIC_DEVICE: 'cpu' },
  });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', seconds: (Date.now() - started) / 1000 };
}

/** Refused quickly with exit 1 or 2, a one-line message matching `message`, and no stack trace. */
function assertRefused(t: import('ava').ExecutionContext, r: CliRun, message: RegExp): void {
  t.true(r.code === 1 || r.code === 2, `exit code ${r.code}; stderr: ${r.stderr.slice(0, 500)}`);
  t.true(r.seconds < 15, `took ${r.seconds} s`);
  t.regex(r.stderr, message);
  t.notRegex(r.stderr, /\n\s+at /, 'no stack trace');
  t.true(r.stdout.length + r.stderr.length < 10_000, `printed ${r.stdout.length + r.stderr.length} characters`);
}

/** A copy of the tiny model folder with its config.json changed (the weights are linked, not copied). */
function modelWithConfig(t: { teardown(fn: () => void): void }, change: (cfg: Record<string, unknown>) => void): string {
  const dir = tmp(t);
  const cfg = JSON.parse(fs.readFileSync(path.join(G, 'model', 'config.json'), 'utf8')) as Record<string, unknown>;
  change(cfg);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  fs.symlinkSync(path.join(G, 'model', 'model.safetensors'), path.join(dir, 'model.safetensors'));
  return dir;
}

const hdrInputs = (out: string) => ({ base: path.join(G, 'model'), harmful: path.join(G, 'harmful'), target: path.join(G, 'sft'), out });

// ---------------------------------------------------------------------------------------------
// layer selections

test.serial('layer selections parse to ranges without being expanded', (t) => {
  const s = LayerSelection.parse('8, 0-3,2-5 ,10');
  t.is(s.toString(), '0-5,8,10');
  t.is(s.size, 8);
  t.is(LayerSelection.parse('0-4294967296').size, 4294967297);
  t.deepEqual(resolveLayers('1-2,0', 4, '/m'), [0, 1, 2]);
  t.deepEqual(resolveLayers([3, 1, 1], 4, '/m'), [1, 3]);
  for (const bad of ['', ',', '1-', 'a', '3-1', '-1', '1.5', '99999999999999999999'])
    t.throws(() => LayerSelection.parse(bad), { instanceOf: SafetyArithmeticError, message: /^layers: / }, bad);
  t.throws(() => parseLayers('4-x'), { instanceOf: UsageError, message: /--layers expects .*such as 4,5,6 or 4-6/ });
  t.is(parseLayers('0-4294967296'), '0-4294967296', 'the CLI passes the text on unexpanded');
});

test.serial('hdr API: a huge layer range is refused at once against the target, as text or as a list', async (t) => {
  const out = path.join(tmp(t), 'out');
  for (const layers of ['0-4294967296', [0, 4294967296]] as const) {
    const started = Date.now();
    const e = await t.throwsAsync(removeHarmDirection({ ...hdrInputs(out), layers }), { instanceOf: SafetyArithmeticError });
    t.true(Date.now() - started < 5000);
    t.is(e!.code, 'SA_INVALID_ARGUMENT');
    t.is(e!.field, 'layers');
    t.regex(e!.message, /layer 4294967296 does not exist in .*llama-tiny\/sft \(it has layers 0-3\).*goes past its last layer 3/);
  }
  t.false(fs.existsSync(out));
});

test.serial('icv API: a huge layer range is refused against model.config.numLayers', async (t) => {
  const m = await LanguageModel.load(path.join(G, 'model'));
  t.teardown(() => m.dispose());
  const e = await t.throwsAsync(computeIcv(m, [{ unsafe: [1, 2, 3], safe: [4, 5, 6] }], { layers: '2-4294967296' }));
  t.is((e as SafetyArithmeticError).code, 'SA_INVALID_ARGUMENT');
  t.regex(e!.message, /^layers: layer 4294967296 does not exist in .*\(it has layers 0-3\)/);
  const icv = await computeIcv(m, [{ unsafe: [1, 2, 3], safe: [4, 5, 6] }], { layers: '1-2' });
  t.deepEqual(icv.layers, [1, 2]);
});

test.serial('CLI: hdr --layers=0-4294967296 exits at once with a message', (t) => {
  const out = path.join(tmp(t), 'out');
  const r = cli(['hdr', '--base', path.join(G, 'model'), '--harmful', path.join(G, 'harmful'), '--target', path.join(G, 'sft'), '--out', out, '--layers=0-4294967296']);
  assertRefused(t, r, /SA_INVALID_ARGUMENT.*layers: layer 4294967296 does not exist .*goes past its last layer 3/);
  t.false(fs.existsSync(out));
});

test.serial('CLI: --layers 0-2000000 is refused without printing millions of numbers', (t) => {
  const out = path.join(tmp(t), 'out');
  const r = cli(['hdr', '--base', path.join(G, 'model'), '--harmful', path.join(G, 'harmful'), '--target', path.join(G, 'sft'), '--out', out, '--layers', '0-2000000']);
  assertRefused(t, r, /layer 2000000 does not exist/);
  const syntax = cli(['hdr', '--base', path.join(G, 'model'), '--harmful', path.join(G, 'harmful'), '--target', path.join(G, 'sft'), '--out', out, '--layers', '3-1']);
  t.is(syntax.code, 2, 'a malformed selection is a usage error');
  t.regex(syntax.stderr, /--layers: "3-1" runs backwards/);
});

// ---------------------------------------------------------------------------------------------
// config.json

test.serial('config.json with num_hidden_layers 4294967300 is refused at once, naming the field', async (t) => {
  const dir = modelWithConfig(t, (c) => (c.num_hidden_layers = 4294967300));
  const started = Date.now();
  const e = await t.throwsAsync(LanguageModel.load(dir), { instanceOf: SafetyArithmeticError });
  t.true(Date.now() - started < 5000);
  t.is(e!.code, 'SA_BAD_CHECKPOINT');
  t.is(e!.field, 'num_hidden_layers');
  t.regex(e!.message, /config\.json: num_hidden_layers is 4294967300, over the limit of 1024/);
  const r = cli(['generate', '--model', dir, '--tokens', '1,2,3', '--max-new-tokens', '2']);
  assertRefused(t, r, /SA_BAD_CHECKPOINT.*num_hidden_layers is 4294967300/);
});

test.serial('config.json sizes must be positive integers and fit the tensors present', async (t) => {
  const refused = async (change: (c: Record<string, unknown>) => void, field: string, message: RegExp) => {
    const e = await t.throwsAsync(LanguageModel.load(modelWithConfig(t, change)), { instanceOf: SafetyArithmeticError });
    t.is(e!.code, 'SA_BAD_CHECKPOINT', e!.message);
    if (field) t.is(e!.field, field, e!.message);
    t.regex(e!.message, message);
  };
  await refused((c) => (c.num_hidden_layers = 5), 'num_hidden_layers', /num_hidden_layers is 5 but the checkpoint has decoder layers 0-3; set num_hidden_layers to 4/);
  await refused((c) => (c.hidden_size = '64'), 'hidden_size', /hidden_size must be a positive integer, got "64"/);
  await refused((c) => (c.vocab_size = 1e300), 'vocab_size', /vocab_size must be a positive integer/);
  await refused((c) => (c.intermediate_size = 2 ** 40), 'intermediate_size', /intermediate_size is 1099511627776, over the limit/);
  await refused((c) => (c.max_position_embeddings = 0), 'max_position_embeddings', /max_position_embeddings must be a positive integer/);
  await refused((c) => (c.rope_parameters = { rope_theta: 0, rope_type: 'default' }), 'rope_parameters.rope_theta', /positive number/);
  await refused((c) => (c.vocab_size = 500), '', /(embed_tokens|lm_head)\.weight" has shape \[384,64\].*vocab_size 500, hidden_size 64\) needs \[500,64\]/);
});

test.serial('a FIFO as config.json is refused without hanging', async (t) => {
  if (!HAS_MKFIFO) return t.pass('mkfifo is not available here');
  const dir = tmp(t);
  spawnSync('mkfifo', [path.join(dir, 'config.json')]);
  fs.symlinkSync(path.join(G, 'model', 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const e = await t.throwsAsync(LanguageModel.load(dir), { instanceOf: SafetyArithmeticError });
  t.is(e!.code, 'SA_IO');
  t.regex(e!.message, /config\.json: config\.json is a named pipe \(FIFO\), not a regular file/);
  const r = cli(['generate', '--model', dir, '--tokens', '1,2', '--max-new-tokens', '1'], 15_000);
  assertRefused(t, r, /SA_IO.*named pipe/);
});

// ---------------------------------------------------------------------------------------------
// chat templates

/** A tokenizer folder (the toy SFT model's files) with this chat_template.jinja. */
function folderWithTemplate(t: { teardown(fn: () => void): void }, template: string): string {
  const dir = tmp(t);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) fs.copyFileSync(path.join(SFT_TOY, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'chat_template.jinja'), template);
  return dir;
}

test.serial('a chat template that loops is stopped within seconds, naming the file and the limit', async (t) => {
  const dir = folderWithTemplate(t, '{% for i in range(10000000) %}{% endfor %}{{ messages[0].content }}');
  const tok = await TextTokenizer.fromFolder(dir);
  const started = Date.now();
  const e = t.throws(() => tok.applyChatTemplate([{ role: 'user', content: 'hi' }]), { instanceOf: SafetyArithmeticError });
  t.true(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  t.is(e!.code, 'SA_BAD_CHECKPOINT');
  t.is(e!.file, path.join(dir, 'chat_template.jinja'));
  t.regex(e!.message, /chat_template\.jinja was stopped: range\(0, 10000000, 1\) has 10000000 elements, over the limit of 1000000/);
});

test.serial('nested loops and growing strings in a chat template hit the step and length limits', (t) => {
  const started = Date.now();
  const nested = new ChatTemplate('{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}', '/m/tokenizer_config.json');
  t.throws(() => nested.render([{ role: 'user', content: 'x' }], {}), { message: /tokenizer_config\.json was stopped: it did not finish within (1000000 evaluation steps|2000 ms)/ });
  t.true(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
  const doubling = new ChatTemplate("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}", '/m/chat_template.jinja');
  t.throws(() => doubling.render([{ role: 'user', content: 'x' }], {}), { message: /chat_template\.jinja was stopped: .*(over the limit of 33554432|Invalid string length)/ });
});

test.serial('ordinary chat templates still render, range and strftime_now included', (t) => {
  const tpl = new ChatTemplate(
    "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% for i in range(1, 7, 2) %}{{ i }}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}|{{ strftime_now('%Y') }}",
    'inline',
  );
  const text = tpl.render([{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }], { bos_token: '<s>' }, { addGenerationPrompt: true });
  t.is(text, `<s>user: hi\nassistant: hello\n135assistant:|${new Date().getFullYear()}`);
  t.throws(() => new ChatTemplate("{{ raise_exception('no system role') }}", 'inline').render([], {}), { message: /no system role/ });
});

// ---------------------------------------------------------------------------------------------
// command-line parsing

test.serial('parseCommandArgs lets string options take negative numbers; other parse errors are usage errors', (t) => {
  const options = { alpha: { type: 'string' }, prompt: { type: 'string' }, json: { type: 'boolean' }, stop: { type: 'string', multiple: true } } as const;
  t.is(parseCommandArgs({ args: ['--alpha', '-1'], options }).values.alpha, '-1');
  t.is(parseCommandArgs({ args: ['--alpha', '-0.5e-3', '--json'], options }).values.alpha, '-0.5e-3');
  t.is(parseCommandArgs({ args: ['--alpha=-2'], options }).values.alpha, '-2');
  t.deepEqual(parseCommandArgs({ args: ['--stop', '-1', '--stop', 'x'], options }).values.stop, ['-1', 'x']);
  t.throws(() => parseCommandArgs({ args: ['--prompt', '--json'], options }), { instanceOf: UsageError, message: /--prompt/ });
  t.throws(() => parseCommandArgs({ args: ['--bogus'], options }), { instanceOf: UsageError, message: /--bogus/ });
  t.throws(() => parseCommandArgs({ args: ['--json', '-1'], options }), { instanceOf: UsageError });
});

test.serial('numbers on the command line are parsed strictly', (t) => {
  t.is(parseNumber('--alpha', '-1'), -1);
  t.is(parseNumber('--alpha', '.5'), 0.5);
  t.is(parseInteger('--seed', '-3'), -3);
  for (const bad of ['', ' ', '0x10', 'Infinity', '1e999', '1,5', 'NaN', '1 '])
    t.throws(() => parseNumber('--alpha', bad), { instanceOf: UsageError, message: /--alpha expects a number/ }, JSON.stringify(bad));
  for (const bad of ['', '1.5', '1e3', '9007199254740993'])
    t.throws(() => parseInteger('--seed', bad), { instanceOf: UsageError, message: /--seed expects an integer/ }, JSON.stringify(bad));
});

test.serial('CLI: generate and forward accept --alpha -1', (t) => {
  const dir = tmp(t);
  const demos = path.join(dir, 'demos.jsonl');
  fs.writeFileSync(demos, '{"unsafe": [5, 6, 7, 8], "safe": [9, 10, 11, 12]}\n{"unsafe": [13, 14, 15], "safe": [16, 17, 18]}\n');
  const icv = path.join(dir, 'icv.safetensors');
  const made = cli(['icv', '--model', path.join(G, 'model'), '--out', icv, '--demos', demos]);
  t.is(made.code, 0, made.stderr);
  const r = cli(['generate', '--model', path.join(G, 'model'), '--icv', icv, '--alpha', '-1', '--tokens', '1,2,3', '--max-new-tokens', '2', '--json']);
  t.is(r.code, 0, r.stderr);
  t.is((JSON.parse(r.stdout.trim().split('\n').pop()!) as { tokens: number[] }).tokens.length, 2);
  const f = cli(['forward', '--model', path.join(G, 'model'), '--icv', icv, '--alpha', '-1', '--tokens', '1,2,3', '--out', path.join(dir, 'f.safetensors')]);
  t.is(f.code, 0, f.stderr);
  const empty = cli(['generate', '--model', path.join(G, 'model'), '--icv', icv, '--alpha', '', '--tokens', '1,2,3']);
  t.is(empty.code, 2);
  t.regex(empty.stderr, /--alpha expects a number, got ""/);
});

// ---------------------------------------------------------------------------------------------
// demonstrations

test.serial('demos.jsonl with a UTF-8 BOM is accepted; a bad line names file:line', (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'demos.jsonl');
  fs.writeFileSync(file, '\ufeff{"unsafe": "how do i hack a bank ?", "safe": [1, 2]}\r\n\n{"unsafe": [3], "safe": "no"}\n');
  t.deepEqual(readDemos(file), [{ unsafe: 'how do i hack a bank ?', safe: [1, 2] }, { unsafe: [3], safe: 'no' }]);
  fs.writeFileSync(file, '{"unsafe": "a", "safe": "b"}\n[1, 2]\n');
  t.throws(() => readDemos(file), { message: new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: not a JSON object`) });
  fs.writeFileSync(file, '{"unsafe": "a", "safe": "b"}\n{"unsafe": "a", "safe": [1.5]}\n');
  t.throws(() => readDemos(file), { message: /demos\.jsonl:2: "unsafe" and "safe" must each be/ });
  fs.writeFileSync(file, '{"unsafe": "a", "safe": "b"}\n\n{"unsafe": "a"\n');
  t.throws(() => readDemos(file), { message: /demos\.jsonl:3: not valid JSON/ });
});

test.serial('a demos file that is a folder or a FIFO is refused without hanging', (t) => {
  const dir = tmp(t);
  const e = t.throws(() => readDemos(dir), { instanceOf: SafetyArithmeticError });
  t.is(e!.code, 'SA_IO');
  t.regex(e!.message, /the demonstrations file is a folder/);
  if (!HAS_MKFIFO) return;
  const fifo = path.join(dir, 'demos.jsonl');
  spawnSync('mkfifo', [fifo]);
  t.throws(() => readDemos(fifo), { instanceOf: SafetyArithmeticError, message: /named pipe/ });
});
