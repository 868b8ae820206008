'use strict';
// CPU engine against llama.cpp on the same weights (issue 9). See bench/README.md.
//
//   npm run bench:cpu -- [--quick] [--size 0.25b|1.1b|both] [--threads N] [--rounds N] [--wait-quiet SECONDS] [--kv f16|f32]
//                        [--matmul-precision f32|both] [--agreement-only]
//
// 1. Synthetic Llama-shaped bf16 checkpoints from bench/gen-llama.js (0.25B: hidden 1024, 16 layers,
//    8/4 heads; 1.1B: hidden 2048, 22 layers, 32/4 heads; vocab 32000), converted to GGUF by
//    bench/gguf-convert.js (BF16 for the timing, F32 for the agreement check). Token ids only: no tokenizer.
// 2. llama.cpp through node-llama-cpp 3.21.1 with its prebuilt CPU binary, installed on first run into
//    bench/.llama/ (ignored by git; never a dependency of the package).
// 3. Agreement: with float32 weights on both sides (ours widens the bf16 weights on load, the GGUF holds
//    the same values as F32), the next-token log-probabilities at every position of a short sequence must
//    agree; the benchmark refuses to time two engines that compute different functions.
// 4. Rows: prefill 128 and 512 tokens, decode batch 1, decode 8 sequences; bf16 weights on both, the same
//    KV-cache dtype (--kv: f16 by default, llama.cpp's own default), the same thread count, interleaved
//    rounds (the first engine alternates), medians. Prefill reports GFLOP/s, decode the weight bytes
//    read per step in GB/s, beside this machine's peak measured in the same run by a small C program (gcc -O3 -march=native: FMA throughput, memcpy and read bandwidth).
// 5. Where this CPU runs bf16 products (LoadOptions.matmulPrecision 'bf16': activations rounded to bf16,
//    as llama.cpp rounds them for bf16 weights), ours runs a second time with them in the same rounds
//    (--matmul-precision both, the default there); its rows are reported beside the default's.
// The last stdout line is a JSON object with the ratios ours / llama.cpp per size and row.
//
// Environment: BENCH_DIR (the 0.25B cache, shared with bench:hdr), BENCH_CPU_DIR (other caches and the
// GGUF files; default <tmpdir>/safety-arithmetic-bench-cpu).

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');
const { pathToFileURL } = require('node:url');
const { generate, Rng } = require('./gen-llama');
const { convert } = require('./gguf-convert');

const ROOT = path.resolve(__dirname, '..');
const LLAMA_DIR = path.join(__dirname, '.llama');
const LLAMA_VERSION = '3.21.1';
const CPU_DIR = process.env.BENCH_CPU_DIR || path.join(os.tmpdir(), 'safety-arithmetic-bench-cpu');
const TARGETS = { prefill_128: 1.5, prefill_512: 1.5, decode_1: 1.1, decode_8: 1.1 };
const AGREEMENT_TOLERANCE = 1e-3; // max |log p_ours - log p_llama.cpp| over the vocabulary and positions

const SIZES = {
  '0.25b': { cache: process.env.BENCH_DIR || path.join(os.tmpdir(), 'safety-arithmetic-bench-hdr'), shape: {} },
  '1.1b': {
    cache: path.join(CPU_DIR, 'gen-1.1b'),
    shape: { hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4 },
  },
};

function log(msg) {
  process.stderr.write(`[bench:cpu] ${msg}\n`);
}

function parseArgs(argv) {
  const o = { quick: false, sizes: ['0.25b'], threads: 2, rounds: 3, waitQuiet: 0, kv: 'f16', matmulPrecision: 'both' };
  let sizeGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--agreement-only') o.agreementOnly = true;
    else if (a === '--size') {
      const s = value();
      if (s === 'both') o.sizes = ['0.25b', '1.1b'];
      else if (s in SIZES) o.sizes = [s];
      else throw new Error(`--size must be 0.25b, 1.1b or both, got ${s}`);
      sizeGiven = true;
    } else if (a === '--kv') {
      o.kv = value();
      if (o.kv !== 'f16' && o.kv !== 'f32') throw new Error(`--kv must be f16 or f32, got ${o.kv}`);
    } else if (a === '--matmul-precision') {
      o.matmulPrecision = value();
      if (o.matmulPrecision !== 'f32' && o.matmulPrecision !== 'both') throw new Error(`--matmul-precision must be f32 or both, got ${o.matmulPrecision}`);
    } else if (a === '--wait-quiet') {
      const n = Number(value());
      if (!(n >= 0)) throw new Error('--wait-quiet must be a number of seconds');
      o.waitQuiet = n;
    } else if (a === '--threads' || a === '--rounds') {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 1 || n > 256) throw new Error(`${a} must be a positive integer`);
      o[a.slice(2)] = n;
    } else throw new Error(`unknown option ${a} (options: --quick, --size 0.25b|1.1b|both, --threads N, --rounds N, --wait-quiet SECONDS, --kv f16|f32, --matmul-precision f32|both, --agreement-only)`);
  }
  if (o.quick && sizeGiven && o.sizes.includes('1.1b')) log('--quick with the 1.1B size: fewer tokens, as asked');
  o.decodeTokens = o.quick ? 16 : 64;
  o.decode8Tokens = o.quick ? 16 : 32;
  return o;
}

