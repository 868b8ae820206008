/**
 * Test-side builders of small synthetic checkpoints (single-file or sharded), raw safetensors files
 * with hand-made headers for the validation tests, and checks that nothing was left behind.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import type { HdrOptions } from '../../lib/hdr';
import { writeSafetensors } from './safetensors';

export interface TensorSpec {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Buffer;
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function f32Bytes(values: ArrayLike<number>): Buffer {
  const b = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) b.writeFloatLE(values[i]!, i * 4);
  return b;
}

/** float32 -> bfloat16 by truncation (the values are only test data). */
export function bf16Bytes(values: ArrayLike<number>): Buffer {
  const b = Buffer.alloc(values.length * 2);
  const f = Buffer.alloc(4);
  for (let i = 0; i < values.length; i++) {
    f.writeFloatLE(values[i]!, 0);
    b.writeUInt16LE(f.readUInt32LE(0) >>> 16, i * 2);
  }
  return b;
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Deterministic, finite values in about [-0.5, 0.5], different for each seed. */
export function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = 0.5 * Math.sin(seed * 7919 + i * 1.618);
  return out;
}

/** The tensors of a tiny two-layer model; `seed` changes the values, `shapes` overrides shapes or dtypes. */
export function tinyModel(seed: number, overrides: Record<string, Partial<Pick<TensorSpec, 'dtype' | 'shape'>>> = {}): TensorSpec[] {
  const layout: { name: string; dtype: string; shape: number[] }[] = [
    { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [6, 4] },
    { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'BF16', shape: [4, 4] },
    { name: 'model.layers.0.mlp.down_proj.weight', dtype: 'F32', shape: [4, 6] },
    { name: 'model.layers.1.self_attn.q_proj.weight', dtype: 'BF16', shape: [4, 4] },
    { name: 'model.layers.1.mlp.down_proj.weight', dtype: 'F32', shape: [4, 6] },
    { name: 'model.norm.weight', dtype: 'F32', shape: [4] },
  ];
  return layout.map((l, k) => {
    const o = overrides[l.name] ?? {};
    const dtype = o.dtype ?? l.dtype;
    const shape = o.shape ?? l.shape;
    const v = values(numel(shape), seed * 31 + k);
    let bytes: Buffer;
    if (dtype === 'F32') bytes = f32Bytes(v);
    else if (dtype === 'BF16') bytes = bf16Bytes(v);
    else if (dtype === 'I32') bytes = Buffer.from(Int32Array.from(v, (x) => Math.round(x * 100)).buffer);
    else throw new Error(`tinyModel: unsupported dtype ${dtype}`);
    return { name: l.name, dtype, shape, bytes };
  });
}

/**
 * Writes a checkpoint folder: model.safetensors, or `shards` files model-0000i-of-0000n.safetensors
 * with model.safetensors.index.json. Returns the shard file paths.
 */
export function writeCheckpoint(dir: string, tensors: TensorSpec[], shards = 1): string[] {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', num_hidden_layers: 2 }) + '\n');
  if (shards === 1) {
    const file = path.join(dir, 'model.safetensors');
    writeSafetensors(file, tensors, { format: 'pt' });
    return [file];
  }
  const pad = (i: number) => String(i).padStart(5, '0');
  const groups: TensorSpec[][] = Array.from({ length: shards }, () => []);
  tensors.forEach((t, i) => groups[Math.floor((i * shards) / tensors.length)]!.push(t));
  const weightMap: Record<string, string> = {};
  const files: string[] = [];
  groups.forEach((g, i) => {
    const name = `model-${pad(i + 1)}-of-${pad(shards)}.safetensors`;
    writeSafetensors(path.join(dir, name), g, { format: 'pt' });
    for (const t of g) weightMap[t.name] = name;
    files.push(path.join(dir, name));
  });
  const total = tensors.reduce((a, t) => a + t.bytes.length, 0);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  return files;
}

