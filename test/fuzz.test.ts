/**
 * A seeded, bounded fuzz of the safetensors header parser and of the native reader behind HDR.
 * Small valid files (F32, BF16, F16 and a copied I32 tensor) are mutated in their length prefix,
 * header bytes, header JSON and size. Every mutant must be either refused with SA_BAD_CHECKPOINT
 * (SA_IO for an unreadable one) or read as a consistent header; the mutants that read are then run
 * through HDR as base, harmful and target at once (tau = 0), which must either reproduce every
 * tensor's bytes or refuse with a SafetyArithmeticError. Nothing may throw anything else or crash.
 */
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { DTYPE_BYTES, readSafetensorsHeader, renderHeader, type SafetensorsHeader } from '../lib/checkpoint/safetensors';
import { SafetyArithmeticError } from '../lib/errors';
import { removeHarmDirection } from '../lib/hdr';
import { bf16Bytes, f32Bytes, tmpDir, values } from './helpers/checkpoints';
import { loadTensors } from './helpers/safetensors';

const SEED = 0x5afe7e45;
const MUTANTS = 600;
/** At most this many parsed mutants go through HDR (each takes a few milliseconds). */
const NATIVE_RUNS = 200;

/** mulberry32: a small deterministic PRNG, so that every run sees the same mutants. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Finite half-precision values (exponent kept below the Inf/NaN code). */
function f16Bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n * 2);
  const r = prng(seed);
  for (let i = 0; i < n; i++) b.writeUInt16LE(((r() < 0.5 ? 0x8000 : 0) | (Math.floor(r() * 30) << 10) | Math.floor(r() * 1024)) >>> 0, i * 2);
  return b;
}

interface Spec { name: string; dtype: string; shape: number[]; bytes: Buffer }

function render(specs: Spec[], metadata: Record<string, string>): Buffer {
  const { header } = renderHeader(specs.map((s) => ({ name: s.name, dtype: s.dtype, shape: s.shape, nbytes: s.bytes.length })), metadata);
  return Buffer.concat([header, ...specs.map((s) => s.bytes)]);
}

/** The valid files the mutants start from. */
function seeds(): Buffer[] {
  const model: Spec[] = [
    { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [6, 4], bytes: f32Bytes(values(24, 1)) },
    { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'BF16', shape: [4, 4], bytes: bf16Bytes(values(16, 2)) },
    { name: 'model.layers.0.mlp.down_proj.weight', dtype: 'F16', shape: [4, 6], bytes: f16Bytes(24, 3) },
    { name: 'model.layers.1.mlp.down_proj.weight', dtype: 'F32', shape: [4, 6], bytes: f32Bytes(values(24, 4)) },
    { name: 'model.norm.weight', dtype: 'BF16', shape: [4], bytes: bf16Bytes(values(4, 5)) },
  ];
  const withCopied: Spec[] = [
    { name: 'model.layers.0.empty', dtype: 'F32', shape: [0, 4], bytes: Buffer.alloc(0) },
    ...model.slice(0, 3),
    { name: 'model.position_ids', dtype: 'I32', shape: [8], bytes: Buffer.from(Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7]).buffer) },
    { name: '__proto__', dtype: 'F16', shape: [2, 2], bytes: f16Bytes(4, 6) },
  ];
  // One header written by hand, compact and unpadded.
  const json = JSON.stringify({
    a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] },
    b: { dtype: 'F16', shape: [3], data_offsets: [16, 22] },
    c: { dtype: 'BF16', shape: [1, 1], data_offsets: [22, 24] },
  });
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const compact = Buffer.concat([len, Buffer.from(json), f32Bytes([0.5, -1, 2, 0.25]), f16Bytes(3, 7), bf16Bytes([3])]);
  return [render(model, { format: 'pt' }), render(withCopied, {}), compact];
}

const STRUCTURAL = Buffer.from('{}[]",:0123456789-+eE. aZ_\\');
const DTYPES = [...Object.keys(DTYPE_BYTES), 'F12', 'constructor', '', 'f32'];

function headerLength(file: Buffer): number {
  return file.length >= 8 ? Number(file.readBigUInt64LE(0)) : 0;
}

