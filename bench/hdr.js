'use strict';
// HDR benchmark: our CLI against the published algorithm in PyTorch, on synthetic Llama-shaped bf16
// checkpoints (~0.25B parameters by default). See bench/README.md.
//
//   npm run bench:hdr
//
// Environment:
//   BENCH_DIR       scratch folder (default: <os.tmpdir()>/safety-arithmetic-bench-hdr); the generated
//                   checkpoints are kept there and reused when their sizes match
//   BENCH_LAYERS    decoder layers (default 16); BENCH_HIDDEN (1024), BENCH_INTERMEDIATE (2816),
//                   BENCH_VOCAB (32000): change the model size
//   BENCH_RUNS      rounds (default 1), each running ours, ours --passes 3 and the floor in turn; the fastest
//                   time and the largest peak RSS of each are reported, and each round's own ratio
//   BENCH_PYTHON    python with torch for the reference (default /usr/bin/python3)
//   BENCH_REF_THREADS  torch threads for the reference (default: number of CPUs)
//   BENCH_SKIP_REF  set to 1 to run only ours
//   BENCH_CLI_ARGS  extra arguments for our CLI (e.g. "--device cpu")
//
// Besides ours (--passes auto) and the reference, every run measures our three-pass path
// (--passes 3) and the floor: a process that reads the three inputs and writes an output of the same
// size through the same native I/O path (lib/hdr.ts hdrIoFloor: same chunks and workers,
// staging and rename), computing nothing. The reference needs torch and numpy
// for BENCH_PYTHON; without them it is skipped and said so.
//
// The last stdout line is a JSON object: {time_ratio, memory_ratio, floor_ratio, ours, three_pass, floor, reference, ...}.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { generate, DEFAULT_CONFIG } = require('./gen-llama');
const { compareCheckpoints } = require('./compare');
const { listCheckpoint } = require('./st');

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'bin', 'safety-arithmetic.js');
const REF = path.join(__dirname, 'reference_hdr.py');
const GNU_TIME = '/usr/bin/time';
const PYTHON = process.env.BENCH_PYTHON || '/usr/bin/python3';
const TARGETS = { time_ratio: 10, memory_ratio: 8, floor_ratio: 1.5 };
const FLOOR = path.join(__dirname, 'hdr-floor.js');

function log(msg) {
  process.stderr.write(`[bench:hdr] ${msg}\n`);
}

function envInt(name, dflt) {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${v}"`);
  return n;
}

/** Read every file once so that both programs start with the inputs in the page cache. */
function warmCache(files) {
  const buf = Buffer.alloc(8 << 20);
  for (const f of files) {
    const fd = fs.openSync(f, 'r');
    try {
      while (fs.readSync(fd, buf, 0, buf.length, null) > 0) { /* read through */ }
    } finally {
      fs.closeSync(fd);
    }
  }
}

function checkpointFiles(dir) {
  return [...new Set([...listCheckpoint(dir).values()].map((t) => t.file))];
}

/**
 * Run a command under GNU time: wall seconds (measured here) and the peak RSS of the child
 * (GNU time's %M: the maximum resident set size, in KiB, of the process it waited for, native memory
 * and mapped file pages included). Falls back to python's getrusage(RUSAGE_CHILDREN) without GNU time.
 */
function measured(cmd, args, opts = {}) {
  const rusageFile = path.join(os.tmpdir(), `bench-hdr-rusage-${process.pid}.txt`);
  fs.rmSync(rusageFile, { force: true });
  let argv;
  if (fs.existsSync(GNU_TIME)) {
    argv = [GNU_TIME, '-f', '%e %M', '-o', rusageFile, cmd, ...args];
  } else if (fs.existsSync(PYTHON)) {
    const py = 'import resource,subprocess,sys\n' +
      'r=subprocess.call(sys.argv[2:])\n' +
      'open(sys.argv[1],"w").write("0 %d\\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n' +
      'sys.exit(r)\n';
    argv = [PYTHON, '-c', py, rusageFile, cmd, ...args];
  } else {
    throw new Error(`neither ${GNU_TIME} nor ${PYTHON} exists: install GNU time (apt-get install -y time)`);
  }
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), {
    cwd: ROOT, encoding: 'utf8', maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'pipe'], ...opts,
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.error) throw r.error;
  let rssKiB = NaN;
  try {
    const fields = fs.readFileSync(rusageFile, 'utf8').trim().split(/\s+/);
    rssKiB = Number(fields[fields.length - 1]);
  } catch { /* the child died before time wrote it */ }
  fs.rmSync(rusageFile, { force: true });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, seconds, rssMiB: rssKiB / 1024 };
}

