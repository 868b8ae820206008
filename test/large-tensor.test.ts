/**
 * Tensors of any size: a checkpoint holding a tensor over 4 GiB (a sparse file), so that the small
 * float tensor behind it sits at an offset beyond 2^32, in the inputs and in the output.
 */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readSafetensorsHeader, renderHeader, type HeaderEntry } from '../lib/checkpoint/safetensors';
import { removeHarmDirection } from '../lib/hdr';
import { f32Bytes, leftovers, values } from './helpers/checkpoints';

const BIG = 4_300_000_000;  // bytes of the U8 tensor: over 4 GiB (4_294_967_296)
const SMALL = 4096;  // elements of the F32 tensor
const BIG_NAME = 'model.big';
const SMALL_NAME = 'model.layers.0.w';
const NEEDED_BYTES = 20e9;

/** Positions inside the big tensor around the 2^31 and 2^32 boundaries and at its ends. */
const SENTINELS = [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, BIG - 2, BIG - 1];
/** Positions that hold zeros (holes in the sparse input). */
const ZEROS = [2, 2 ** 31 + 1, 2 ** 32 + 2, BIG - 3];

function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

/**
 * Writes dir/model.safetensors: the big U8 tensor as a hole except for sentinel bytes (value
 * sentinel(i)), and the small F32 tensor, in the given order. Returns the absolute data offsets.
 */
function writeSparseCheckpoint(dir: string, order: 'big-first' | 'small-first', small: Float32Array, sentinel: (i: number) => number): { big: number; small: number } {
  fs.mkdirSync(dir);
  const bigEntry: HeaderEntry = { name: BIG_NAME, dtype: 'U8', shape: [BIG], nbytes: BIG };
  const smallEntry: HeaderEntry = { name: SMALL_NAME, dtype: 'F32', shape: [SMALL], nbytes: SMALL * 4 };
  const entries = order === 'big-first' ? [bigEntry, smallEntry] : [smallEntry, bigEntry];
  const { header, offsets, dataBytes } = renderHeader(entries, { format: 'pt' });
  const at = { big: offsets[entries.indexOf(bigEntry)]!, small: offsets[entries.indexOf(smallEntry)]! };
  const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'w');
  try {
    fs.writeSync(fd, header, 0, header.length, 0);
    fs.ftruncateSync(fd, header.length + dataBytes);
    SENTINELS.forEach((p, i) => fs.writeSync(fd, Buffer.from([sentinel(i)]), 0, 1, at.big + p));
    const bytes = f32Bytes(small);
    fs.writeSync(fd, bytes, 0, bytes.length, at.small);
  } finally {
    fs.closeSync(fd);
  }
  return at;
}

function readAt(file: string, position: number, length: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, buf, done, length - done, position + done);
      if (n === 0) throw new Error(`${file}: end of file at ${position + done}`);
      done += n;
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/** The rule of docs/semantics.md ("TIES trimming"), in float32: tau = h - b, global threshold, ties kept, out = t - lambda * tau_kept. */
function expectedHdr(b: Float32Array, h: Float32Array, t: Float32Array, topK: number, lambda: number) {
  const n = b.length;
  const tau = new Float32Array(n);
  for (let i = 0; i < n; i++) tau[i] = Math.fround(h[i]! - b[i]!);
  const sorted = Float32Array.from(tau, Math.abs).sort();
  const keep = Math.floor(n * topK);
  const threshold = sorted[n - keep - 1]!;  // the (d - keep)-th smallest |tau|, 1-based
  const out = new Float32Array(n);
  let kept = 0;
  for (let i = 0; i < n; i++) {
    if (Math.abs(tau[i]!) >= threshold) {
      out[i] = Math.fround(t[i]! - Math.fround(lambda * tau[i]!));
      kept++;
    } else {
      out[i] = t[i]!;
    }
  }
  return { out, kept, keep, threshold };
}

const free = freeBytes(os.tmpdir());
const enoughDisk = free >= NEEDED_BYTES;
const title = 'HDR over a checkpoint with a tensor over 4 GiB: offsets past 2^32 read, patched and copied correctly';

(enoughDisk ? test : test.skip)(title + (enoughDisk ? '' : ` (skipped: ${(free / 1e9).toFixed(1)} GB free in ${os.tmpdir()}, needs ${NEEDED_BYTES / 1e9} GB)`), async (t) => {
  t.timeout(10 * 60_000);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-large-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));

  const b = values(SMALL, 11);
  const h = Float32Array.from(b, (x, i) => x + 0.01 * Math.sin(i * 0.37 + 1) * (1 + (i % 17)));
  const tv = values(SMALL, 13);
  const targetSentinel = (i: number) => 0x11 + 0x17 * i;
  // The base holds the small tensor first (below 4 GiB), harmful and target behind the big one.
  writeSparseCheckpoint(path.join(root, 'base'), 'small-first', b, () => 0xee);
  const atH = writeSparseCheckpoint(path.join(root, 'harmful'), 'big-first', h, () => 0xdd);
  const atT = writeSparseCheckpoint(path.join(root, 'target'), 'big-first', tv, targetSentinel);
  t.true(atH.small > 2 ** 32 && atT.small > 2 ** 32, 'the small tensor lies beyond 4 GiB');
  const targetFile = path.join(root, 'target', 'model.safetensors');
  const allocated = fs.statSync(targetFile).blocks * 512;
  t.log(`inputs: ${fs.statSync(targetFile).size} bytes each, ${allocated} allocated (sparse)`);

  const out = path.join(root, 'out');
  const started = Date.now();
  const summary = await removeHarmDirection({
    base: path.join(root, 'base'), harmful: path.join(root, 'harmful'), target: path.join(root, 'target'), out,
  });
  t.log(`HDR on ${summary.backend} in ${((Date.now() - started) / 1000).toFixed(1)} s: ${summary.bytesWritten} bytes written`);
  t.deepEqual(leftovers(out), []);

  const exp = expectedHdr(b, h, tv, 0.1, 3);
  t.is(summary.mode, 'ties');
  t.is(summary.lambda, 3);
  t.is(summary.regionElements, SMALL, 'only the F32 tensor is in the region; U8 is copied through');
  t.is(summary.keepTarget, exp.keep);
  t.is(summary.kept, exp.kept);
  t.is(summary.threshold, exp.threshold);

  const outFile = path.join(out, 'model.safetensors');
  const hdr = readSafetensorsHeader(outFile);
  const big = hdr.tensors.find((x) => x.name === BIG_NAME)!;
  const small = hdr.tensors.find((x) => x.name === SMALL_NAME)!;
  t.deepEqual([big.dtype, big.shape, small.dtype, small.shape], ['U8', [BIG], 'F32', [SMALL]]);
  t.true(small.offset > 2 ** 32);
  t.is(fs.statSync(outFile).size, small.offset + SMALL * 4);

  const got = readAt(outFile, small.offset, SMALL * 4);
  const want = f32Bytes(exp.out);
  let differ = 0;
  for (let i = 0; i < SMALL; i++) if (got.readUInt32LE(i * 4) !== want.readUInt32LE(i * 4)) differ++;
  t.is(differ, 0, 'the small tensor is patched bit for bit as the rule says');
  t.false(got.equals(f32Bytes(tv)), 'the small tensor changed');

  SENTINELS.forEach((p, i) => t.is(readAt(outFile, big.offset + p, 1)[0], targetSentinel(i), `sentinel at big + ${p}`));
  for (const p of ZEROS) t.is(readAt(outFile, big.offset + p, 1)[0], 0, `zero at big + ${p}`);
});