/** Replaces the header text, fixing the length prefix unless `keepLength`. */
function withHeader(file: Buffer, text: Buffer, keepLength: boolean): Buffer {
  const oldLen = Math.min(headerLength(file), file.length - 8);
  const out = Buffer.concat([file.subarray(0, 8), text, file.subarray(8 + oldLen)]);
  if (!keepLength) out.writeBigUInt64LE(BigInt(text.length), 0);
  return out;
}

type Rng = () => number;

function sizeOf(e: unknown): number {
  const offsets = (e as { data_offsets?: unknown } | null)?.data_offsets;
  return Array.isArray(offsets) ? Number(offsets[1]) - Number(offsets[0]) : NaN;
}
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const int = (r: Rng, n: number): number => Math.floor(r() * n);

/** Mutations of the JSON of a header (parsed with JSON.parse: the test's own view of it). */
function mutateJson(r: Rng, header: Record<string, Record<string, unknown>>): string | Record<string, unknown> {
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const name = names.length > 0 ? pick(r, names) : 'x';
  const e = (header[name] ?? {}) as Record<string, unknown>;
  const offsets = Array.isArray(e.data_offsets) ? [...(e.data_offsets as number[])] : [0, 0];
  const shape = Array.isArray(e.shape) ? [...(e.shape as number[])] : [];
  switch (int(r, 20)) {
    case 0: offsets[int(r, 2)]! += pick(r, [-8, -4, -2, -1, 1, 2, 4, 8]); e.data_offsets = offsets; break;
    case 1: e.data_offsets = [offsets[1], offsets[0]]; break;
    case 2: {
      const other = header[pick(r, names)] as Record<string, unknown> | undefined;
      e.data_offsets = other?.data_offsets ?? [0, 0];
      break;
    }
    case 3: if (shape.length > 0) shape[int(r, shape.length)] = pick(r, [0, 1, 2, 3, 7, -1, 1.5, 2 ** 53, 1e300]); e.shape = shape; break;
    case 4: e.shape = r() < 0.5 ? [...shape, pick(r, [1, 2])] : shape.slice(1); break;
    case 5: e.dtype = pick(r, DTYPES); break;
    case 6: delete e[pick(r, ['dtype', 'shape', 'data_offsets'])]; break;
    case 7: e[pick(r, ['dtype', 'shape', 'data_offsets'])] = pick(r, [null, 'x', 3, [], {}, [1, 2, 3], true]); break;
    case 8: {
      // A repeated key: the entry written twice (the text is built by hand; JSON.stringify cannot repeat keys).
      const text = JSON.stringify(header);
      const member = `${JSON.stringify(name)}:${JSON.stringify(e)}`;
      return text.slice(0, -1) + (text.length > 2 ? ',' : '') + member + '}';
    }
    case 9: {
      // Rename a tensor, to another existing name or a name that is an Object.prototype member.
      const to = pick(r, ['__proto__', 'constructor', 'toString', 'hasOwnProperty', '__metadata__', '', 'model.norm.weight']);
      const out: Record<string, unknown> = Object.create(null);
      for (const [k, v] of Object.entries(header)) out[k === name ? to : k] = v;
      return out;
    }
    case 10: header.__metadata__ = pick(r, [{ format: 1 }, 'pt', [], { a: 'b', c: null }, JSON.parse('{"__proto__":"x"}')]) as never; break;
    case 11: header[name] = pick(r, [null, [], 'F32', 0]) as never; break;
    case 12: {
      // An extra tensor claiming bytes somewhere.
      const begin = int(r, 64);
      header[`extra${int(r, 4)}`] = { dtype: pick(r, ['F32', 'BF16', 'U8']), shape: [int(r, 4)], data_offsets: [begin, begin + int(r, 16)] };
      break;
    }
    case 13: e.data_offsets = [pick(r, [0, 2 ** 53, -1, 1e20]), pick(r, [0, 2 ** 53 + 2, 2 ** 64, 16])]; break;
    // The rest keep the file valid, so that the native reader gets to read it.
    case 14: {
      // Two tensors of the same byte size trade their bytes.
      const same = names.filter((n) => n !== name && sizeOf(header[n]) === sizeOf(e));
      if (same.length > 0) {
        const other = header[pick(r, same)]!;
        [e.data_offsets, other.data_offsets] = [other.data_offsets, e.data_offsets];
      }
      break;
    }
    case 15: {
      // Another dtype of the same width: the bytes are read as that type.
      const width = DTYPE_BYTES[String(e.dtype)];
      e.dtype = pick(r, Object.keys(DTYPE_BYTES).filter((d) => DTYPE_BYTES[d] === width));
      break;
    }
    case 16: {
      // Another shape with as many elements.
      const numel = shape.reduce((a, b) => a * b, 1);
      e.shape = pick(r, [[numel], [1, numel], [numel, 1], numel === 0 ? [0, 0] : [numel]]);
      break;
    }
    case 17: {
      // Names that need escaping in JSON, or are long, or look like other things.
      const to = pick(r, ['a"b', 'tab\there', 'back\\slash', '\u00e9t\u00e9', '\ud83d\ude00', 'x'.repeat(300), 'model.layers.99.x', ' ', '{}', '\u0000']);
      const out: Record<string, unknown> = Object.create(null);
      for (const [k, v] of Object.entries(header)) out[k === name ? to : k] = v;
      return out;
    }
    case 18: {
      // The members in another order.
      const keys = Object.keys(header).sort(() => r() - 0.5);
      return Object.fromEntries(keys.map((k) => [k, header[k]]));
    }
    default: {
      // Whitespace inside the JSON and as padding.
      const text = JSON.stringify(header, null, pick(r, [0, 1, 2, '\t']));
      return text + ' '.repeat(int(r, 9));
    }
  }
  return header;
}

