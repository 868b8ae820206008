#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool), after bench/device/prepare.sh here:
#   the test suite with the CUDA backend present (the CUDA tests run instead of skipping),
#   the CUDA-vs-CPU check of every engine op, then the GPU benchmarks; a short table last.
# Everything it measures is written under $OUT (or ./device-out) for bench/results.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
tar -xJf .device/bundle.tar.xz
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
node bin/safety-arithmetic.js doctor | tee "$OUT/doctor.txt"
echo "== engine ops: CUDA against CPU"
timeout 120 build/checks/engine_ops_check 2>&1 | tee "$OUT/engine_ops_check.txt" | tail -30
echo "== tests with the CUDA backend present"
timeout 300 node node_modules/ava/entrypoints/cli.mjs --tap --timeout=4m \
  dist/test/hdr-golden.test.js dist/test/engine.test.js dist/test/icv.test.js > "$OUT/tests.tap" 2>&1
grep -E "^(not ok|ok)" "$OUT/tests.tap" | sed 's/^/  /'
echo "passed $(grep -c '^ok' "$OUT/tests.tap"), failed $(grep -c '^not ok' "$OUT/tests.tap"), skipped $(grep -c '# SKIP' "$OUT/tests.tap")"
echo "== benchmarks"
SCRATCH=${SCRATCH:-/tmp/sa-7b}
[ -f "$SCRATCH/base/config.json" ] || timeout 300 python3 bench/device/make_random_llama.py "$SCRATCH" ${HDR_BENCH:+--hdr}
timeout 240 node bench/gpu-bench.js --model "$SCRATCH/base" --out "$OUT/gpu-bench.json" 2>&1 | tail -25
timeout 180 python3 bench/device/hf_generate.py "$SCRATCH/base" | tee "$OUT/transformers.json"
if [ -n "${HDR_BENCH:-}" ]; then
  echo "== HDR, 7B-shaped, on the GPU"
  start=$(date +%s.%N); cat "$SCRATCH"/{base,harmful,target}/*.safetensors > /dev/null; end=$(date +%s.%N)
  echo "reading the inputs once: $(echo "$end - $start" | bc) s" | tee "$OUT/hdr-read.txt"
  /usr/bin/time -f "%e s, %M KB" node bin/safety-arithmetic.js hdr --base "$SCRATCH/base" --harmful "$SCRATCH/harmful" \
    --target "$SCRATCH/target" --out "$SCRATCH/out" --device cuda --force --json | tail -1 | tee "$OUT/hdr-7b.json"
fi
