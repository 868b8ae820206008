'use strict';
// Minimal safetensors helpers for the benchmark (no dependencies, streaming, files of any size).
// Format: 8-byte little-endian header length N, N bytes of JSON header (padded with spaces to a
// multiple of 8), then the tensor data; each header entry is {dtype, shape, data_offsets:[begin,end]}
// with offsets relative to the start of the data section.

const fs = require('node:fs');
const path = require('node:path');

const DTYPE_BYTES = { BF16: 2, F16: 2, F32: 4, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

function numel(shape) {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

/**
 * Build the header bytes for tensors written in the given order.
 * tensors: [{name, dtype, shape}] -> {header: Buffer (length prefix + JSON), entries: [{name, dtype, shape, begin, end}], size}
 */
function buildHeader(tensors, metadata = { format: 'pt' }) {
  const obj = {};
  if (metadata) obj.__metadata__ = metadata;
  const entries = [];
  let off = 0;
  for (const t of tensors) {
    const bytes = numel(t.shape) * DTYPE_BYTES[t.dtype];
    obj[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes] };
    entries.push({ name: t.name, dtype: t.dtype, shape: t.shape, begin: off, end: off + bytes });
    off += bytes;
  }
  let json = JSON.stringify(obj);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const jbuf = Buffer.from(json, 'utf8');
  const header = Buffer.alloc(8 + jbuf.length);
  header.writeBigUInt64LE(BigInt(jbuf.length), 0);
  jbuf.copy(header, 8);
  return { header, entries, size: header.length + off };
}

/** Read a safetensors header: {dataStart, tensors: Map(name -> {dtype, shape, begin, end}), metadata}. */
function readHeader(file) {
  const fd = fs.openSync(file, 'r');
  try {
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const n = Number(lenBuf.readBigUInt64LE(0));
    if (n > 100 * 1024 * 1024) throw new Error(`${file}: implausible header length ${n}`);
    const jbuf = Buffer.alloc(n);
    fs.readSync(fd, jbuf, 0, n, 8);
    const obj = JSON.parse(jbuf.toString('utf8'));
    const tensors = new Map();
    let metadata = null;
    for (const [k, v] of Object.entries(obj)) {
      if (k === '__metadata__') { metadata = v; continue; }
      tensors.set(k, { dtype: v.dtype, shape: v.shape, begin: v.data_offsets[0], end: v.data_offsets[1] });
    }
    return { dataStart: 8 + n, tensors, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * List every tensor of a checkpoint folder (single file or sharded with model.safetensors.index.json)
 * or of a single .safetensors file: Map(name -> {file, dtype, shape, offset (absolute), nbytes}).
 */
function listCheckpoint(p) {
  let files;
  if (fs.statSync(p).isFile()) {
    files = [p];
  } else {
    const index = path.join(p, 'model.safetensors.index.json');
    if (fs.existsSync(index)) {
      const wm = JSON.parse(fs.readFileSync(index, 'utf8')).weight_map;
      files = [...new Set(Object.values(wm))].map((f) => path.join(p, f));
    } else {
      files = fs.readdirSync(p).filter((f) => f.endsWith('.safetensors')).sort().map((f) => path.join(p, f));
    }
  }
  if (files.length === 0) throw new Error(`${p}: no .safetensors files`);
  const out = new Map();
  for (const f of files) {
    const h = readHeader(f);
    for (const [name, t] of h.tensors) {
      if (out.has(name)) throw new Error(`${name} appears twice (${out.get(name).file}, ${f})`);
      out.set(name, { file: f, dtype: t.dtype, shape: t.shape, offset: h.dataStart + t.begin, nbytes: t.end - t.begin });
    }
  }
  return out;
}

module.exports = { DTYPE_BYTES, numel, buildHeader, readHeader, listCheckpoint };
