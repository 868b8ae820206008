/** Test-side readers and writers of small safetensors files (whole files in memory). */
import fs from 'node:fs';
import { readSafetensorsHeader, renderHeader } from '../../lib/checkpoint/safetensors';

export interface LoadedTensor {
  dtype: string;
  shape: number[];
  /** The raw bytes. */
  bytes: Buffer;
}

export function loadTensors(file: string): Map<string, LoadedTensor> {
  const h = readSafetensorsHeader(file);
  const data = fs.readFileSync(file);
  const out = new Map<string, LoadedTensor>();
  for (const t of h.tensors) out.set(t.name, { dtype: t.dtype, shape: t.shape, bytes: data.subarray(t.offset, t.offset + t.nbytes) });
  return out;
}

/** Every tensor of a checkpoint folder (single file or shards). */
export function loadCheckpointTensors(dir: string): Map<string, LoadedTensor> {
  const out = new Map<string, LoadedTensor>();
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort()) {
    for (const [k, v] of loadTensors(`${dir}/${f}`)) out.set(k, v);
  }
  return out;
}

export function bf16ToF32(u: number): number {
  const b = Buffer.alloc(4);
  b.writeUInt32LE((u << 16) >>> 0);
  return b.readFloatLE(0);
}

export function toFloat32(t: LoadedTensor): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  if (t.dtype === 'F32') {
    for (let i = 0; i < n; i++) out[i] = t.bytes.readFloatLE(i * 4);
  } else if (t.dtype === 'BF16') {
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u32[i] = t.bytes.readUInt16LE(i * 2) << 16;
  } else if (t.dtype === 'F16') {
    const f16 = new Float16ArrayShim(t.bytes);
    for (let i = 0; i < n; i++) out[i] = f16.get(i);
  } else {
    throw new Error(`toFloat32: unsupported dtype ${t.dtype}`);
  }
  return out;
}

class Float16ArrayShim {
  constructor(private readonly bytes: Buffer) {}
  get(i: number): number {
    const h = this.bytes.readUInt16LE(i * 2);
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const man = h & 0x3ff;
    if (exp === 0) return sign * man * 2 ** -24;
    if (exp === 31) return man ? NaN : sign * Infinity;
    return sign * (1 + man / 1024) * 2 ** (exp - 15);
  }
}

/** Distance in units in the last place between two same-dtype raw elements (0 = identical bits). */
export function ulpDistance(dtype: string, a: Buffer, b: Buffer, i: number): number {
  if (dtype === 'F32') {
    const x = a.readInt32LE(i * 4), y = b.readInt32LE(i * 4);
    const ox = x < 0 ? 0x80000000 - x : x, oy = y < 0 ? 0x80000000 - y : y;
    return Math.abs(ox - oy);
  }
  const x = a.readUInt16LE(i * 2), y = b.readUInt16LE(i * 2);
  const ox = x & 0x8000 ? 0x8000 - (x & 0x7fff) : x, oy = y & 0x8000 ? 0x8000 - (y & 0x7fff) : y;
  return Math.abs(ox - oy);
}

export function writeSafetensors(file: string, tensors: { name: string; dtype: string; shape: number[]; bytes: Buffer }[], metadata: Record<string, string> = {}): void {
  const { header } = renderHeader(tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, nbytes: t.bytes.length })), metadata);
  fs.writeFileSync(file, Buffer.concat([header, ...tensors.map((t) => t.bytes)]));
}
