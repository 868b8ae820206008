/**
 * GGUF (version 3) for llama.cpp control vectors: general.architecture = "controlvector",
 * controlvector.model_hint, controlvector.layer_count, and F32 tensors direction.<k> of n_embd values,
 * which llama.cpp adds to the output of block k (k >= 1; it never steers block 0).
 */
import fs from 'node:fs';
import { SafetyArithmeticError } from './errors';
import { writeOutputFile, type FileOutputOptions } from './io/output';

const ALIGNMENT = 32;
const TYPE_UINT32 = 4;
const TYPE_STRING = 8;
const GGML_TYPE_F32 = 0;

export interface ControlVectorFile {
  modelHint: string;
  layerCount: number;
  /** block index -> direction (n_embd values) */
  directions: Map<number, Float32Array>;
  /** Extra string metadata, stored under safety_arithmetic.* keys. */
  metadata?: Record<string, string>;
}

class Writer {
  private parts: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  pad(): void {
    const n = (ALIGNMENT - (this.length % ALIGNMENT)) % ALIGNMENT;
    if (n) this.push(Buffer.alloc(n));
  }
  buffer(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** The bytes of a control-vector GGUF. */
export function renderControlVectorGguf(cv: ControlVectorFile): Buffer {
  const blocks = [...cv.directions.keys()].sort((a, b) => a - b);
  const nEmbd = blocks.length ? cv.directions.get(blocks[0]!)!.length : 0;
  for (const k of blocks) {
    if (!Number.isSafeInteger(k) || k < 1) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `control vector block ${k}: llama.cpp steers blocks 1 and up`, { field: 'directions' });
    if (cv.directions.get(k)!.length !== nEmbd) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `control vector block ${k} has ${cv.directions.get(k)!.length} values, expected ${nEmbd}`, { field: 'directions' });
  }
  const kv: [string, number, string | number][] = [
    ['general.architecture', TYPE_STRING, 'controlvector'],
    ['controlvector.model_hint', TYPE_STRING, cv.modelHint],
    ['controlvector.layer_count', TYPE_UINT32, cv.layerCount],
    ...Object.entries(cv.metadata ?? {}).map(([k, v]) => [`safety_arithmetic.${k}`, TYPE_STRING, v] as [string, number, string]),
  ];
  const w = new Writer();
  w.push(Buffer.from('GGUF', 'ascii'));
  w.u32(3);
  w.u64(blocks.length);
  w.u64(kv.length);
  for (const [key, type, value] of kv) {
    w.str(key);
    w.u32(type);
    if (type === TYPE_STRING) w.str(value as string);
    else w.u32(value as number);
  }
  let offset = 0;
  for (const k of blocks) {
    w.str(`direction.${k}`);
    w.u32(1);
    w.u64(nEmbd);
    w.u32(GGML_TYPE_F32);
    w.u64(offset);
    offset += Math.ceil((nEmbd * 4) / ALIGNMENT) * ALIGNMENT;
  }
  w.pad();
  for (const k of blocks) {
    const d = cv.directions.get(k)!;
    w.push(Buffer.from(d.buffer, d.byteOffset, d.byteLength));
    w.pad();
  }
  return w.buffer();
}

/** Writes a control-vector GGUF under the output policy (replaced only with force, never into an input). */
export function writeControlVectorGguf(file: string, cv: ControlVectorFile, options: FileOutputOptions = {}): string {
  return writeOutputFile(file, renderControlVectorGguf(cv), options);
}

/** Reads a control-vector GGUF (the subset this package writes: string and uint32 values, F32 tensors). */
export function readControlVectorGguf(file: string): ControlVectorFile & { nEmbd: number } {
  const b = fs.readFileSync(file);
  let at = 0;
  const fail = (m: string) => new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: ${m}`, { file });
  const u32 = () => { const v = b.readUInt32LE(at); at += 4; return v; };
  const u64 = () => { const v = Number(b.readBigUInt64LE(at)); at += 8; return v; };
  const str = () => { const n = u64(); const s = b.toString('utf8', at, at + n); at += n; return s; };
  if (b.toString('ascii', 0, 4) !== 'GGUF') throw fail('not a GGUF file');
  at = 4;
  if (u32() !== 3) throw fail('only GGUF version 3 is read');
  const nTensors = u64(), nKv = u64();
  const meta: Record<string, string | number> = {};
  for (let i = 0; i < nKv; i++) {
    const key = str();
    const type = u32();
    if (type === TYPE_STRING) meta[key] = str();
    else if (type === TYPE_UINT32) meta[key] = u32();
    else throw fail(`metadata ${key} has type ${type}, which this reader does not handle`);
  }
  const infos: { name: string; n: number; offset: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const dims = u32();
    let n = 1;
    for (let d = 0; d < dims; d++) n *= u64();
    if (u32() !== GGML_TYPE_F32) throw fail(`tensor ${name} is not F32`);
    infos.push({ name, n, offset: u64() });
  }
  const dataStart = Math.ceil(at / ALIGNMENT) * ALIGNMENT;
  const directions = new Map<number, Float32Array>();
  let nEmbd = 0;
  for (const t of infos) {
    const m = /^direction\.(\d+)$/.exec(t.name);
    if (!m) continue;
    const start = dataStart + t.offset;
    directions.set(Number(m[1]), new Float32Array(b.buffer.slice(b.byteOffset + start, b.byteOffset + start + t.n * 4)));
    nEmbd = t.n;
  }
  if (meta['general.architecture'] !== 'controlvector') throw fail('general.architecture is not "controlvector"');
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) if (k.startsWith('safety_arithmetic.')) metadata[k.slice('safety_arithmetic.'.length)] = String(v);
  return { modelHint: String(meta['controlvector.model_hint']), layerCount: Number(meta['controlvector.layer_count']), directions, metadata, nEmbd };
}
