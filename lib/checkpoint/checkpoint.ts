/** A Hugging Face checkpoint folder: single-file or sharded safetensors, validated as a whole. */
import fs from 'node:fs';
import path from 'node:path';
import { SafetyArithmeticError } from '../errors';
import { io, ioError, readTextFile } from '../io/files';
import { parseStrictJsonOrThrow, readSafetensorsHeader, type SafetensorsHeader, type TensorInfo } from './safetensors';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

export interface Checkpoint {
  dir: string;
  /** The shard files in the order they were listed (one for a single-file checkpoint). */
  files: string[];
  sharded: boolean;
  /** Every tensor, in checkpoint order: by shard, then by offset. */
  tensors: TensorInfo[];
  byName: Map<string, TensorInfo>;
  /** Per file, its header's metadata. */
  metadata: Map<string, Record<string, string>>;
}

const FIX_INDEX = 're-download or re-export the checkpoint, or correct its index';

function bad(file: string, message: string, tensor?: string): SafetyArithmeticError {
  return new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: ${message}`, tensor === undefined ? { file } : { file, tensor });
}

/** Checks a shard name from an index: a plain file name that stays inside the checkpoint folder. */
function shardPath(dir: string, indexFile: string, name: unknown, tensor: string): string {
  if (typeof name !== 'string' || name.length === 0)
    throw bad(indexFile, `weight_map["${tensor}"] must be a shard file name, got ${JSON.stringify(name)}; ${FIX_INDEX}`, tensor);
  const resolved = path.resolve(dir, name);
  const inside = path.relative(dir, resolved);
  if (path.isAbsolute(name) || inside.startsWith('..') || inside.includes(path.sep) || name.includes('/') || name.includes('\\') || inside === '')
    throw bad(indexFile, `weight_map["${tensor}"] names "${name}", which is not a file inside ${dir}; shard names must be plain file names in the checkpoint folder`, tensor);
  return resolved;
}

export function openCheckpoint(dirArg: string, role = 'checkpoint'): Checkpoint {
  const dir = path.resolve(dirArg);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new SafetyArithmeticError('SA_IO', `${role} folder ${dir} does not exist; check the path`, { file: dir });
    throw ioError(err, dir, `cannot open the ${role} folder`);
  }
  if (!stat.isDirectory()) throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${role} ${dir} is not a folder: pass the checkpoint's folder`, { file: dir });
  const indexFile = path.join(dir, INDEX_FILE);
  if (present(indexFile)) return openSharded(dir, indexFile);
  const single = path.join(dir, SINGLE_FILE);
  if (present(single)) return fromHeaders(dir, [readSafetensorsHeader(single)], false);
  const candidates = io(dir, `cannot list the ${role} folder`, () => fs.readdirSync(dir)).filter((f) => f.endsWith('.safetensors'));
  if (candidates.length === 1) return fromHeaders(dir, [readSafetensorsHeader(path.join(dir, candidates[0]!))], false);
  throw new SafetyArithmeticError(
    'SA_BAD_CHECKPOINT',
    `${dir}: no ${SINGLE_FILE} and no ${INDEX_FILE}` + (candidates.length > 1 ? ` (found ${candidates.length} .safetensors files and no index to join them)` : '') +
      '; pass a Hugging Face checkpoint folder saved with safetensors',
    { file: dir },
  );
}