function mutate(r: Rng, input: Buffer): Buffer {
  let file: Buffer = Buffer.from(input);
  const rounds = 1 + (r() < 0.25 ? int(r, 3) : 0);
  for (let k = 0; k < rounds; k++) {
    const hlen = Math.max(0, Math.min(headerLength(file), file.length - 8));
    const at = 8 + int(r, Math.max(1, hlen));
    switch (int(r, 11)) {
      case 0: if (at < file.length) file[at]! ^= 1 << int(r, 8); break;
      case 1: if (at < file.length) file[at] = pick(r, [...STRUCTURAL]); break;
      case 2: file = Buffer.concat([file.subarray(0, at), Buffer.from([pick(r, [...STRUCTURAL])]), file.subarray(at)]); if (r() < 0.5) file.writeBigUInt64LE(BigInt(hlen + 1), 0); break;
      case 3: file = Buffer.concat([file.subarray(0, at), file.subarray(at + 1)]); if (r() < 0.5 && hlen > 0) file.writeBigUInt64LE(BigInt(hlen - 1), 0); break;
      case 4: {
        const len = pick(r, [0n, 1n, 2n, BigInt(hlen - 1), BigInt(hlen + 1), BigInt(hlen + 8), BigInt(file.length), (1n << 64n) - 1n, 1n << 40n, BigInt(int(r, 4096))]);
        if (file.length >= 8) file.writeBigUInt64LE(len < 0n ? 0n : len, 0);
        break;
      }
      case 5: file = file.subarray(0, int(r, file.length + 1)); break;
      case 6: file = Buffer.concat([file, Buffer.from(Array.from({ length: 1 + int(r, 16) }, () => int(r, 256)))]); break;
      case 7: file = file.subarray(0, Math.max(0, file.length - 1 - int(r, 8))); break;
      default: {
        let header: Record<string, Record<string, unknown>>;
        try {
          header = JSON.parse(file.subarray(8, 8 + hlen).toString('utf8'));
        } catch {
          break;
        }
        if (header === null || typeof header !== 'object' || Array.isArray(header)) break;
        const mutated = mutateJson(r, header);
        const text = Buffer.from(typeof mutated === 'string' ? mutated : JSON.stringify(mutated));
        file = withHeader(file, text, r() < 0.1);
      }
    }
  }
  return file;
}

/** The header agrees with the file: every tensor inside it, covering the data section exactly. */
function checkConsistent(h: SafetensorsHeader, fileSize: number): string | undefined {
  const dataStart = 8 + h.headerBytes;
  if (dataStart > fileSize) return 'header runs past the file';
  const names = new Set<string>();
  let at = dataStart;
  const sorted = [...h.tensors].sort((a, b) => a.offset - b.offset || a.nbytes - b.nbytes);
  for (const t of sorted) {
    if (names.has(t.name)) return `tensor ${t.name} listed twice`;
    names.add(t.name);
    const size = DTYPE_BYTES[t.dtype];
    if (size === undefined) return `unknown dtype ${t.dtype}`;
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return `bad shape ${JSON.stringify(t.shape)}`;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (t.numel !== numel || t.nbytes !== numel * size) return `${t.name}: numel/nbytes do not match dtype x shape`;
    if (t.offset !== at) return `${t.name} begins at ${t.offset}, not where the previous tensor ends (${at})`;
    at += t.nbytes;
  }
  if (at !== fileSize) return `the tensors end at ${at}, not at the end of the file (${fileSize})`;
  return undefined;
}

