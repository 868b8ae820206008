/** Where each output tensor goes: the target's sharding, or a new one under a shard size limit. */
import path from 'node:path';
import { SafetyArithmeticError } from '../errors';
import type { Checkpoint } from './checkpoint';
import { INDEX_FILE, SINGLE_FILE } from './checkpoint';
import { renderHeader } from './safetensors';
import type { TensorInfo } from './safetensors';

export interface OutputShard {
  /** File name inside the output folder. */
  name: string;
  header: Buffer;
  size: number;
  tensors: { tensor: TensorInfo; offset: number }[];
}

export interface OutputLayout {
  shards: OutputShard[];
  /** The index file's content, when there is more than one shard. */
  index?: { metadata: { total_size: number }; weight_map: Record<string, string> };
}

const UNITS: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 1024, MIB: 1024 ** 2, GIB: 1024 ** 3, TIB: 1024 ** 4 };

/** Parses "5GB", "500MB", "2GiB" or a number of bytes, as Hugging Face's max_shard_size does. */
export function parseSize(value: string | number, field: string): number {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value > 0) return value;
  } else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$/i.exec(value);
    if (m) {
      const bytes = Math.floor(Number(m[1]) * UNITS[(m[2] ?? 'B').toUpperCase()]!);
      if (bytes > 0) return bytes;
    }
  }
  throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${field} is ${JSON.stringify(value)}: give a size such as 5GB, 500MB, 2GiB or a number of bytes`, { field });
}

function shardFromTensors(name: string, tensors: TensorInfo[], metadata: Record<string, string>): OutputShard {
  const { header, offsets, dataBytes } = renderHeader(
    tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, nbytes: t.nbytes })),
    metadata,
  );
  return { name, header, size: header.length + dataBytes, tensors: tensors.map((t, i) => ({ tensor: t, offset: offsets[i]! })) };
}

function withIndex(shards: OutputShard[]): OutputLayout {
  if (shards.length === 1) return { shards };
  // Without a prototype, a tensor named "__proto__" is an ordinary key.
  const weight_map = Object.create(null) as Record<string, string>;
  let total = 0;
  for (const s of shards) {
    for (const { tensor } of s.tensors) {
      weight_map[tensor.name] = s.name;
      total += tensor.nbytes;
    }
  }
  return { shards, index: { metadata: { total_size: total }, weight_map } };
}

/**
 * The output tensors are the target's (same names, dtypes, shapes). Without a limit the target's
 * files are reproduced; with one, tensors are packed in order into model-0000i-of-0000n.safetensors.
 */
export function planLayout(target: Checkpoint, maxShardBytes?: number): OutputLayout {
  const metadata = target.metadata.get(target.files[0]!) ?? {};
  const keep: Record<string, string> = {};
  if (metadata.format) keep.format = metadata.format;
  if (maxShardBytes === undefined) {
    const shards = target.files.map((f) =>
      shardFromTensors(target.sharded ? path.basename(f) : SINGLE_FILE, target.tensors.filter((t) => t.file === f), keep),
    );
    return withIndex(shards);
  }
  const groups: TensorInfo[][] = [];
  let current: TensorInfo[] = [];
  let bytes = 0;
  for (const t of target.tensors) {
    if (current.length > 0 && bytes + t.nbytes > maxShardBytes) {
      groups.push(current);
      current = [];
      bytes = 0;
    }
    current.push(t);
    bytes += t.nbytes;
  }
  if (current.length > 0) groups.push(current);
  const n = groups.length;
  const pad = (i: number) => String(i).padStart(5, '0');
  const names = n === 1 ? [SINGLE_FILE] : groups.map((_, i) => `model-${pad(i + 1)}-of-${pad(n)}.safetensors`);
  return withIndex(groups.map((g, i) => shardFromTensors(names[i]!, g, keep)));
}

export { INDEX_FILE };