/** Whether a path exists at all (a dangling link counts, so that opening it reports why it fails). */
function present(file: string): boolean {
  try {
    fs.lstatSync(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw ioError(err, file, 'cannot look up');
  }
}

function openSharded(dir: string, indexFile: string): Checkpoint {
  const text = readTextFile(indexFile, 'the checkpoint index');
  const index = parseStrictJsonOrThrow(indexFile, text, 'the index', 're-download or re-export the checkpoint');
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap))
    throw bad(indexFile, `"weight_map" must be an object mapping tensor names to shard files; ${FIX_INDEX}`);
  const shardOf = new Map<string, string>();
  const files: string[] = [];
  for (const [tensor, name] of Object.entries(weightMap)) {
    const file = shardPath(dir, indexFile, name, tensor);
    shardOf.set(tensor, file);
    if (!files.includes(file)) files.push(file);
  }
  if (files.length === 0) throw bad(indexFile, `"weight_map" lists no tensors; ${FIX_INDEX}`);
  for (const f of files) {
    if (!present(f)) throw bad(indexFile, `lists shard ${path.basename(f)}, which is missing from ${dir}; ${FIX_INDEX}`);
  }
  files.sort();
  const headers = files.map((f) => readSafetensorsHeader(f));
  const ckpt = fromHeaders(dir, headers, true);
  for (const t of ckpt.tensors) {
    const listed = shardOf.get(t.name);
    if (listed === undefined) throw bad(indexFile, `tensor "${t.name}" is in ${path.basename(t.file)} but not in weight_map; ${FIX_INDEX}`, t.name);
    if (listed !== t.file)
      throw bad(indexFile, `weight_map puts "${t.name}" in ${path.basename(listed)} but it is in ${path.basename(t.file)}; ${FIX_INDEX}`, t.name);
  }
  for (const [tensor, file] of shardOf) {
    if (!ckpt.byName.has(tensor)) throw bad(indexFile, `weight_map lists "${tensor}" in ${path.basename(file)}, which does not hold it; ${FIX_INDEX}`, tensor);
  }
  return ckpt;
}

function fromHeaders(dir: string, headers: SafetensorsHeader[], sharded: boolean): Checkpoint {
  const tensors: TensorInfo[] = [];
  const byName = new Map<string, TensorInfo>();
  const metadata = new Map<string, Record<string, string>>();
  for (const h of headers) {
    metadata.set(h.file, h.metadata);
    for (const t of h.tensors) {
      const prev = byName.get(t.name);
      if (prev) throw bad(t.file, `tensor "${t.name}" is also in ${path.basename(prev.file)}; a tensor must appear once; ${FIX_INDEX}`, t.name);
      byName.set(t.name, t);
      tensors.push(t);
    }
  }
  return { dir, files: headers.map((h) => h.file), sharded, tensors, byName, metadata };
}

/** The decoder layer a tensor belongs to (`model.layers.N.`), or undefined. */
export function layerOf(name: string): number | undefined {
  const m = /(?:^|\.)layers\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Checks that the checkpoints hold the same tensors with the same shapes, naming the first differences. */
export function checkSameTensors(reference: Checkpoint, refRole: string, other: Checkpoint, otherRole: string): void {
  const missing = reference.tensors.filter((t) => !other.byName.has(t.name)).map((t) => t.name);
  const extra = other.tensors.filter((t) => !reference.byName.has(t.name)).map((t) => t.name);
  if (missing.length > 0 || extra.length > 0) {
    const parts: string[] = [];
    if (missing.length) parts.push(`${otherRole} lacks ${missing.length} tensor(s) of ${refRole}: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
    if (extra.length) parts.push(`${otherRole} has ${extra.length} tensor(s) that ${refRole} lacks: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''}`);
    throw new SafetyArithmeticError('SA_MISMATCH', `${other.dir} (${otherRole}) and ${reference.dir} (${refRole}) are not the same architecture: ${parts.join('; ')}; base, harmful and target must be checkpoints of one architecture`, {
      file: other.dir,
      tensor: missing[0] ?? extra[0]!,
    });
  }
  for (const t of reference.tensors) {
    const o = other.byName.get(t.name)!;
    if (o.shape.length !== t.shape.length || o.shape.some((d, i) => d !== t.shape[i]))
      throw new SafetyArithmeticError(
        'SA_MISMATCH',
        `tensor "${t.name}" has shape ${JSON.stringify(o.shape)} in ${otherRole} (${o.file}) but ${JSON.stringify(t.shape)} in ${refRole} (${t.file}); the checkpoints must come from the same architecture`,
        { file: o.file, tensor: t.name },
      );
  }
}
