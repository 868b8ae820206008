'use strict';
// Hugging Face Llama folder (config.json + safetensors) -> GGUF (version 3) for llama.cpp, written from
// the GGUF format description, for the CPU benchmark (bench/cpu.js). Only what the benchmark needs:
// LlamaForCausalLM without biases, F32 / F16 / BF16 weights kept in their dtype or widened to F32, and a
// synthetic tokenizer of vocab_size entries (the benchmark feeds token ids, never text).
//
//   node bench/gguf-convert.js HF_DIR OUT.gguf [--outtype keep|f32]
//
// GGUF layout (little-endian):
//   "GGUF" u32 version=3, u64 tensor_count, u64 metadata_count,
//   metadata: key (u64 length + UTF-8), u32 value type, value (arrays: u32 element type, u64 count, elements),
//   tensor infos: name, u32 n_dims, u64 ne[n_dims] (fastest-varying dimension first, i.e. the reverse of
//     the row-major shape), u32 ggml type, u64 offset inside the data section,
//   padding to general.alignment (32), then the data section, each tensor starting at a multiple of 32.
//
// llama.cpp applies rope to adjacent pairs (x[2i], x[2i+1]) within a head, Hugging Face's Llama to halves
// (x[i], x[i + d/2]). So the rows of q_proj (per attention head) and k_proj (per KV head) are reordered:
// GGUF row 2i + p of a head is Hugging Face row p * d/2 + i of the same head (p = 0, 1; i < d/2). That
// makes llama.cpp's q and k the same vectors as ours up to a fixed permutation of each head's dimensions,
// which dot products (attention scores) do not see.

const fs = require('node:fs');
const path = require('node:path');
const { listCheckpoint, numel } = require('./st');

const GGUF_VERSION = 3;
const ALIGNMENT = 32;

const VT = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 };
const GGML = { F32: 0, F16: 1, BF16: 30 };
const GGML_BYTES = { F32: 4, F16: 2, BF16: 2 };
// general.file_type (llama_ftype): all F32, mostly F16, mostly BF16
const FILE_TYPE = { F32: 0, F16: 1, BF16: 32 };
// tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;
const TOKEN_BYTE = 6;

// ---------------------------------------------------------------- byte writer for the header

class HeaderWriter {
  constructor() {
    this.parts = [];
    this.length = 0;
  }
  bytes(b) { this.parts.push(b); this.length += b.length; }
  u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.bytes(b); }
  i32(v) { const b = Buffer.alloc(4); b.writeInt32LE(v); this.bytes(b); }
  u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.bytes(b); }
  f32(v) { const b = Buffer.alloc(4); b.writeFloatLE(v); this.bytes(b); }
  str(s) { const b = Buffer.from(s, 'utf8'); this.u64(b.length); this.bytes(b); }
  pad(alignment) { const n = (alignment - (this.length % alignment)) % alignment; if (n) this.bytes(Buffer.alloc(n)); }
  buffer() { return Buffer.concat(this.parts, this.length); }

  /** One metadata entry; value is [type, v] with v an array for ARRAY (then type is [ARRAY, elementType]). */
  kv(key, type, value) {
    this.str(key);
    if (Array.isArray(type)) {
      const [, elem] = type;
      this.u32(VT.ARRAY);
      this.u32(elem);
      this.u64(value.length);
      for (const v of value) this.scalar(elem, v);
    } else {
      this.u32(type);
      this.scalar(type, value);
    }
  }

  scalar(type, v) {
    switch (type) {
      case VT.UINT32: this.u32(v); break;
      case VT.INT32: this.i32(v); break;
      case VT.FLOAT32: this.f32(v); break;
      case VT.BOOL: this.bytes(Buffer.from([v ? 1 : 0])); break;
      case VT.STRING: this.str(v); break;
      default: throw new Error(`gguf-convert: value type ${type} not written by this converter`);
    }
  }
}

// ---------------------------------------------------------------- model description

