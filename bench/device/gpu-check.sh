#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool), after bench/device/prepare.sh here, in one call:
#   the CUDA-vs-CPU checks (every engine op with its kernel timings, then the whole forward pass),
#   the tests that exercise the CUDA backend with SAFETY_ARITHMETIC_DEVICE=cuda (nothing falls back
#   to the CPU unnoticed), the GPU benchmarks beside transformers' generate on the same weights, and
#   a short table last (bench/device/summary.js).
# Each step gets at most what is left of BUDGET seconds (default 520, inside the call's timeout_s=540
# that prepare.sh names), so the table always comes. Everything it measures is written under $OUT
# (or ./device-out) for bench/results.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
BUDGET=${BUDGET:-520}
LIB=build/Release/libsafety_arithmetic_cuda.so

# step SECONDS COMMAND...: COMMAND with a timeout of SECONDS, or less so that 20 s stay for the table.
step() {
  local limit=$1 left=$((BUDGET - SECONDS - 20))
  shift
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    echo "skipped, out of time: $*"
    return 124
  fi
  timeout --kill-after=10 "$limit" "$@"
}

xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
tar -xJf .device/bundle.tar.xz
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
node bin/safety-arithmetic.js doctor | tee "$OUT/doctor.txt"
echo "== engine ops: CUDA against CPU"
step 120 build/checks/engine_ops_check "$LIB" --bench > "$OUT/engine_ops_check.txt" 2>&1
grep -E "FAIL|^[0-9]+ checks|^(matmul|attention decode|steer \[)" "$OUT/engine_ops_check.txt" | tail -40
echo "== the forward pass: CUDA against CPU"
step 120 build/checks/model_check test/fixtures/llama-tiny/model "$LIB" > "$OUT/model_check.txt" 2>&1
grep -E "FAIL|^[0-9]+ checks" "$OUT/model_check.txt"
echo "== tests with the CUDA backend forced"
step 300 env SAFETY_ARITHMETIC_DEVICE=cuda node node_modules/ava/entrypoints/cli.mjs --tap --timeout=4m \
  dist/test/hdr-golden.test.js dist/test/engine.test.js dist/test/icv.test.js dist/test/kv-cache-dtype.test.js \
  > "$OUT/tests.tap" 2>&1
grep -E "^(not ok|ok)" "$OUT/tests.tap" | sed 's/^/  /'
echo "== benchmarks"
SCRATCH=${SCRATCH:-/tmp/sa-7b}
[ -f "$SCRATCH/base/config.json" ] || step 240 python3 bench/device/make_random_llama.py "$SCRATCH" ${HDR_BENCH:+--hdr}
step 240 node bench/gpu-bench.js --model "$SCRATCH/base" --out "$OUT/gpu-bench.json" 2>&1 | tail -25
step 180 python3 bench/device/hf_generate.py "$SCRATCH/base" | tee "$OUT/transformers.json"
if [ -n "${HDR_BENCH:-}" ]; then
  echo "== HDR, 7B-shaped, on the GPU"
  start=$(date +%s.%N); cat "$SCRATCH"/{base,harmful,target}/*.safetensors > /dev/null; end=$(date +%s.%N)
  echo "reading the inputs once: $(echo "$end - $start" | bc) s" | tee "$OUT/hdr-read.txt"
  step 240 /usr/bin/time -f "%e s, %M KB" node bin/safety-arithmetic.js hdr --base "$SCRATCH/base" --harmful "$SCRATCH/harmful" \
    --target "$SCRATCH/target" --out "$SCRATCH/out" --device cuda --force --json | tail -1 | tee "$OUT/hdr-7b.json"
  rm -rf "$SCRATCH/out-floor"
  step 120 /usr/bin/time -f "%e s, %M KB" node bench/hdr-floor.js "$SCRATCH/base" "$SCRATCH/harmful" "$SCRATCH/target" \
    "$SCRATCH/out-floor" --device cuda | tee "$OUT/hdr-7b-floor.json"
fi
node bench/device/summary.js "$OUT"
