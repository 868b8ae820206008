'use strict';
// Synthetic Llama-shaped bf16 checkpoints for the HDR benchmark, generated tensor by tensor and
// chunk by chunk (bounded memory) with a seeded PRNG, written as safetensors by hand.
//
//   base/     model.safetensors                      base ~ N(0, 0.02) (norm weights 1 + 0.05 N)
//   harmful/  model.safetensors                      base + 0.01 * Student-t(4)   (heavy tails)
//   target/   model-0000i-of-0000n.safetensors + model.safetensors.index.json
//                                                    base + 0.002 * N(0, 1)
//
// Every tensor has its own PRNG streams (seeded from the global seed and the tensor's name), so the
// content does not depend on the order of generation. Usage (standalone):
//   node bench/gen-llama.js DIR [--layers 16] [--hidden 1024] [--intermediate 2816] [--vocab 32000]

const fs = require('node:fs');
const path = require('node:path');
const { buildHeader, numel } = require('./st');

const GEN_VERSION = 1;

const DEFAULT_CONFIG = {
  hidden_size: 1024,
  intermediate_size: 2816,
  num_hidden_layers: 16,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  vocab_size: 32000,
  seed: 20240611,
  target_shards: 3,
};

// ---------------------------------------------------------------- PRNG (xoshiro128**, 32-bit)

function splitmix32(state) {
  // returns [value, nextState]
  let z = (state + 0x9e3779b9) >>> 0;
  const next = z;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return [(z ^ (z >>> 16)) >>> 0, next];
}