/**
 * Writes a safetensors file by hand: the 8-byte little-endian length (the JSON's, unless given),
 * the header text, then the data bytes.
 */
export function writeRawSafetensors(file: string, header: unknown, data: Buffer = Buffer.alloc(0), declaredLength?: bigint): void {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(declaredLength ?? BigInt(text.length));
  fs.writeFileSync(file, Buffer.concat([len, text, data]));
}

/** Entries beside `out` that look like its staging folder or file (".NAME.partial-*"). */
export function leftovers(out: string): string[] {
  const abs = path.resolve(out);
  const parent = path.dirname(abs);
  if (!fs.existsSync(parent)) return [];
  const prefix = `.${path.basename(abs)}.partial-`;
  return fs.readdirSync(parent).filter((f) => f.startsWith(prefix));
}

/** Every file under dir, by relative path, with a hash of its content: to show that inputs were not touched. */
export function snapshotTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const hash = (p: string) => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
  if (!fs.statSync(dir).isDirectory()) return { '.': hash(dir) };
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isSymbolicLink()) out[path.relative(dir, p)] = 'link:' + fs.readlinkSync(p);
      else out[path.relative(dir, p)] = hash(p);
    }
  };
  walk(dir);
  return out;
}

/**
 * Writes float32 tensors totalling about `bytes` to a single-file checkpoint, in 4 MiB writes, with
 * finite values that differ with `seed`.
 */
export function writeLargeF32Checkpoint(dir: string, bytes: number, seed: number, tensorCount = 8): string {
  fs.mkdirSync(dir, { recursive: true });
  const perTensor = Math.floor(bytes / tensorCount / 4 / 1024) * 1024;  // elements
  const rows = 1024, cols = perTensor / 1024;
  const entries: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let at = 0;
  for (let k = 0; k < tensorCount; k++) {
    entries[`model.layers.${k}.mlp.down_proj.weight`] = { dtype: 'F32', shape: [rows, cols], data_offsets: [at, at + perTensor * 4] };
    at += perTensor * 4;
  }
  const json = Buffer.from(JSON.stringify(entries), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(header, 8);
  const file = path.join(dir, 'model.safetensors');
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, header);
    const block = new Float32Array(1 << 20);
    let state = (seed * 2654435761) >>> 0;
    for (let written = 0; written < at; ) {
      const n = Math.min(block.length, (at - written) / 4);
      for (let i = 0; i < n; i++) {
        state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
        block[i] = (state / 4294967296 - 0.5) * 0.2;
      }
      fs.writeSync(fd, new Uint8Array(block.buffer, 0, n * 4));
      written += n * 4;
    }
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

export interface HdrFixture {
  root: string;
  base: string;
  harmful: string;
  target: string;
  out: string;
  /** The single file (or the shards) of each checkpoint. */
  files: { base: string[]; harmful: string[]; target: string[] };
  options: HdrOptions;
}

/** Three tiny checkpoints (base, harmful, target) in a fresh temporary folder removed after the test; out is root/out. */
export function hdrFixture(t: ExecutionContext, shards: { base?: number; harmful?: number; target?: number } = {}, models: { base?: TensorSpec[]; harmful?: TensorSpec[]; target?: TensorSpec[] } = {}): HdrFixture {
  const root = tmpDir('sa-fixture-');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const base = path.join(root, 'base'), harmful = path.join(root, 'harmful'), target = path.join(root, 'target');
  const files = {
    base: writeCheckpoint(base, models.base ?? tinyModel(1), shards.base ?? 1),
    harmful: writeCheckpoint(harmful, models.harmful ?? tinyModel(2), shards.harmful ?? 1),
    target: writeCheckpoint(target, models.target ?? tinyModel(3), shards.target ?? 1),
  };
  const out = path.join(root, 'out');
  return { root, base, harmful, target, out, files, options: { base, harmful, target, out, device: 'cpu' } };
}