function lastJsonLine(text) {
  const lines = text.trim().split('\n').filter((l) => l.trim().startsWith('{'));
  if (lines.length === 0) return null;
  try {
    return JSON.parse(lines[lines.length - 1]);
  } catch {
    return null;
  }
}

function tail(text, n = 20) {
  return text.trim().split('\n').slice(-n).join('\n');
}

function best(runs) {
  const fastest = runs.reduce((a, r) => (r.seconds < a.seconds ? r : a), runs[0]);
  return {
    fastest,
    seconds: Math.min(...runs.map((r) => r.seconds)),
    rssMiB: Math.max(...runs.map((r) => r.rssMiB)),
    runs: runs.map((r) => ({ seconds: round(r.seconds, 3), rssMiB: round(r.rssMiB, 1) })),
  };
}

function round(x, d) {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

function f32bits(x) {
  const b = Buffer.alloc(4);
  b.writeFloatLE(x, 0);
  return b.readUInt32LE(0);
}

function pad(s, n, right = false) {
  s = String(s);
  return right ? s.padStart(n) : s.padEnd(n);
}

function main() {
  const scratch = path.resolve(process.env.BENCH_DIR || path.join(os.tmpdir(), 'safety-arithmetic-bench-hdr'));
  const cfg = {
    ...DEFAULT_CONFIG,
    num_hidden_layers: envInt('BENCH_LAYERS', DEFAULT_CONFIG.num_hidden_layers),
    hidden_size: envInt('BENCH_HIDDEN', DEFAULT_CONFIG.hidden_size),
    intermediate_size: envInt('BENCH_INTERMEDIATE', DEFAULT_CONFIG.intermediate_size),
    vocab_size: envInt('BENCH_VOCAB', DEFAULT_CONFIG.vocab_size),
  };
  const runs = envInt('BENCH_RUNS', 1);
  const loadBefore = os.loadavg().map((x) => round(x, 2));
  const skipRef = process.env.BENCH_SKIP_REF === '1';
  const refThreads = envInt('BENCH_REF_THREADS', os.cpus().length);
  const cliExtra = (process.env.BENCH_CLI_ARGS || '').split(/\s+/).filter((s) => s.length > 0);

  // 1. inputs
  fs.mkdirSync(scratch, { recursive: true });
  const dirs = { base: path.join(scratch, 'base'), harmful: path.join(scratch, 'harmful'), target: path.join(scratch, 'target') };
  log(`checkpoints in ${scratch} (hidden ${cfg.hidden_size}, intermediate ${cfg.intermediate_size}, ${cfg.num_hidden_layers} layers, vocab ${cfg.vocab_size})`);
  let lastReport = 0;
  const gen = generate(scratch, cfg, (done, total) => {
    const now = Date.now();
    if (now - lastReport > 5000) {
      lastReport = now;
      log(`generating: ${(100 * done / total).toFixed(1)}% of ${(total / 1e6).toFixed(1)}M parameters x 3 checkpoints`);
    }
  });
  log(gen.reused ? `reusing generated checkpoints (${gen.params} parameters)` : `generated ${gen.params} parameters x 3 in ${gen.seconds.toFixed(1)} s`);
  const inputFiles = [...checkpointFiles(dirs.base), ...checkpointFiles(dirs.harmful), ...checkpointFiles(dirs.target)];
  const inputBytes = inputFiles.reduce((a, f) => a + fs.statSync(f).size, 0);

  // 2. ours
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} does not exist`);
  const outOurs = path.join(scratch, 'out-ours');
  const outRef = path.join(scratch, 'out-reference');
  /**
   * One run of `node args...` after warming the cache, removing its previous output and flushing
   * dirty pages (so that neither the old output's removal nor the writeback of an earlier run's
   * output lands in the timed run); its JSON summary from its last line.
   */
  const runNode = (label, args, out, round) => {
    warmCache(inputFiles);
    fs.rmSync(out, { recursive: true, force: true });
    spawnSync('sync');
    log(`${label} (round ${round + 1}/${runs}): node ${args.map((a) => (a.startsWith(ROOT) ? path.relative(ROOT, a) : a)).join(' ')}`);
    const r = measured(process.execPath, args);
    if (r.status !== 0) {
      process.stderr.write(`--- ${label} failed (status ${r.status}, signal ${r.signal}) ---\nstdout:\n${tail(r.stdout)}\nstderr:\n${tail(r.stderr)}\n`);
      throw new Error(`${label} failed`);
    }
    r.summary = lastJsonLine(r.stdout);
    if (!r.summary) throw new Error(`${label} printed no JSON summary as its last line:\n${tail(r.stdout)}`);
    log(`${label}: ${r.seconds.toFixed(2)} s, peak RSS ${r.rssMiB.toFixed(0)} MiB`);
    return r;
  };
  const cliArgs = (out, extra) => [CLI, 'hdr', '--base', dirs.base, '--harmful', dirs.harmful, '--target', dirs.target,
    '--out', out, '--force', '--json', ...extra, ...cliExtra];
  const outThree = path.join(scratch, 'out-three-pass'), outFloor = path.join(scratch, 'out-floor');
  const programs = [
    ['ours', cliArgs(outOurs, []), outOurs],
    ['ours, --passes 3', cliArgs(outThree, ['--passes', '3']), outThree],
    ['floor', [FLOOR, dirs.base, dirs.harmful, dirs.target, outFloor, ...cliExtra], outFloor],
  ];
  // Interleaved rounds: each round runs the three programs in turn, so that a noisy stretch of the
  // machine lands on all of them.
  const timed = programs.map(() => []);
  for (let round = 0; round < runs; round++) programs.forEach(([label, args, out], i) => timed[i].push(runNode(label, args, out, round)));
  const [ours, threePass, floor] = timed.map(best);
  const summary = ours.fastest.summary; // phases of the fastest run
  const roundRatios = timed[0].map((r, i) => r.seconds / timed[2][i].seconds).sort((a, b) => a - b);
  const medianRoundRatio = roundRatios[Math.floor(roundRatios.length / 2)];
  const floorRatio = ours.seconds / floor.seconds;

  // 3. reference
  let reference = null;
  let refJson = null;
  let refSkipped = skipRef ? 'BENCH_SKIP_REF=1' : null;
  if (!skipRef && spawnSync(PYTHON, ['-c', 'import torch, numpy'], { stdio: 'ignore' }).status !== 0) {
    refSkipped = `torch and numpy are not installed for ${PYTHON} (apt-get install -y python3-torch python3-numpy)`;
    log(`reference skipped: ${refSkipped}`);
  }
  if (!refSkipped) {
    const refRuns = [];
    for (let i = 0; i < runs; i++) {
      warmCache(inputFiles);
      fs.rmSync(outRef, { recursive: true, force: true });
      const args = [REF, '--base', dirs.base, '--harmful', dirs.harmful, '--target', dirs.target, '--out', outRef,
        '--threads', String(refThreads)];
      log(`reference (run ${i + 1}/${runs}): ${PYTHON} ${path.relative(ROOT, REF)} ... --threads ${refThreads}`);
      const r = measured(PYTHON, args);
      if (r.status !== 0) {
        process.stderr.write(`--- reference failed (status ${r.status}, signal ${r.signal}) ---\n${tail(r.stderr)}\n`);
        throw new Error('reference failed');
      }
      r.summary = lastJsonLine(r.stdout);
      log(`reference: ${r.seconds.toFixed(2)} s, peak RSS ${r.rssMiB.toFixed(0)} MiB (${tail(r.stderr, 1)})`);
      refRuns.push(r);
    }
    reference = best(refRuns);
    refJson = reference.fastest.summary;
  }

  // 4. agreement
  let agreement = null;
  if (reference) {
    log('comparing the two outputs tensor by tensor');
    const c = compareCheckpoints(outOurs, outRef);
    agreement = {
      identical: c.identical, tensors: c.tensors, elements: c.elements, differing_elements: c.differing,
      max_ulp: c.maxUlp, worst: c.worst, missing_in_ours_vs_ref: c.extra, extra_in_ours: c.missing, mismatched: c.mismatched,
      threshold_equal: summary.threshold !== null && refJson !== null && f32bits(summary.threshold) === refJson.threshold_bits,
      kept_equal: refJson !== null && summary.kept === refJson.kept,
    };
  }

  // 5. report
  const mib = (x) => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');
  const cpus = os.cpus();
  const machine = `${cpus[0].model.trim()} x ${cpus.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM`;
  const out = [];
  out.push('');
  out.push(`HDR TIES k=10% lambda=3, ${(gen.params / 1e9).toFixed(3)}e9 parameters (bf16; ${(inputBytes / 2 ** 30).toFixed(2)} GiB of inputs), ${machine}`);
  if (loadBefore[0] > cpus.length * 0.5) {
    out.push(`note: load average was ${loadBefore.join(' ')} on ${cpus.length} CPUs before the runs: other work shares the machine, timings are noisy`);
  }
  out.push(`${pad('', 40)}${pad('time s', 10, true)}${pad('peak RSS MiB', 14, true)}`);
  const row = (label, r) => out.push(`${pad(label, 40)}${pad(r.seconds.toFixed(2), 10, true)}${pad(mib(r.rssMiB), 14, true)}`);
  row(`ours (${summary.backend}, ${summary.passes.ran === 1 ? 'one pass' : 'three passes'})`, ours);
  row(`ours, --passes 3`, threePass);
  row('floor (read 3 inputs, write 1 output)', floor);
  out.push(`${pad('ratio ours / floor', 40)}${pad(floorRatio.toFixed(2), 10, true)}${pad('', 14)}   target <= ${TARGETS.floor_ratio}: ${floorRatio <= TARGETS.floor_ratio ? 'met' : 'NOT met'}`);
  if (runs > 1) out.push(`${pad('  median of the rounds\' own ratios', 40)}${pad(medianRoundRatio.toFixed(2), 10, true)}   (rounds: ${roundRatios.map((x) => x.toFixed(2)).join(', ')})`);
  if (!reference) out.push(`reference: not run (${refSkipped})`);
  if (reference) {
    out.push(`${pad(`reference (torch ${refJson ? refJson.torch : '?'}, ${refThreads} threads)`, 40)}${pad(reference.seconds.toFixed(2), 10, true)}${pad(mib(reference.rssMiB), 14, true)}`);
    out.push(`${pad('ratio reference / ours', 40)}${pad((reference.seconds / ours.seconds).toFixed(2), 10, true)}${pad((reference.rssMiB / ours.rssMiB).toFixed(2), 14, true)}`);
    out.push(`${pad('target', 40)}${pad('>= ' + TARGETS.time_ratio, 10, true)}${pad('>= ' + TARGETS.memory_ratio, 14, true)}`);
  }
  out.push('');
  out.push(`ours: region ${summary.regionElements}, keep target ${summary.keepTarget}, kept ${summary.kept} (ties ${summary.ties}), threshold ${summary.threshold}`);
  if (summary.seconds) {
    const s = summary.seconds;
    out.push(`ours, phases: sample ${s.sample.toFixed(2)} s, histogram ${s.histogram.toFixed(2)} s, threshold ${s.threshold.toFixed(2)} s, apply ${s.apply.toFixed(2)} s, patch ${s.patch.toFixed(2)} s, total ${s.total.toFixed(2)} s (inside the process)`);
  }
  out.push(`ours, passes: ${summary.passes.ran} (${summary.passes.reason})${summary.passes.band ? `; band ${JSON.stringify(summary.passes.band)}` : ''}`);
  const same = compareCheckpoints(outOurs, path.join(scratch, 'out-three-pass'));
  out.push(`ours against --passes 3: ${same.identical ? 'identical bytes' : `${same.differing} elements differ`} in ${same.tensors} tensors`);
  if (refJson) {
    const s = refJson.seconds;
    out.push(`reference: kept ${refJson.kept}, threshold ${refJson.threshold}; phases: load ${s.load.toFixed(2)} s, tau+kthvalue ${s.kthvalue.toFixed(2)} s, apply ${s.apply.toFixed(2)} s, save ${s.save.toFixed(2)} s`);
  }
  if (agreement) {
    out.push(agreement.identical
      ? `agreement: identical bytes in all ${agreement.tensors} tensors (${agreement.elements} elements); threshold equal: ${agreement.threshold_equal}, kept equal: ${agreement.kept_equal}`
      : `agreement: ${agreement.differing_elements} of ${agreement.elements} elements differ (max ${agreement.max_ulp} ulp) in ${agreement.tensors} tensors; missing ${agreement.missing_in_ours_vs_ref.length}, extra ${agreement.extra_in_ours.length}, mismatched ${agreement.mismatched.length}; threshold equal: ${agreement.threshold_equal}, kept equal: ${agreement.kept_equal}`);
  }
  const timeRatio = reference ? reference.seconds / ours.seconds : null;
  const memRatio = reference ? reference.rssMiB / ours.rssMiB : null;
  if (reference) {
    out.push(`time_ratio ${timeRatio.toFixed(2)} (target >= ${TARGETS.time_ratio}: ${timeRatio >= TARGETS.time_ratio ? 'met' : 'NOT met'}), ` +
      `memory_ratio ${memRatio.toFixed(2)} (target >= ${TARGETS.memory_ratio}: ${memRatio >= TARGETS.memory_ratio ? 'met' : 'NOT met'})`);
  }
  process.stdout.write(out.join('\n') + '\n');

  const result = {
    time_ratio: timeRatio === null ? null : round(timeRatio, 3),
    floor_ratio: round(floorRatio, 3),
    floor_ratio_rounds: roundRatios.map((x) => round(x, 3)),
    memory_ratio: memRatio === null ? null : round(memRatio, 3),
    targets: TARGETS,
    ours: {
      seconds: round(ours.seconds, 3), peak_rss_mib: round(ours.rssMiB, 1), runs: ours.runs,
      backend: summary.backend, threshold: summary.threshold, kept: summary.kept, keep_target: summary.keepTarget,
      region_elements: summary.regionElements, ties: summary.ties, phases: summary.seconds, passes: summary.passes,
    },
    three_pass: { seconds: round(threePass.seconds, 3), peak_rss_mib: round(threePass.rssMiB, 1), runs: threePass.runs, phases: threePass.fastest.summary.seconds },
    floor: { seconds: round(floor.seconds, 3), peak_rss_mib: round(floor.rssMiB, 1), runs: floor.runs, bytes_read: floor.fastest.summary.bytesRead, bytes_written: floor.fastest.summary.bytesWritten },
    identical_to_three_pass: same.identical,
    reference_skipped: refSkipped,
    reference: reference && {
      seconds: round(reference.seconds, 3), peak_rss_mib: round(reference.rssMiB, 1), runs: reference.runs,
      torch: refJson && refJson.torch, threads: refThreads, threshold: refJson && refJson.threshold, kept: refJson && refJson.kept,
      phases: refJson && refJson.seconds,
    },
    agreement,
    params: gen.params,
    machine,
    load_average_before: loadBefore,
    date: new Date().toISOString(),
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

try {
  main();
} catch (e) {
  process.stderr.write(`[bench:hdr] error: ${e && e.message ? e.message : e}\n`);
  process.exitCode = 1;
}