test('fuzzed safetensors files are either refused with SA_BAD_CHECKPOINT or read consistently, and HDR reproduces them at tau = 0', async (t) => {
  const root = tmpDir('sa-fuzz-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const r = prng(SEED);
  const starts = seeds();
  const model = path.join(root, 'model');
  fs.mkdirSync(model);
  const file = path.join(model, 'model.safetensors');
  const out = path.join(root, 'out');
  const counts = { parsed: 0, refused: 0, refusedIo: 0, hdrOk: 0, hdrRefused: 0 };
  const hdrCodes = new Map<string, number>();
  const started = Date.now();

  // The seeds themselves are valid.
  for (const s of starts) {
    fs.writeFileSync(file, s);
    t.is(checkConsistent(readSafetensorsHeader(file), s.length), undefined);
  }

  for (let i = 0; i < MUTANTS; i++) {
    const mutant = mutate(r, pick(r, starts));
    fs.writeFileSync(file, mutant);
    let header: SafetensorsHeader;
    try {
      header = readSafetensorsHeader(file);
    } catch (err) {
      if (err instanceof SafetyArithmeticError && (err.code === 'SA_BAD_CHECKPOINT' || err.code === 'SA_IO')) {
        if (err.code === 'SA_IO') counts.refusedIo++;
        else counts.refused++;
        if (!err.message.includes(file)) t.fail(`mutant ${i}: the message does not name the file: ${err.message}`);
        continue;
      }
      t.fail(`mutant ${i}: readSafetensorsHeader threw ${String(err)}\n${mutant.subarray(0, 400).toString('latin1')}`);
      continue;
    }
    counts.parsed++;
    const problem = checkConsistent(header, mutant.length);
    if (problem !== undefined) {
      t.fail(`mutant ${i} was accepted but is inconsistent: ${problem}\n${mutant.subarray(8, 8 + header.headerBytes).toString('utf8')}`);
      continue;
    }
    if (counts.hdrOk + counts.hdrRefused >= NATIVE_RUNS) continue;

    // The native reader: the mutant as base, harmful and target, so tau = 0 and the output is the input.
    fs.rmSync(out, { recursive: true, force: true });
    try {
      await removeHarmDirection({ base: model, harmful: model, target: model, out, device: 'cpu' });
    } catch (err) {
      if (err instanceof SafetyArithmeticError) {
        counts.hdrRefused++;
        hdrCodes.set(err.code, (hdrCodes.get(err.code) ?? 0) + 1);
      } else t.fail(`mutant ${i}: removeHarmDirection threw ${String(err)}`);
      continue;
    }
    counts.hdrOk++;
    const input = loadTensors(file);
    const outputs = fs.readdirSync(out).filter((f) => f.endsWith('.safetensors'));
    const written = new Map<string, Buffer>();
    for (const f of outputs) for (const [name, x] of loadTensors(path.join(out, f))) written.set(name, x.bytes);
    t.is(written.size, input.size, `mutant ${i}: every tensor is written`);
    for (const [name, x] of input) {
      const w = written.get(name);
      if (!w || !w.equals(x.bytes)) t.fail(`mutant ${i}: tensor "${name}" (${x.dtype}) is not reproduced byte for byte`);
    }
  }
  t.log(`${MUTANTS} mutants: ${counts.parsed} parsed, ${counts.refused} refused (SA_BAD_CHECKPOINT), ${counts.refusedIo} refused (SA_IO)`);
  t.log(`HDR on ${counts.hdrOk + counts.hdrRefused} parsed mutants: ${counts.hdrOk} reproduced exactly, ${counts.hdrRefused} refused ${JSON.stringify(Object.fromEntries(hdrCodes))}`);
  t.log(`${Date.now() - started} ms`);
  t.is(counts.parsed + counts.refused + counts.refusedIo, MUTANTS);
  t.true(counts.parsed > 0 && counts.refused > 0, 'the mutants exercise both outcomes');
});
