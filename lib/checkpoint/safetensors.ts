/**
 * safetensors headers: read and validated in full before any tensor byte is touched. Only the header
 * is read here (Node cannot hold files over 2 GiB in one Buffer); tensor data moves natively.
 */
import fs from 'node:fs';
import { SafetyArithmeticError } from '../errors';
import { io, openRegularFile } from '../io/files';
import { decodeUtf8Strict, parseStrictJson, StrictJsonError } from './strict-json';

export const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

/** dtypes that Harm Direction Removal computes in; every other dtype is copied through. */
export const COMPUTE_DTYPES = new Set(['F32', 'F16', 'BF16']);

/** The largest header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  numel: number;
  nbytes: number;
  /** Absolute byte offset of the data in the file. */
  offset: number;
  file: string;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  headerBytes: number;
  metadata: Record<string, string>;
  /** In the order of their data in the file. */
  tensors: TensorInfo[];
}

function bad(file: string, message: string, tensor?: string): SafetyArithmeticError {
  const details = tensor === undefined ? { file } : { file, tensor };
  return new SafetyArithmeticError('SA_BAD_CHECKPOINT', `${file}: ${message}`, details);
}

const REPLACE = 'the file is damaged or not a safetensors file; re-download or re-export it';

function readExactly(fd: number, length: number, position: number, file: string): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = io(file, 'cannot read the safetensors file', () => fs.readSync(fd, buf, done, length - done, position + done));
    if (n === 0) throw bad(file, `unexpected end of file while reading the header; ${REPLACE}`);
    done += n;
  }
  return buf;
}

/** Parses header or index text with the strict parser, naming a duplicate key or the syntax error. */
export function parseStrictJsonOrThrow(file: string, text: string, what: string, advice: string): unknown {
  try {
    return parseStrictJson(text);
  } catch (err) {
    if (!(err instanceof StrictJsonError)) throw err;
    if (err.duplicateKey !== undefined) {
      const where = err.path.length > 0 ? ` (inside ${err.path.map((k) => JSON.stringify(k)).join(' > ')})` : '';
      // A duplicate at the top of a header, or in a weight_map, is a tensor name.
      const tensor = err.path.length === 0 || (err.path.length === 1 && err.path[0] === 'weight_map') ? err.duplicateKey : err.path[0];
      throw bad(file, `duplicate key ${JSON.stringify(err.duplicateKey)} in ${what}${where}: a key must appear once; ${advice}`, tensor === '__metadata__' ? undefined : tensor);
    }
    throw bad(file, `${what} is not valid JSON (${err.message}); ${advice}`);
  }
}

export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openRegularFile(file, 'the safetensors file');
  try {
    const fileSize = io(file, 'cannot read the safetensors file', () => fs.fstatSync(fd).size);
    if (fileSize < 8) throw bad(file, `the file has ${fileSize} bytes, fewer than the 8-byte header length; ${REPLACE}`);
    const lenBig = readExactly(fd, 8, 0, file).readBigUInt64LE(0);
    if (lenBig < 2n) throw bad(file, `header length is ${lenBig} bytes, too small for a JSON object; ${REPLACE}`);
    if (lenBig > BigInt(MAX_HEADER_BYTES))
      throw bad(file, `header length is ${lenBig} bytes, over the ${MAX_HEADER_BYTES}-byte limit; ${REPLACE}`);
    const headerBytes = Number(lenBig);
    if (8 + headerBytes > fileSize)
      throw bad(file, `header length ${headerBytes} runs past the end of the file (${fileSize} bytes); the file is truncated: re-download or re-export it`);
    let text: string;
    try {
      text = decodeUtf8Strict(readExactly(fd, headerBytes, 8, file));
    } catch (err) {
      if (err instanceof SafetyArithmeticError) throw err;
      throw bad(file, `the header is not valid UTF-8 text; ${REPLACE}`);
    }
    const json = parseStrictJsonOrThrow(file, text, 'the header', REPLACE);
    return parseHeader(file, fileSize, headerBytes, json);
  } finally {
    fs.closeSync(fd);
  }
}

function isNonNegativeInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export function parseHeader(file: string, fileSize: number, headerBytes: number, json: unknown): SafetensorsHeader {
  if (json === null || typeof json !== 'object' || Array.isArray(json))
    throw bad(file, `the header must be a JSON object of tensors; ${REPLACE}`);
  const dataStart = 8 + headerBytes;
  const dataBytes = fileSize - dataStart;
  const metadata = Object.create(null) as Record<string, string>;
  const tensors: TensorInfo[] = [];
  const ranges: { begin: number; end: number; name: string }[] = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (value === null || typeof value !== 'object' || Array.isArray(value))
        throw bad(file, `"__metadata__" must be an object of strings; ${REPLACE}`);
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') throw bad(file, `"__metadata__.${k}" must be a string; ${REPLACE}`);
        metadata[k] = v;
      }
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw bad(file, `tensor "${name}": the entry must be an object with dtype, shape and data_offsets; ${REPLACE}`, name);
    const entry = value as Record<string, unknown>;
    const dtype = entry.dtype;
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype))
      throw bad(file, `tensor "${name}": unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')}); ${REPLACE}`, name);
    const shape = entry.shape;
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger))
      throw bad(file, `tensor "${name}": shape must be a list of non-negative integers, got ${JSON.stringify(shape)}; ${REPLACE}`, name);
    const offsets = entry.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger) || offsets[0] > offsets[1])
      throw bad(file, `tensor "${name}": data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offsets)}; ${REPLACE}`, name);
    const [begin, end] = offsets as [number, number];
    let numel = 1;
    for (const d of shape as number[]) numel *= d;
    if (!Number.isSafeInteger(numel)) throw bad(file, `tensor "${name}": shape ${JSON.stringify(shape)} has too many elements; ${REPLACE}`, name);
    const nbytes = numel * DTYPE_BYTES[dtype]!;
    if (end - begin !== nbytes)
      throw bad(file, `tensor "${name}": ${dtype} x ${JSON.stringify(shape)} needs ${nbytes} bytes but data_offsets [${begin}, ${end}] span ${end - begin}; ${REPLACE}`, name);
    if (end > dataBytes)
      throw bad(file, `tensor "${name}": data_offsets end at ${end}, past the ${dataBytes} data bytes in the file; the file is truncated: re-download or re-export it`, name);
    ranges.push({ begin, end, name });
    tensors.push({ name, dtype, shape: shape as number[], numel, nbytes, offset: dataStart + begin, file });
  }
  // Empty tensors hold no bytes; among the others, sorted by begin, any overlap shows between neighbours.
  const filled = ranges.filter((r) => r.end > r.begin).sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < filled.length; i++) {
    const prev = filled[i - 1]!, cur = filled[i]!;
    if (cur.begin < prev.end)
      throw bad(file, `tensors "${prev.name}" and "${cur.name}" overlap (bytes ${prev.begin}-${prev.end} and ${cur.begin}-${cur.end}); ${REPLACE}`, cur.name);
  }
  checkCoverage(file, ranges, dataBytes);
  tensors.sort((a, b) => a.offset - b.offset);
  return { file, fileSize, headerBytes, metadata, tensors };
}

const UNCOVERED = 'safetensors files hold no bytes outside their tensors; the file is damaged or was written by a tool that does not follow the format: re-download it or re-export it with the safetensors library';

/**
 * The safetensors format's own rule: sorted by begin, the tensors cover the data section exactly,
 * the first beginning at 0, each where the previous ends, the last ending at the end of the file.
 */
function checkCoverage(file: string, ranges: { begin: number; end: number; name: string }[], dataBytes: number): void {
  const sorted = [...ranges].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let prev: { begin: number; end: number; name: string } | undefined;
  for (const r of sorted) {
    if (r.begin > covered) {
      const where = prev === undefined
        ? `the data section starts with ${r.begin} bytes (0-${r.begin}) before the first tensor "${r.name}"`
        : `${r.begin - covered} bytes (${covered}-${r.begin} of the data section) lie between tensors "${prev.name}" and "${r.name}"`;
      throw bad(file, `${where} that belong to no tensor; ${UNCOVERED}`, r.name);
    }
    if (r.begin < covered)
      throw bad(file, `tensors "${prev!.name}" and "${r.name}" overlap (bytes ${prev!.begin}-${prev!.end} and ${r.begin}-${r.end}); ${REPLACE}`, r.name);
    covered = r.end;
    prev = r;
  }
  if (covered < dataBytes) {
    const after = prev === undefined ? 'the header lists no tensors but' : `after the last tensor "${prev.name}"`;
    throw bad(file, `${after} the file has ${dataBytes - covered} more bytes (${covered}-${dataBytes} of the data section) that belong to no tensor; ${UNCOVERED}`, prev?.name);
  }
}

export interface HeaderEntry {
  name: string;
  dtype: string;
  shape: number[];
  nbytes: number;
}

/**
 * Renders a header for tensors laid out back to back in the given order: the 8-byte length and the
 * JSON, padded with spaces to a multiple of 8 bytes. Returns the bytes and each tensor's data offset.
 */
export function renderHeader(entries: HeaderEntry[], metadata: Record<string, string>): { header: Buffer; offsets: number[]; dataBytes: number } {
  // Written member by member, in data order, so that no tensor name is ever an object key here.
  const members: string[] = [];
  const metaKeys = Object.keys(metadata);
  if (metaKeys.length > 0) members.push(`"__metadata__":{${metaKeys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`).join(',')}}`);
  const seen = new Set<string>(['__metadata__']);
  const offsets: number[] = [];
  let at = 0;
  for (const e of entries) {
    if (seen.has(e.name))
      throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `tensor name "${e.name}" is given twice (or is "__metadata__"); give each tensor a distinct name`, { tensor: e.name });
    seen.add(e.name);
    members.push(`${JSON.stringify(e.name)}:${JSON.stringify({ dtype: e.dtype, shape: e.shape, data_offsets: [at, at + e.nbytes] })}`);
    offsets.push(at);
    at += e.nbytes;
  }
  const json = Buffer.from(`{${members.join(',')}}`, 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(header, 8);
  return { header, offsets: offsets.map((o) => o + header.length), dataBytes: at };
}

export interface SmallTensor {
  name: string;
  dtype: 'F32' | 'I32' | 'I64' | 'BF16' | 'F16' | 'U8';
  shape: number[];
  data: ArrayBufferView;
}

/** The bytes of a safetensors file whose tensors fit in memory (results, vectors): header, then data. */
export function renderSafetensors(tensors: SmallTensor[], metadata: Record<string, string> = {}): Buffer[] {
  const buffers = tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  const { header } = renderHeader(
    tensors.map((t, i) => ({ name: t.name, dtype: t.dtype, shape: t.shape, nbytes: buffers[i]!.length })),
    metadata,
  );
  return [header, ...buffers];
}