function readConfig(dir) {
  const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const arch = (c.architectures || [])[0];
  if (arch !== 'LlamaForCausalLM') throw new Error(`${dir}/config.json: architecture ${arch}; this converter writes LlamaForCausalLM only`);
  if (c.rope_scaling) throw new Error(`${dir}/config.json: rope_scaling is set; this converter writes plain rope only`);
  const heads = c.num_attention_heads;
  return {
    hidden: c.hidden_size,
    intermediate: c.intermediate_size,
    layers: c.num_hidden_layers,
    heads,
    kvHeads: c.num_key_value_heads ?? heads,
    headDim: c.head_dim ?? c.hidden_size / heads,
    vocab: c.vocab_size,
    context: c.max_position_embeddings ?? 4096,
    rmsEps: c.rms_norm_eps ?? 1e-5,
    ropeTheta: c.rope_theta ?? 10000,
    tied: c.tie_word_embeddings === true,
    bos: c.bos_token_id ?? 1,
    eos: Array.isArray(c.eos_token_id) ? c.eos_token_id[0] : (c.eos_token_id ?? 2),
  };
}

/** [GGUF name, Hugging Face name, heads to permute for rope or 0] for every tensor, in file order. */
function tensorMap(cfg, hfNames) {
  const m = [['token_embd.weight', 'model.embed_tokens.weight', 0]];
  for (let l = 0; l < cfg.layers; l++) {
    const hf = `model.layers.${l}.`;
    const gg = `blk.${l}.`;
    m.push(
      [gg + 'attn_norm.weight', hf + 'input_layernorm.weight', 0],
      [gg + 'attn_q.weight', hf + 'self_attn.q_proj.weight', cfg.heads],
      [gg + 'attn_k.weight', hf + 'self_attn.k_proj.weight', cfg.kvHeads],
      [gg + 'attn_v.weight', hf + 'self_attn.v_proj.weight', 0],
      [gg + 'attn_output.weight', hf + 'self_attn.o_proj.weight', 0],
      [gg + 'ffn_norm.weight', hf + 'post_attention_layernorm.weight', 0],
      [gg + 'ffn_gate.weight', hf + 'mlp.gate_proj.weight', 0],
      [gg + 'ffn_up.weight', hf + 'mlp.up_proj.weight', 0],
      [gg + 'ffn_down.weight', hf + 'mlp.down_proj.weight', 0],
    );
  }
  m.push(['output_norm.weight', 'model.norm.weight', 0]);
  if (!cfg.tied && hfNames.has('lm_head.weight')) m.push(['output.weight', 'lm_head.weight', 0]);
  const mapped = new Set(m.map((e) => e[1]));
  for (const n of hfNames) {
    if (!mapped.has(n) && !n.endsWith('.rotary_emb.inv_freq')) throw new Error(`gguf-convert: tensor ${n} has no place in the GGUF Llama layout`);
  }
  for (const [, hf] of m) if (!hfNames.has(hf)) throw new Error(`gguf-convert: the checkpoint has no ${hf}`);
  return m;
}

/** Token list for a tokenizer-free benchmark: <unk> <s> </s>, the 256 byte tokens, then filler tokens. */
function syntheticVocab(cfg) {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
  for (let b = 0; b < 256 && tokens.length < cfg.vocab; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_BYTE);
  }
  while (tokens.length < cfg.vocab) {
    tokens.push(`\u2581t${tokens.length}`);
    types.push(TOKEN_NORMAL);
  }
  const scores = tokens.map((_, i) => (types[i] === TOKEN_NORMAL ? -i : 0));
  return { tokens, types, scores };
}

// ---------------------------------------------------------------- tensor data

/** Reorder the rows of a [heads * d, cols] matrix from half rotation to interleaved pairs (see the top). */
function permuteForRope(buf, rows, cols, heads, elemBytes) {
  const d = rows / heads;
  if (!Number.isInteger(d) || d % 2 !== 0) throw new Error(`gguf-convert: ${rows} rows do not split into ${heads} heads of even size`);
  const rowBytes = cols * elemBytes;
  const out = Buffer.allocUnsafe(buf.length);
  const half = d / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let p = 0; p < 2; p++) {
        const src = h * d + p * half + i;
        const dst = h * d + 2 * i + p;
        buf.copy(out, dst * rowBytes, src * rowBytes, (src + 1) * rowBytes);
      }
    }
  }
  return out;
}

