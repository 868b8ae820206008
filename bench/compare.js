'use strict';
// Compare two safetensors checkpoints tensor by tensor, streaming (bounded memory).
// For BF16/F16/F32 tensors, differing elements are also measured in ulps (distance in the
// ordered bit patterns). Usage (standalone): node bench/compare.js A B

const fs = require('node:fs');
const { listCheckpoint, DTYPE_BYTES } = require('./st');

const CHUNK_BYTES = 16 << 20;

function orderedKey16(x) {
  return x & 0x8000 ? -(x & 0x7fff) : x;
}
function orderedKey32(x) {
  return x & 0x80000000 ? -(x & 0x7fffffff) : x;
}

function compareCheckpoints(a, b) {
  const ta = listCheckpoint(a);
  const tb = listCheckpoint(b);
  const r = {
    tensors: 0, elements: 0, bytes: 0, identicalTensors: 0,
    differing: 0, maxUlp: 0, worst: [], missing: [], extra: [], mismatched: [],
  };
  for (const name of tb.keys()) if (!ta.has(name)) r.extra.push(name);
  const fds = new Map();
  const fd = (f) => {
    if (!fds.has(f)) fds.set(f, fs.openSync(f, 'r'));
    return fds.get(f);
  };
  const bufA = Buffer.alloc(CHUNK_BYTES);
  const bufB = Buffer.alloc(CHUNK_BYTES);
  try {
    for (const [name, x] of ta) {
      const y = tb.get(name);
      if (!y) { r.missing.push(name); continue; }
      if (x.dtype !== y.dtype || JSON.stringify(x.shape) !== JSON.stringify(y.shape) || x.nbytes !== y.nbytes) {
        r.mismatched.push(`${name}: ${x.dtype}${JSON.stringify(x.shape)} vs ${y.dtype}${JSON.stringify(y.shape)}`);
        continue;
      }
      r.tensors++;
      const esize = DTYPE_BYTES[x.dtype] || 1;
      r.elements += x.nbytes / esize;
      r.bytes += x.nbytes;
      let diffHere = 0;
      let maxHere = 0;
      for (let off = 0; off < x.nbytes; off += CHUNK_BYTES) {
        const n = Math.min(CHUNK_BYTES, x.nbytes - off);
        readFully(fd(x.file), bufA, n, x.offset + off);
        readFully(fd(y.file), bufB, n, y.offset + off);
        if (bufA.compare(bufB, 0, n, 0, n) === 0) continue;
        if (esize === 2 && (x.dtype === 'BF16' || x.dtype === 'F16')) {
          const ua = new Uint16Array(bufA.buffer, bufA.byteOffset, n / 2);
          const ub = new Uint16Array(bufB.buffer, bufB.byteOffset, n / 2);
          for (let i = 0; i < ua.length; i++) {
            if (ua[i] !== ub[i]) {
              diffHere++;
              const d = Math.abs(orderedKey16(ua[i]) - orderedKey16(ub[i]));
              if (d > maxHere) maxHere = d;
            }
          }
        } else if (esize === 4 && x.dtype === 'F32') {
          const ua = new Uint32Array(bufA.buffer, bufA.byteOffset, n / 4);
          const ub = new Uint32Array(bufB.buffer, bufB.byteOffset, n / 4);
          for (let i = 0; i < ua.length; i++) {
            if (ua[i] !== ub[i]) {
              diffHere++;
              const d = Math.abs(orderedKey32(ua[i]) - orderedKey32(ub[i]));
              if (d > maxHere) maxHere = d;
            }
          }
        } else {
          for (let i = 0; i < n; i += esize) {
            if (bufA.compare(bufB, i, i + esize, i, i + esize) !== 0) { diffHere++; maxHere = Infinity; }
          }
        }
      }
      if (diffHere === 0) r.identicalTensors++;
      else r.worst.push({ name, differing: diffHere, maxUlp: maxHere });
      r.differing += diffHere;
      if (maxHere > r.maxUlp) r.maxUlp = maxHere;
    }
  } finally {
    for (const f of fds.values()) fs.closeSync(f);
  }
  r.worst.sort((p, q) => q.differing - p.differing);
  r.worst = r.worst.slice(0, 5);
  r.identical = r.differing === 0 && r.missing.length === 0 && r.extra.length === 0 && r.mismatched.length === 0;
  return r;
}

function readFully(fd, buf, n, pos) {
  let got = 0;
  while (got < n) {
    const k = fs.readSync(fd, buf, got, n - got, pos + got);
    if (k === 0) throw new Error(`unexpected end of file at ${pos + got}`);
    got += k;
  }
}

module.exports = { compareCheckpoints };

if (require.main === module) {
  const [a, b] = process.argv.slice(2);
  if (!a || !b) { console.error('usage: node bench/compare.js A B'); process.exit(2); }
  const r = compareCheckpoints(a, b);
  console.log(JSON.stringify(r, null, 2));
  process.exit(r.identical ? 0 : 1);
}