function hashString(s, seed) {
  // FNV-1a 32-bit, mixed with the seed
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

class Rng {
  constructor(seed) {
    let st = seed >>> 0;
    const s = new Uint32Array(4);
    for (let i = 0; i < 4; i++) {
      const [v, n] = splitmix32(st);
      s[i] = v;
      st = n;
    }
    if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1;
    this.a = s[0]; this.b = s[1]; this.c = s[2]; this.d = s[3];
    this.spare = 0;
    this.hasSpare = false;
  }

  nextU32() {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** uniform in (0, 1), never 0 or 1 */
  uniform() {
    return (this.nextU32() + 0.5) * 2.3283064365386963e-10;
  }

  /** fill out[0..n) with standard normals (Box-Muller, both outputs used) */
  fillNormal(out, n) {
    let i = 0;
    if (this.hasSpare && n > 0) { out[i++] = this.spare; this.hasSpare = false; }
    for (; i + 1 < n; i += 2) {
      const r = Math.sqrt(-2 * Math.log(this.uniform()));
      const th = 6.283185307179586 * this.uniform();
      out[i] = r * Math.cos(th);
      out[i + 1] = r * Math.sin(th);
    }
    if (i < n) {
      const r = Math.sqrt(-2 * Math.log(this.uniform()));
      const th = 6.283185307179586 * this.uniform();
      out[i] = r * Math.cos(th);
      this.spare = r * Math.sin(th);
      this.hasSpare = true;
    }
  }

  /** fill out[0..n) with Student-t draws, 4 degrees of freedom (closed-form inverse CDF) */
  fillStudentT4(out, n) {
    for (let i = 0; i < n; i++) {
      const p = this.uniform();
      const alpha = 4 * p * (1 - p);
      const sa = Math.sqrt(alpha);
      const q = Math.cos(Math.acos(sa) / 3) / sa;
      const t = 2 * Math.sqrt(Math.max(q - 1, 0));
      out[i] = p < 0.5 ? -t : t;
    }
  }
}

function rotl(x, k) {
  return (x << k) | (x >>> (32 - k));
}

// ---------------------------------------------------------------- model layout

function llamaTensors(cfg) {
  const H = cfg.hidden_size;
  const I = cfg.intermediate_size;
  const headDim = H / cfg.num_attention_heads;
  const kvDim = headDim * cfg.num_key_value_heads;
  const t = [];
  const add = (name, shape, kind) => t.push({ name, shape, kind, dtype: 'BF16' });
  add('model.embed_tokens.weight', [cfg.vocab_size, H], 'weight');
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    add(p + 'input_layernorm.weight', [H], 'norm');
    add(p + 'self_attn.q_proj.weight', [H, H], 'weight');
    add(p + 'self_attn.k_proj.weight', [kvDim, H], 'weight');
    add(p + 'self_attn.v_proj.weight', [kvDim, H], 'weight');
    add(p + 'self_attn.o_proj.weight', [H, H], 'weight');
    add(p + 'post_attention_layernorm.weight', [H], 'norm');
    add(p + 'mlp.gate_proj.weight', [I, H], 'weight');
    add(p + 'mlp.up_proj.weight', [I, H], 'weight');
    add(p + 'mlp.down_proj.weight', [H, I], 'weight');
  }
  add('model.norm.weight', [H], 'norm');
  add('lm_head.weight', [cfg.vocab_size, H], 'weight');
  return t;
}

function hfConfig(cfg) {
  return {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 1,
    eos_token_id: 2,
    head_dim: cfg.hidden_size / cfg.num_attention_heads,
    hidden_act: 'silu',
    hidden_size: cfg.hidden_size,
    initializer_range: 0.02,
    intermediate_size: cfg.intermediate_size,
    max_position_embeddings: 4096,
    mlp_bias: false,
    model_type: 'llama',
    num_attention_heads: cfg.num_attention_heads,
    num_hidden_layers: cfg.num_hidden_layers,
    num_key_value_heads: cfg.num_key_value_heads,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: null,
    rope_theta: 10000.0,
    tie_word_embeddings: false,
    torch_dtype: 'bfloat16',
    transformers_version: '4.46.0',
    use_cache: true,
    vocab_size: cfg.vocab_size,
  };
}

/** Split the tensor list into n contiguous shards of roughly equal bytes. */
function shardTensors(tensors, n) {
  const bytes = tensors.map((t) => numel(t.shape) * 2);
  const total = bytes.reduce((a, b) => a + b, 0);
  const shards = Array.from({ length: n }, () => []);
  let acc = 0;
  for (let i = 0; i < tensors.length; i++) {
    const s = Math.min(n - 1, Math.floor((acc + bytes[i] / 2) / (total / n)));
    shards[s].push(tensors[i]);
    acc += bytes[i];
  }
  return shards.filter((s) => s.length > 0);
}

/** The full plan: for each of base/harmful/target the files with their headers and expected sizes. */
function plan(dir, cfg) {
  const tensors = llamaTensors(cfg);
  const one = (sub) => {
    const h = buildHeader(tensors);
    return [{ path: path.join(dir, sub, 'model.safetensors'), tensors, ...h }];
  };
  const shards = shardTensors(tensors, cfg.target_shards);
  const target = shards.map((ts, i) => {
    const h = buildHeader(ts);
    const fname = `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    return { path: path.join(dir, 'target', fname), tensors: ts, ...h };
  });
  const params = tensors.reduce((a, t) => a + numel(t.shape), 0);
  return { tensors, params, base: one('base'), harmful: one('harmful'), target };
}

const STAMP = '.bench-gen.json';

function stampFor(cfg) {
  return JSON.stringify({ version: GEN_VERSION, ...cfg });
}

/** True when every file of the plan exists with the right size and the stamps match. */
function isComplete(dir, cfg, p = plan(dir, cfg)) {
  for (const sub of ['base', 'harmful', 'target']) {
    const stamp = path.join(dir, sub, STAMP);
    if (!fs.existsSync(stamp) || fs.readFileSync(stamp, 'utf8') !== stampFor(cfg)) return false;
    for (const f of p[sub]) {
      let st;
      try { st = fs.statSync(f.path); } catch { return false; }
      if (st.size !== f.size) return false;
    }
  }
  return true;
}

const CHUNK = 1 << 20; // elements per generation step

/**
 * Generate the three checkpoints. Returns {params, reused, seconds}.
 * onProgress(doneElements, totalElements) is called after each chunk.
 */
function generate(dir, userCfg = {}, onProgress = null) {
  const cfg = { ...DEFAULT_CONFIG, ...userCfg };
  const p = plan(dir, cfg);
  if (isComplete(dir, cfg, p)) return { params: p.params, reused: true, seconds: 0, plan: p, cfg };
  const t0 = process.hrtime.bigint();
  for (const sub of ['base', 'harmful', 'target']) {
    fs.mkdirSync(path.join(dir, sub), { recursive: true });
    fs.rmSync(path.join(dir, sub, STAMP), { force: true });
  }

  // open every output file (as .partial), write its header; remember which file each tensor goes to
  const open = (f) => {
    const tmp = f.path + '.partial';
    const fd = fs.openSync(tmp, 'w');
    fs.writeSync(fd, f.header, 0, f.header.length, 0);
    return { ...f, tmp, fd, pos: f.header.length };
  };
  const baseF = open(p.base[0]);
  const harmF = open(p.harmful[0]);
  const targetFs = p.target.map(open);
  const targetOf = new Map();
  for (const f of targetFs) for (const t of f.tensors) targetOf.set(t.name, f);

  const g = new Float32Array(CHUNK); // scratch: normals / t draws
  const v = new Float32Array(CHUNK); // value to round
  const vBits = new Uint32Array(v.buffer);
  const baseVal = new Float32Array(CHUNK); // bf16-rounded base, as float32
  const baseValBits = new Uint32Array(baseVal.buffer);
  const outB = Buffer.alloc(CHUNK * 2);
  const outH = Buffer.alloc(CHUNK * 2);
  const outT = Buffer.alloc(CHUNK * 2);
  const u16B = new Uint16Array(outB.buffer, outB.byteOffset, CHUNK);
  const u16H = new Uint16Array(outH.buffer, outH.byteOffset, CHUNK);
  const u16T = new Uint16Array(outT.buffer, outT.byteOffset, CHUNK);

  const writeAll = (f, buf, n) => {
    let off = 0;
    while (off < n) {
      const w = fs.writeSync(f.fd, buf, off, n - off, f.pos);
      off += w;
      f.pos += w;
    }
  };

  let done = 0;
  for (const t of p.tensors) {
    const n = numel(t.shape);
    const rb = new Rng(hashString(t.name + '#base', cfg.seed));
    const rh = new Rng(hashString(t.name + '#harmful', cfg.seed));
    const rt = new Rng(hashString(t.name + '#target', cfg.seed));
    const mean = t.kind === 'norm' ? 1.0 : 0.0;
    const std = t.kind === 'norm' ? 0.05 : 0.02;
    const tf = targetOf.get(t.name);
    for (let start = 0; start < n; start += CHUNK) {
      const m = Math.min(CHUNK, n - start);
      // base: round to bf16 (nearest even), keep the rounded value in float32
      rb.fillNormal(g, m);
      for (let i = 0; i < m; i++) v[i] = mean + std * g[i];
      for (let i = 0; i < m; i++) {
        const b = vBits[i];
        const r = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
        u16B[i] = r;
        baseValBits[i] = r << 16;
      }
      // harmful = base + 0.01 * t4
      rh.fillStudentT4(g, m);
      for (let i = 0; i < m; i++) v[i] = baseVal[i] + 0.01 * g[i];
      for (let i = 0; i < m; i++) {
        const b = vBits[i];
        u16H[i] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
      }
      // target = base + 0.002 * N(0,1)
      rt.fillNormal(g, m);
      for (let i = 0; i < m; i++) v[i] = baseVal[i] + 0.002 * g[i];
      for (let i = 0; i < m; i++) {
        const b = vBits[i];
        u16T[i] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
      }
      writeAll(baseF, outB, m * 2);
      writeAll(harmF, outH, m * 2);
      writeAll(tf, outT, m * 2);
      done += m;
      if (onProgress) onProgress(done, p.params);
    }
  }

  for (const f of [baseF, harmF, ...targetFs]) {
    if (f.pos !== f.size) throw new Error(`internal: ${f.path} has ${f.pos} bytes, expected ${f.size}`);
    fs.closeSync(f.fd);
    fs.renameSync(f.tmp, f.path);
  }
  const writeJson = (file, obj) => fs.writeFileSync(file, JSON.stringify(obj, null, 2) + '\n');
  for (const sub of ['base', 'harmful', 'target']) {
    writeJson(path.join(dir, sub, 'config.json'), hfConfig(cfg));
  }
  const weightMap = {};
  for (const f of targetFs) for (const t of f.tensors) weightMap[t.name] = path.basename(f.path);
  const totalSize = p.params * 2;
  writeJson(path.join(dir, 'target', 'model.safetensors.index.json'), { metadata: { total_size: totalSize }, weight_map: weightMap });
  for (const sub of ['base', 'harmful', 'target']) fs.writeFileSync(path.join(dir, sub, STAMP), stampFor(cfg));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { params: p.params, reused: false, seconds, plan: p, cfg };
}

module.exports = { DEFAULT_CONFIG, llamaTensors, plan, generate, isComplete, Rng, hashString };

if (require.main === module) {
  const args = process.argv.slice(2);
  const dir = args[0];
  if (!dir) {
    console.error('usage: node bench/gen-llama.js DIR [--layers N] [--hidden N] [--intermediate N] [--vocab N] [--heads N] [--kv-heads N]');
    process.exit(2);
  }
  const cfg = {};
  const keys = { '--layers': 'num_hidden_layers', '--hidden': 'hidden_size', '--intermediate': 'intermediate_size', '--vocab': 'vocab_size', '--heads': 'num_attention_heads', '--kv-heads': 'num_key_value_heads', '--seed': 'seed', '--shards': 'target_shards' };
  for (let i = 1; i < args.length; i += 2) {
    if (!(args[i] in keys)) { console.error(`unknown option ${args[i]}`); process.exit(2); }
    cfg[keys[args[i]]] = Number(args[i + 1]);
  }
  let last = 0;
  const r = generate(dir, cfg, (d, tot) => {
    const now = Date.now();
    if (now - last > 2000) { last = now; process.stderr.write(`generating: ${(100 * d / tot).toFixed(1)}%\n`); }
  });
  console.log(JSON.stringify({ dir, params: r.params, reused: r.reused, seconds: r.seconds }));
}
