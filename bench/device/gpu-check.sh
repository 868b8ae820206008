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
timeout 240 node bench/gpu-bench.js --out "$OUT/gpu-bench.json" 2>&1 | tail -25