function f16ToF32(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Convert raw little-endian data between F32 / F16 / BF16 (widening is exact; F32 -> BF16 rounds to nearest even). */
function convertData(buf, from, to) {
  if (from === to) return buf;
  const n = buf.length / GGML_BYTES[from];
  const out = Buffer.from(new ArrayBuffer(n * GGML_BYTES[to]));
  if (to === 'F32' && from === 'BF16') {
    const src = new Uint16Array(n);
    Buffer.from(src.buffer).set(buf);
    const dst = new Uint32Array(out.buffer, out.byteOffset, n); // large buffers are never pooled, so aligned
    for (let i = 0; i < n; i++) dst[i] = src[i] << 16 >>> 0;
  } else if (to === 'F32' && from === 'F16') {
    for (let i = 0; i < n; i++) out.writeFloatLE(f16ToF32(buf.readUInt16LE(2 * i)), 4 * i);
  } else if (to === 'BF16' && from === 'F32') {
    for (let i = 0; i < n; i++) {
      const b = buf.readUInt32LE(4 * i);
      out.writeUInt16LE(((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff, 2 * i);
    }
  } else {
    throw new Error(`gguf-convert: no conversion from ${from} to ${to}`);
  }
  return out;
}

function readTensor(t) {
  const buf = Buffer.allocUnsafe(t.nbytes);
  const fd = fs.openSync(t.file, 'r');
  try {
    let off = 0;
    while (off < t.nbytes) {
      const r = fs.readSync(fd, buf, off, t.nbytes - off, t.offset + off);
      if (r === 0) throw new Error(`${t.file}: ends inside a tensor`);
      off += r;
    }
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

// ---------------------------------------------------------------- conversion

/**
 * Convert HF_DIR to a GGUF file. outtype 'keep' writes every tensor in its stored dtype (the 1-D norm
 * weights always as F32, as llama.cpp's own converter does); 'f32' widens everything to F32.
 * Returns {file, bytes, weightType, tensors}.
 */
function convert(hfDir, outFile, { outtype = 'keep' } = {}) {
  const cfg = readConfig(hfDir);
  const hf = listCheckpoint(hfDir);
  const map = tensorMap(cfg, new Set(hf.keys()));
  const plan = [];
  let dataOffset = 0;
  const weightTypes = new Set();
  for (const [ggName, hfName, permuteHeads] of map) {
    const t = hf.get(hfName);
    if (!(t.dtype in GGML)) throw new Error(`${t.file}: ${hfName} is ${t.dtype}; the converter reads F32, F16 and BF16`);
    const type = outtype === 'f32' || t.shape.length === 1 ? 'F32' : t.dtype;
    if (t.shape.length === 2) weightTypes.add(type);
    const nbytes = numel(t.shape) * GGML_BYTES[type];
    dataOffset += (ALIGNMENT - (dataOffset % ALIGNMENT)) % ALIGNMENT;
    plan.push({ ggName, hfName, permuteHeads, src: t, type, offset: dataOffset, nbytes });
    dataOffset += nbytes;
  }
  if (weightTypes.size !== 1) throw new Error(`gguf-convert: matrices of mixed dtypes (${[...weightTypes].join(', ')})`);
  const weightType = [...weightTypes][0];

  const vocab = syntheticVocab(cfg);
  const meta = [
    ['general.architecture', VT.STRING, 'llama'],
    ['general.name', VT.STRING, path.basename(path.resolve(hfDir))],
    ['general.alignment', VT.UINT32, ALIGNMENT],
    ['general.file_type', VT.UINT32, FILE_TYPE[weightType]],
    ['llama.context_length', VT.UINT32, cfg.context],
    ['llama.embedding_length', VT.UINT32, cfg.hidden],
    ['llama.block_count', VT.UINT32, cfg.layers],
    ['llama.feed_forward_length', VT.UINT32, cfg.intermediate],
    ['llama.attention.head_count', VT.UINT32, cfg.heads],
    ['llama.attention.head_count_kv', VT.UINT32, cfg.kvHeads],
    ['llama.attention.layer_norm_rms_epsilon', VT.FLOAT32, cfg.rmsEps],
    ['llama.rope.freq_base', VT.FLOAT32, cfg.ropeTheta],
    ['llama.rope.dimension_count', VT.UINT32, cfg.headDim],
    ['llama.vocab_size', VT.UINT32, cfg.vocab],
    ['tokenizer.ggml.model', VT.STRING, 'llama'],
    ['tokenizer.ggml.tokens', [VT.ARRAY, VT.STRING], vocab.tokens],
    ['tokenizer.ggml.scores', [VT.ARRAY, VT.FLOAT32], vocab.scores],
    ['tokenizer.ggml.token_type', [VT.ARRAY, VT.INT32], vocab.types],
    ['tokenizer.ggml.unknown_token_id', VT.UINT32, 0],
    ['tokenizer.ggml.bos_token_id', VT.UINT32, cfg.bos],
    ['tokenizer.ggml.eos_token_id', VT.UINT32, cfg.eos],
    ['tokenizer.ggml.add_bos_token', VT.BOOL, false],
    ['tokenizer.ggml.add_eos_token', VT.BOOL, false],
  ];
  if (cfg.headDim * cfg.heads !== cfg.hidden) meta.push(['llama.attention.key_length', VT.UINT32, cfg.headDim], ['llama.attention.value_length', VT.UINT32, cfg.headDim]);

  const w = new HeaderWriter();
  w.bytes(Buffer.from('GGUF', 'latin1'));
  w.u32(GGUF_VERSION);
  w.u64(plan.length);
  w.u64(meta.length);
  for (const [k, type, v] of meta) w.kv(k, type, v);
  for (const p of plan) {
    w.str(p.ggName);
    const ne = [...p.src.shape].reverse();
    w.u32(ne.length);
    for (const d of ne) w.u64(d);
    w.u32(GGML[p.type]);
    w.u64(p.offset);
  }
  w.pad(ALIGNMENT);
  const header = w.buffer();

  fs.mkdirSync(path.dirname(path.resolve(outFile)), { recursive: true });
  const tmp = `${outFile}.partial`;
  const fd = fs.openSync(tmp, 'w');
  try {
    let pos = 0;
    const write = (b) => {
      let off = 0;
      while (off < b.length) off += fs.writeSync(fd, b, off, b.length - off, pos + off);
      pos += b.length;
    };
    write(header);
    for (const p of plan) {
      const at = header.length + p.offset;
      if (at > pos) write(Buffer.alloc(at - pos));
      let data = convertData(readTensor(p.src), p.src.dtype, p.type);
      if (p.permuteHeads) data = permuteForRope(data, p.src.shape[0], p.src.shape[1], p.permuteHeads, GGML_BYTES[p.type]);
      if (data.length !== p.nbytes) throw new Error(`internal: ${p.hfName} has ${data.length} bytes, expected ${p.nbytes}`);
      write(data);
    }
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, outFile);
  return { file: outFile, bytes: fs.statSync(outFile).size, weightType, tensors: plan.length };
}

module.exports = { convert, permuteForRope, readConfig };

if (require.main === module) {
  const [hfDir, out, ...rest] = process.argv.slice(2);
  let outtype = 'keep';
  for (let i = 0; i < rest.length; i += 2) {
    if (rest[i] === '--outtype' && (rest[i + 1] === 'keep' || rest[i + 1] === 'f32')) outtype = rest[i + 1];
    else { console.error(`unknown option ${rest[i]} ${rest[i + 1] ?? ''}`); process.exit(2); }
  }
  if (!hfDir || !out) {
    console.error('usage: node bench/gguf-convert.js HF_DIR OUT.gguf [--outtype keep|f32]');
    process.exit(2);
  }
  console.log(JSON.stringify(convert(hfDir, out, { outtype })));
}