// ---------------------------------------------------------------- llama.cpp (node-llama-cpp) for the benchmark only

function ensureLlama() {
  const pkg = path.join(LLAMA_DIR, 'node_modules', 'node-llama-cpp', 'package.json');
  const installed = fs.existsSync(pkg) ? JSON.parse(fs.readFileSync(pkg, 'utf8')).version : null;
  const bins = path.join(LLAMA_DIR, 'node_modules', '@node-llama-cpp', 'linux-x64');
  if (installed === LLAMA_VERSION && (process.platform !== 'linux' || process.arch !== 'x64' || fs.existsSync(bins))) return;
  log(`installing node-llama-cpp ${LLAMA_VERSION} (prebuilt CPU binary) into ${path.relative(ROOT, LLAMA_DIR)}/, for the benchmark only`);
  fs.mkdirSync(LLAMA_DIR, { recursive: true });
  // The prebuilt CPU binaries are optional dependencies of node-llama-cpp; name this platform's one and
  // leave out the others (CUDA, Vulkan: hundreds of MB). No install scripts: nothing is compiled or downloaded.
  const deps = { 'node-llama-cpp': LLAMA_VERSION };
  const platformPkg = `@node-llama-cpp/${process.platform === 'darwin' ? 'mac' : process.platform === 'win32' ? 'win' : process.platform}-${process.arch}`;
  deps[platformPkg] = LLAMA_VERSION;
  fs.writeFileSync(path.join(LLAMA_DIR, 'package.json'), JSON.stringify({ name: 'safety-arithmetic-bench-llama', private: true, description: 'llama.cpp for npm run bench:cpu only', dependencies: deps }, null, 2) + '\n');
  const r = spawnSync('npm', ['install', '--omit=optional', '--ignore-scripts', '--no-audit', '--no-fund', '--no-package-lock'], { cwd: LLAMA_DIR, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`npm install in ${LLAMA_DIR} failed (exit ${r.status}); llama.cpp cannot be measured`);
}

async function loadLlamaModule() {
  return import(pathToFileURL(path.join(LLAMA_DIR, 'node_modules', 'node-llama-cpp', 'dist', 'index.js')).href);
}

// ---------------------------------------------------------------- machine peak (native, same run)

const PEAK_C = String.raw`
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
/* FMA throughput: 12 independent chains of 512-bit (or narrower, as the compiler lowers them) float FMAs per
   thread; bandwidth: memcpy (read + write bytes) and a vector read-sum over 1 GiB, split among the threads. */
typedef float vf __attribute__((vector_size(64)));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static long iters; static size_t bytes; static int nthreads; static char *src, *dst; static volatile float sink[256];
static pthread_barrier_t bar;
static void *fma_worker(void *arg) {
  long id = (long)arg; vf a, b, x[12];
  for (int i = 0; i < 16; i++) { a[i] = 0.9999f; b[i] = 1e-7f * (id + 1); }
  for (int k = 0; k < 12; k++) x[k] = b + (float)k;
  const long n = iters;
  pthread_barrier_wait(&bar);
  for (long i = 0; i < n; i++)
    for (int k = 0; k < 12; k++) x[k] = x[k] * a + b;
  vf s = x[0]; for (int k = 1; k < 12; k++) s += x[k];
  sink[id] = s[0];
  return 0;
}
#ifdef __AVX512BF16__
#include <immintrin.h>
/* bf16 dot-product throughput (vdpbf16ps: 32 bf16 products summed into 16 floats = 64 flops each), the
   instruction a bf16 GEMM uses on CPUs that have it. */
static void *bf16_worker(void *arg) {
  long id = (long)arg; __m512 x[12];
  __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3380 + (short)id);
  for (int k = 0; k < 12; k++) x[k] = _mm512_set1_ps((float)k);
  const long n = iters;
  pthread_barrier_wait(&bar);
  for (long i = 0; i < n; i++)
    for (int k = 0; k < 12; k++) x[k] = _mm512_dpbf16_ps(x[k], a, b);
  __m512 s = x[0]; for (int k = 1; k < 12; k++) s = _mm512_add_ps(s, x[k]);
  sink[id] = _mm512_reduce_add_ps(s);
  return 0;
}
#endif
static void *copy_worker(void *arg) {
  long id = (long)arg; size_t part = bytes / nthreads;
  pthread_barrier_wait(&bar);
  memcpy(dst + id * part, src + id * part, part);
  return 0;
}
static void *read_worker(void *arg) {
  long id = (long)arg; size_t n = bytes / nthreads / sizeof(vf);
  const vf *p = (const vf *)(src + id * (bytes / nthreads));
  vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
  pthread_barrier_wait(&bar);
  for (size_t i = 0; i + 4 <= n; i += 4) { s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3]; }
  s0 += s1 + s2 + s3; sink[id] = s0[0];
  return 0;
}
static double run(void *(*fn)(void *)) {
  pthread_t t[256];
  pthread_barrier_init(&bar, 0, nthreads + 1);
  for (long i = 0; i < nthreads; i++) pthread_create(&t[i], 0, fn, (void *)i);
  pthread_barrier_wait(&bar);
  double t0 = now();
  for (int i = 0; i < nthreads; i++) pthread_join(t[i], 0);
  double s = now() - t0;
  pthread_barrier_destroy(&bar);
  return s;
}
int main(int argc, char **argv) {
  nthreads = argc > 1 ? atoi(argv[1]) : 1; if (nthreads < 1 || nthreads > 256) nthreads = 1;
  double fma = 0, copy = 0, rd = 0;
  iters = 40000000;
  for (int r = 0; r < 5; r++) { double s = run(fma_worker); double f = 2.0 * 16 * 12 * iters * nthreads / s; if (f > fma) fma = f; }
  double bf16 = 0;
#ifdef __AVX512BF16__
  for (int r = 0; r < 5; r++) { double s = run(bf16_worker); double f = 64.0 * 12 * iters * nthreads / s; if (f > bf16) bf16 = f; }
#endif
  bytes = (size_t)1024 << 20; bytes -= bytes % ((size_t)nthreads * 256);
  src = aligned_alloc(64, bytes); dst = aligned_alloc(64, bytes);
  if (!src || !dst) return 1;
  /* distinct page contents: a hypervisor that merges identical pages would otherwise serve the reads from cache */
  unsigned x = 12345u;
  for (size_t i = 0; i < bytes / 4; i++) { x = x * 1664525u + 1013904223u; ((unsigned *)src)[i] = x; ((unsigned *)dst)[i] = ~x; }
  for (int r = 0; r < 5; r++) { double s = run(copy_worker); double b = 2.0 * bytes / s; if (b > copy) copy = b; }
  for (int r = 0; r < 5; r++) { double s = run(read_worker); double b = (double)bytes / s; if (b > rd) rd = b; }
  printf("{\"threads\":%d,\"fma_gflops\":%.1f,\"bf16_dot_gflops\":%.1f,\"copy_gbs\":%.2f,\"read_gbs\":%.2f}\n", nthreads, fma / 1e9, bf16 / 1e9, copy / 1e9, rd / 1e9);
  return 0;
}
`;

function measurePeak(threads) {
  const dir = path.join(CPU_DIR, 'peak');
  fs.mkdirSync(dir, { recursive: true });
  const src = path.join(dir, 'peak.c');
  const exe = path.join(dir, 'peak');
  fs.writeFileSync(src, PEAK_C);
  try {
    execFileSync('gcc', ['-O3', '-march=native', '-pthread', '-o', exe, src], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    log(`no peak figures: gcc -O3 -march=native failed (${String(err.stderr || err.message).trim().split('\n')[0]})`);
    return null;
  }
  const peak = JSON.parse(execFileSync(exe, [String(threads)], { encoding: 'utf8' }).trim());
  if (!peak.bf16_dot_gflops) peak.bf16_dot_gflops = null;
  peak.note = 'fma_gflops: float32 FMA throughput (2 flops each); bf16_dot_gflops: AVX512-BF16 vdpbf16ps throughput (null without it); copy_gbs: memcpy, read+write bytes; read_gbs: vector read-sum; best of 5, 1 GiB buffers';
  return peak;
}

// ---------------------------------------------------------------- models and inputs

/** The synthetic checkpoint's base folder, its config and its GGUF files (each converted once, then reused). */
function prepare(sizeName) {
  const size = SIZES[sizeName];
  log(`${sizeName}: synthetic checkpoint in ${size.cache} (bench/gen-llama.js; generated once, then reused)`);
  const t0 = Date.now();
  const gen = generate(size.cache, size.shape);
  log(`${sizeName}: ${gen.params} parameters${gen.reused ? ' (reused)' : `, generated in ${((Date.now() - t0) / 1000).toFixed(0)} s`}`);
  const dir = path.join(size.cache, 'base');
  const st = fs.statSync(path.join(dir, 'model.safetensors'));
  const ggufDir = path.join(CPU_DIR, `gguf-${sizeName}`);
  const gguf = {};
  for (const outtype of ['keep', 'f32']) {
    const file = path.join(ggufDir, outtype === 'keep' ? 'model-bf16.gguf' : 'model-f32.gguf');
    const stampFile = `${file}.stamp.json`;
    const stamp = JSON.stringify({ converter: fs.statSync(path.join(__dirname, 'gguf-convert.js')).mtimeMs, source: st.size, sourceTime: st.mtimeMs });
    if (!(fs.existsSync(file) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === stamp)) {
      const t1 = Date.now();
      const r = convert(dir, file, { outtype });
      fs.writeFileSync(stampFile, stamp);
      log(`${sizeName}: converted to ${path.basename(file)} (${r.weightType}, ${(r.bytes / 2 ** 20).toFixed(0)} MiB) in ${((Date.now() - t1) / 1000).toFixed(0)} s`);
    }
    gguf[outtype === 'keep' ? 'bf16' : 'f32'] = file;
  }
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  return { dir, config, gguf, params: gen.params };
}

/** FLOPs of a prefill of n tokens (logits for the last position only) and the matrix bytes read per decode step. */
function workOf(config, bytesPerWeight) {
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const L = config.num_hidden_layers;
  const headDim = H / config.num_attention_heads;
  const kvDim = headDim * config.num_key_value_heads;
  const layerMatrix = H * H * 2 + H * kvDim * 2 + 3 * H * I;
  const lmHead = config.vocab_size * H;
  return {
    prefillFlops: (n) => 2 * layerMatrix * L * n + L * 4 * H * (n * (n + 1)) / 2 + 2 * lmHead,
    decodeBytes: (layerMatrix * L + lmHead) * bytesPerWeight,
  };
}

function tokenIds(seed, n, vocab) {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => 259 + (rng.nextU32() % (vocab - 259))); // past <unk> <s> </s> and the byte tokens
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

/** CPU seconds used by the whole machine (from /proc/stat; null elsewhere) and by this process (all threads). */
function cpuSnapshot() {
  let machine = null;
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    machine = (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / 100; // user nice system irq softirq steal, USER_HZ = 100
  } catch { /* not Linux */ }
  const u = process.cpuUsage();
  return { t: now(), machine, self: (u.user + u.system) / 1e6 };
}

/** CPUs kept busy by other processes between two snapshots (null when unknown). */
function foreignCpus(a, b) {
  if (a.machine === null || b.machine === null) return null;
  return Math.max(0, (b.machine - a.machine) - (b.self - a.self)) / (b.t - a.t);
}

/** Wait (up to maxSeconds) until other processes use less than 0.2 CPU over a 2 s window; returns what was last seen. */
async function waitQuiet(maxSeconds) {
  const deadline = now() + maxSeconds;
  for (;;) {
    const a = cpuSnapshot();
    await pause(2000);
    const busy = foreignCpus(a, cpuSnapshot());
    if (busy === null || busy < 0.2 || now() >= deadline) return busy;
    log(`waiting for a quiet machine: other processes use ${busy.toFixed(2)} CPUs`);
  }
}
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

/** Decode rate from per-sequence token arrival times: tokens after each sequence's first, over the span after the last first token. */
function decodeRate(times) {
  const firsts = times.map((t) => t[0]);
  const lasts = times.map((t) => t[t.length - 1]);
  const tokens = times.reduce((a, t) => a + t.length - 1, 0);
  return tokens / (Math.max(...lasts) - Math.max(...firsts));
}

// ---------------------------------------------------------------- the two engines behind one interface

function ourLib(threads) {
  process.env.SAFETY_ARITHMETIC_THREADS = String(threads);
  const lib = require(path.join(ROOT, 'dist', 'lib', 'index.js'));
  const nat = require(path.join(ROOT, 'dist', 'lib', 'native.js')).native();
  if (typeof nat.setThreads === 'function') nat.setThreads(threads);
  return lib;
}

const BF16_PRODUCTS = 'ours, bf16 products';

async function ours(lib, dir, weights, kvCacheDtype = 'f32', matmulPrecision = 'f32') {
  const model = await lib.LanguageModel.load(dir, { device: 'cpu', weights, tokenizer: false, kvCacheDtype, matmulPrecision });
  return {
    name: matmulPrecision === 'bf16' ? BF16_PRODUCTS : 'ours',
    async logprobRows(ids) {
      const [r] = await model.forward([ids]);
      const V = r.logits.length / ids.length;
      return ids.map((_, t) => logSoftmax(r.logits.subarray(t * V, (t + 1) * V)));
    },
    async prefill(ids) {
      const t0 = now();
      await model.forward([ids], { lastOnly: true });
      return ids.length / (now() - t0);
    },
    async decode(prompts, n) {
      const times = await Promise.all(prompts.map(async (p) => {
        const t = [];
        for await (const _ of model.generate(p, { maxNewTokens: n, ignoreEos: true, greedy: true })) t.push(now());
        return t;
      }));
      return decodeRate(times);
    },
    dispose: () => model.dispose(),
  };
}

async function llamaCpp(llama, file, threads, { exact = false, sequences = 8, kv = 'f16' } = {}) {
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const cacheType = exact ? 'F32' : kv.toUpperCase();
  const kvOptions = { experimentalKvCacheKeyType: cacheType, experimentalKvCacheValueType: cacheType, ...(exact ? { flashAttention: false } : {}) };
  const threadOpt = { ideal: threads, min: threads };
  const prefillCtx = await model.createContext({ contextSize: 1024, batchSize: 512, sequences: 1, threads: threadOpt, ...kvOptions });
  const decodeCtx = exact ? null : await model.createContext({ contextSize: 512, batchSize: 512, sequences, threads: threadOpt, ...kvOptions });
  const prefillSeq = prefillCtx.getSequence();
  const decodeSeqs = decodeCtx ? Array.from({ length: sequences }, () => decodeCtx.getSequence()) : [];
  return {
    name: 'llama.cpp',
    async logprobRows(ids) {
      await prefillSeq.clearHistory();
      const out = await prefillSeq.controlledEvaluate(ids.map((t) => [t, { generateNext: { probabilities: true } }]));
      return ids.map((_, t) => {
        const probs = out[t].next.probabilities;
        const row = new Float64Array(probs.size);
        for (const [tok, p] of probs) row[tok] = Math.log(p);
        return row;
      });
    },
    async prefill(ids) {
      await prefillSeq.clearHistory();
      const t0 = now();
      await prefillSeq.evaluateWithoutGeneratingNewTokens(ids);
      return ids.length / (now() - t0);
    },
    async decode(prompts, n) {
      const times = await Promise.all(prompts.map(async (p, i) => {
        const seq = decodeSeqs[i];
        await seq.clearHistory();
        const t = [];
        for await (const _ of seq.evaluate(p, { temperature: 0 })) {
          t.push(now());
          if (t.length >= n) break;
        }
        return t;
      }));
      return decodeRate(times);
    },
    async dispose() {
      if (decodeCtx) await decodeCtx.dispose();
      await prefillCtx.dispose();
      await model.dispose();
    },
  };
}

function logSoftmax(row) {
  let m = -Infinity;
  for (const x of row) if (x > m) m = x;
  let s = 0;
  for (const x of row) s += Math.exp(x - m);
  const lse = m + Math.log(s);
  const out = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = row[i] - lse;
  return out;
}

// ---------------------------------------------------------------- agreement, then timing

async function checkAgreement(lib, llama, prep, threads) {
  const ids = tokenIds(7, 12, prep.config.vocab_size);
  const a = await ours(lib, prep.dir, 'float32');
  const oursRows = await a.logprobRows(ids);
  await a.dispose();
  const b = await llamaCpp(llama, prep.gguf.f32, threads, { exact: true });
  const llamaRows = await b.logprobRows(ids);
  await b.dispose();
  let maxDiff = 0;
  let sameArgmax = 0;
  for (let t = 0; t < ids.length; t++) {
    const x = oursRows[t];
    const y = llamaRows[t];
    if (x.length !== y.length) throw new Error(`agreement: ours has ${x.length} logits per position, llama.cpp ${y.length}`);
    let ax = 0;
    let ay = 0;
    for (let v = 0; v < x.length; v++) {
      const d = Math.abs(x[v] - y[v]);
      if (!(d <= maxDiff)) maxDiff = Number.isNaN(d) ? Infinity : d;
      if (x[v] > x[ax]) ax = v;
      if (y[v] > y[ay]) ay = v;
    }
    if (ax === ay) sameArgmax++;
  }
  return { positions: ids.length, maxAbsLogprobDiff: maxDiff, sameArgmax, tolerance: AGREEMENT_TOLERANCE };
}

async function timeSize(lib, llama, sizeName, prep, o) {
  const V = prep.config.vocab_size;
  const p128 = tokenIds(128, 128, V);
  const p512 = tokenIds(512, 512, V);
  const decodePrompts = Array.from({ length: 8 }, (_, i) => tokenIds(1000 + i, 16, V));
  const rows = [
    { key: 'prefill_128', label: 'prefill, 128-token prompt', kind: 'prefill', tokens: 128, run: (e) => e.prefill(p128) },
    { key: 'prefill_512', label: 'prefill, 512-token prompt', kind: 'prefill', tokens: 512, run: (e) => e.prefill(p512) },
    { key: 'decode_1', label: `decode, batch 1 (${o.decodeTokens} tokens)`, kind: 'decode', batch: 1, run: (e) => e.decode(decodePrompts.slice(0, 1), o.decodeTokens) },
    { key: 'decode_8', label: `decode, 8 sequences (${o.decode8Tokens} tokens each)`, kind: 'decode', batch: 8, run: (e) => e.decode(decodePrompts, o.decode8Tokens) },
  ];
  const engines = [await ours(lib, prep.dir, 'auto', o.kv), await llamaCpp(llama, prep.gguf.bf16, o.threads, { kv: o.kv })];
  if (o.bf16Products) engines.push(await ours(lib, prep.dir, 'auto', o.kv, 'bf16'));
  log(`${sizeName}: warm-up (weights paged in, threads started)`);
  for (const e of engines) {
    await e.prefill(tokenIds(5, 32, V));
    await e.decode(decodePrompts.slice(0, 2), 3);
  }
  const samples = Object.fromEntries(rows.map((r) => [r.key, Object.fromEntries(engines.map((e) => [e.name, []]))]));
  const loadBefore = os.loadavg()[0];
  const foreign = [];
  for (let round = 0; round < o.rounds; round++) {
    if (o.waitQuiet > 0) await waitQuiet(o.waitQuiet);
    const order = round % 2 === 0 ? engines : [...engines].reverse();
    for (const row of rows) {
      for (const e of order) {
        await pause(200);
        const before = cpuSnapshot();
        const rate = await row.run(e);
        const busy = foreignCpus(before, cpuSnapshot());
        samples[row.key][e.name].push(rate);
        if (busy !== null) foreign.push(busy);
        log(`${sizeName} round ${round + 1}/${o.rounds}: ${row.label}: ${e.name} ${rate.toFixed(2)} tok/s${busy === null ? '' : ` (other processes: ${busy.toFixed(2)} CPUs)`}`);
      }
    }
  }
  for (const e of engines) await e.dispose();
  const load = { before: loadBefore, after: os.loadavg()[0], other_processes_cpus_max: foreign.length ? Math.max(...foreign) : null, other_processes_cpus_median: foreign.length ? median(foreign) : null, runs_disturbed: foreign.filter((f) => f > 0.2).length, runs: foreign.length };
  const rowsOut = rows.map((r) => ({
    ...r, ours: median(samples[r.key].ours), llama: median(samples[r.key]['llama.cpp']),
    oursBf16: o.bf16Products ? median(samples[r.key][BF16_PRODUCTS]) : null, samples: samples[r.key],
  }));
  return { rows: rowsOut, load };
}

function report(sizeName, prep, results, peak, kv) {
  const work = workOf(prep.config, 2);
  const lines = [];
  lines.push(`\n${sizeName} (${prep.params} parameters, bf16 weights and ${kv} KV cache on both; medians)`);
  const bf16 = results.some((r) => r.oursBf16 !== null);
  lines.push(`| row | ours tok/s | llama.cpp tok/s | ours / llama.cpp | ours | llama.cpp | machine peak |${bf16 ? ' ours, bf16 products tok/s | / llama.cpp |' : ''}`);
  lines.push(`|---|---:|---:|---:|---:|---:|---:|${bf16 ? '---:|---:|' : ''}`);
  const out = {};
  for (const r of results) {
    let oursHw;
    let llamaHw;
    let peakText = 'n/a';
    if (r.kind === 'prefill') {
      const flopsPerToken = work.prefillFlops(r.tokens) / r.tokens;
      oursHw = `${(r.ours * flopsPerToken / 1e9).toFixed(1)} GFLOP/s`;
      llamaHw = `${(r.llama * flopsPerToken / 1e9).toFixed(1)} GFLOP/s`;
      if (peak) peakText = `${peak.fma_gflops} GFLOP/s f32 FMA${peak.bf16_dot_gflops ? `, ${peak.bf16_dot_gflops} bf16 dot` : ''}`;
      out[r.key] = { ours_tok_s: r.ours, llama_tok_s: r.llama, ours_gflops: r.ours * flopsPerToken / 1e9, llama_gflops: r.llama * flopsPerToken / 1e9 };
    } else {
      const gbs = (rate) => (rate / r.batch) * work.decodeBytes / 1e9;
      oursHw = `${gbs(r.ours).toFixed(2)} GB/s`;
      llamaHw = `${gbs(r.llama).toFixed(2)} GB/s`;
      if (peak) peakText = `${peak.read_gbs} GB/s read, ${peak.copy_gbs} GB/s copy`;
      out[r.key] = { ours_tok_s: r.ours, llama_tok_s: r.llama, ours_weight_gbs: gbs(r.ours), llama_weight_gbs: gbs(r.llama) };
    }
    out[r.key].ratio = r.ours / r.llama;
    if (r.oursBf16 !== null) {
      out[r.key].ours_bf16_products_tok_s = r.oursBf16;
      out[r.key].ratio_bf16_products = r.oursBf16 / r.llama;
    }
    out[r.key].samples = r.samples;
    const bf16Cells = r.oursBf16 !== null ? ` ${r.oursBf16.toFixed(2)} | ${(r.oursBf16 / r.llama).toFixed(2)}x |` : '';
    lines.push(`| ${r.label} | ${r.ours.toFixed(2)} | ${r.llama.toFixed(2)} | ${(r.ours / r.llama).toFixed(2)}x (target ${TARGETS[r.key]}x) | ${oursHw} | ${llamaHw} | ${peakText} |${bf16Cells}`);
  }
  lines.push('GFLOP/s: 2 x matrix parameters per token + attention (4 x hidden x causal positions per layer) + the last position\'s logits;');
  lines.push('GB/s: bf16 matrix bytes (layers + lm_head, not the embedding table or the KV cache) x decode steps per second.');
  console.log(lines.join('\n'));
  return out;
}

function gitCommit() {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', 'csrc', 'lib'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head} (csrc/ or lib/ modified in the working tree)` : head;
  } catch {
    return 'unknown';
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const machine = `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`;
  const commit = gitCommit();
  const load0 = os.loadavg()[0];
  if (load0 > 0.5) log(`WARNING: load average ${load0.toFixed(2)} before the start: other work is running; the figures will be unreliable`);
  log(`machine: ${machine}; threads ${o.threads}; rounds ${o.rounds}; sizes ${o.sizes.join(', ')}; commit ${commit}`);
  ensureLlama();
  fs.mkdirSync(CPU_DIR, { recursive: true });
  let peak = null;
  const remeasurePeak = () => {
    const p = measurePeak(o.threads);
    if (!p) return;
    log(`machine peak with ${o.threads} threads: ${p.fma_gflops} GFLOP/s float32 FMA, ${p.bf16_dot_gflops ?? 'no'} GFLOP/s bf16 dot, ${p.read_gbs} GB/s read, ${p.copy_gbs} GB/s memcpy`);
    if (!peak) peak = p;
    else for (const k of ['fma_gflops', 'bf16_dot_gflops', 'copy_gbs', 'read_gbs']) if (p[k] > peak[k]) peak[k] = p[k];
  };
  const lib = ourLib(o.threads);
  let oursKernel = null;
  try {
    oursKernel = require(path.join(ROOT, 'dist', 'lib', 'device.js')).cpuKernel().chosen; // absent in builds before CPU dispatch
  } catch { /* older build */ }
  log(`ours: CPU kernel variant ${oursKernel ?? 'not reported by this build'}`);
  try {
    o.bf16Products = o.matmulPrecision === 'both' && require(path.join(ROOT, 'dist', 'lib', 'device.js')).cpuKernel().bf16Products === true;
  } catch { /* older build */ }
  log(`ours with bf16 products: ${o.bf16Products ? 'timed as well' : o.matmulPrecision === 'f32' ? 'not asked for' : 'not run (this CPU or build has none)'}`);
  const { getLlama, LlamaLogLevel } = await loadLlamaModule();
  const llama = await getLlama({ gpu: false, build: 'never', maxThreads: o.threads, logLevel: LlamaLogLevel.error, progressLogs: false });
  const llamaInfo = String(llama.systemInfo || '').trim();
  log(`llama.cpp (node-llama-cpp ${LLAMA_VERSION}, CPU): ${llamaInfo}`);
  const result = { bench: 'cpu', machine, threads: o.threads, kv_cache: o.kv, rounds: o.rounds, quick: o.quick, commit, node_llama_cpp: LLAMA_VERSION, llama_system_info: llamaInfo, ours_cpu_kernel: oursKernel, peak: null, targets: TARGETS, ratios: {}, agreement: {}, rows: {} };
  for (const sizeName of o.sizes) {
    const prep = prepare(sizeName);
    const agreement = await checkAgreement(lib, llama, prep, o.threads);
    result.agreement[sizeName] = agreement;
    console.log(`${sizeName}: agreement with float32 weights on both: max |log p ours - log p llama.cpp| = ${agreement.maxAbsLogprobDiff.toExponential(2)} over ${agreement.positions} positions x ${prep.config.vocab_size} tokens; same argmax at ${agreement.sameArgmax}/${agreement.positions}`);
    if (!(agreement.maxAbsLogprobDiff <= AGREEMENT_TOLERANCE)) {
      console.error(`[bench:cpu] REFUSING TO TIME ${sizeName}: the engines disagree (max log-probability difference ${agreement.maxAbsLogprobDiff} > ${AGREEMENT_TOLERANCE}). They do not compute the same function on these weights; check the GGUF conversion (q/k row permutation, metadata) or the engine before comparing speed.`);
      console.log(JSON.stringify({ ...result, error: `disagreement on ${sizeName}` }));
      process.exitCode = 1;
      return;
    }
    if (o.agreementOnly) continue;
    if (o.waitQuiet > 0) await waitQuiet(o.waitQuiet);
    remeasurePeak(); // on a quiet machine when --wait-quiet is given; the best of the measurements is reported
    const { rows: results, load } = await timeSize(lib, llama, sizeName, prep, o);
    const rows = report(sizeName, prep, results, peak, o.kv);
    result.load_average_1min = { ...result.load_average_1min, [sizeName]: load };
    console.log(`load average (1 min) before the rounds ${load.before.toFixed(2)}, after ${load.after.toFixed(2)}; CPUs used by other processes during the timed runs: median ${load.other_processes_cpus_median?.toFixed(2) ?? 'unknown'}, max ${load.other_processes_cpus_max?.toFixed(2) ?? 'unknown'}; runs with more than 0.2 CPU of other work: ${load.runs_disturbed ?? '?'} of ${load.runs ?? '?'}`);
    if (load.other_processes_cpus_max === null ? load.before > 0.5 : load.other_processes_cpus_median > 0.1 || load.runs_disturbed > o.rounds)
      console.log(`WARNING: other work was running on this ${os.cpus().length}-CPU machine during the rounds; llama.cpp's spinning threads suffer most from it. Rerun on a quiet machine.`);
    result.rows[sizeName] = rows;
    result.ratios[sizeName] = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, Number(v.ratio.toFixed(3))]));
    if (o.bf16Products) result.ratios_bf16_products = { ...result.ratios_bf16_products, [sizeName]: Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, Number(v.ratio_bf16_products.toFixed(3))])) };
  }
  await llama.dispose();
  result.peak = peak;
  console.log(JSON.stringify(result));
}

main().then(
  () => process.exit(process.exitCode ?? 0), // node-llama-cpp may keep handles open: the benchmark stops by itself
  (err) => {
    console.error(`[bench:cpu] failed: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
