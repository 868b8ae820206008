'use strict';
// Engine speed on the synthetic Llama-shaped bf16 model (bench/gen-llama.js's base checkpoint):
// prefill of a 128-token prompt and decode at batch 1 and 8, in tokens/s, for each CPU kernel
// variant this machine runs (or those named in SAFETY_ARITHMETIC_CPU, comma-separated). Each
// variant runs in its own child process, since the variant is chosen when the addon loads.
//   node bench/engine-speed.js            (after npm run build:ts)
//   BENCH_DIR=...  where the synthetic checkpoint is kept (default: the one bench:hdr makes)
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const ROOT = path.join(__dirname, '..');
const cacheDir = process.env.BENCH_DIR || path.join(os.tmpdir(), 'safety-arithmetic-bench-hdr');

function modelDir() {
  const { generate } = require('./gen-llama');
  generate(cacheDir);
  const dir = path.join(cacheDir, 'engine-speed-model');
  if (!fs.existsSync(path.join(dir, 'tokenizer.json'))) {
    fs.mkdirSync(dir, { recursive: true });
    const weights = path.join(cacheDir, 'base', 'model.safetensors');
    try { fs.linkSync(weights, path.join(dir, 'model.safetensors')); } catch { fs.copyFileSync(weights, path.join(dir, 'model.safetensors')); }
    const config = JSON.parse(fs.readFileSync(path.join(cacheDir, 'base', 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    const vocab = {};
    const specials = ['<pad>', '<bos>', '<eos>', '<unk>'];
    for (let i = 0; i < config.vocab_size; i++) vocab[i < 4 ? specials[i] : `w${i}`] = i;
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({
      version: '1.0', truncation: null, padding: null, normalizer: null, post_processor: null,
      added_tokens: specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
      pre_tokenizer: { type: 'WhitespaceSplit' }, decoder: { type: 'WordPiece', prefix: '##', cleanup: false },
      model: { type: 'WordPiece', unk_token: '<unk>', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
    }));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<bos>', eos_token: '<eos>', unk_token: '<unk>', pad_token: '<pad>' }));
  }
  return dir;
}

async function child(dir) {
  const { LanguageModel } = require(path.join(ROOT, 'dist', 'lib', 'model', 'model'));
  const { backends } = require(path.join(ROOT, 'dist', 'lib', 'device'));
  const cpu = backends().find((b) => b.name === 'cpu');
  const m = await LanguageModel.load(dir, { device: 'cpu' });
  let seed = 12345;
  const ids = (n) => Array.from({ length: n }, () => 4 + ((seed = (seed * 1103515245 + 12345) >>> 0) % 31000));
  const time = async (fn) => { const t0 = process.hrtime.bigint(); await fn(); return Number(process.hrtime.bigint() - t0) / 1e9; };
  const best = async (n, fn) => { let b = Infinity; for (let i = 0; i < n; i++) b = Math.min(b, await time(fn)); return b; };
  const prompt = ids(128);
  await m.forward([ids(8)]);
  const prefill = await best(3, () => m.forward([prompt]));
  const gen = (prompts, n) => m.generateBatch(prompts, { maxNewTokens: n, ignoreEos: true, greedy: true, seed: 0 });
  const decodeRate = async (batch) => {
    const prompts = Array.from({ length: batch }, () => ids(8));
    const t1 = await best(2, () => gen(prompts, 1));
    const tn = await best(2, () => gen(prompts, 17));
    return (16 * batch) / (tn - t1);
  };
  const d1 = await decodeRate(1);
  const d8 = await decodeRate(8);
  m.dispose();
  process.stdout.write(JSON.stringify({ kernel: cpu.details.kernel ?? 'n/a', threads: cpu.details.threads, prefill128: 128 / prefill, decode1: d1, decode8: d8 }) + '\n');
}

function main() {
  if (process.argv[2] === '--child') return child(process.argv[3]);
  const dir = modelDir();
  const probe = spawnSync(process.execPath, ['-e', `const {backends}=require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'device'))});const c=backends().find(b=>b.name==='cpu');console.log(JSON.stringify(c.details))`], { encoding: 'utf8' });
  const details = JSON.parse(probe.stdout || '{}');
  const asked = process.env.SAFETY_ARITHMETIC_CPU;
  const variants = asked ? asked.split(',') : details.kernels ? details.kernels.filter((k) => k.supported).map((k) => k.name) : [''];
  console.log(`engine speed, synthetic bf16 model in ${dir}, ${os.cpus().length} CPUs`);
  for (const v of variants) {
    const env = { ...process.env };
    if (v) env.SAFETY_ARITHMETIC_CPU = v; else delete env.SAFETY_ARITHMETIC_CPU;
    const r = spawnSync(process.execPath, [__filename, '--child', dir], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (r.status !== 0) { console.log(`${v || 'default'}: failed (exit ${r.status})`); continue; }
    const res = JSON.parse(r.stdout.trim().split('\n').pop());
    console.log(`${res.kernel.padEnd(9)} threads=${res.threads}  prefill 128: ${res.prefill128.toFixed(1)} tok/s  decode batch 1: ${res.decode1.toFixed(1)} tok/s  decode batch 8: ${res.decode8.toFixed(1)} tok/s`);
  }
}

main();
