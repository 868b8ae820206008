#!/usr/bin/env bash
# Run HERE (the development machine) before a device session: builds everything, then packs what
# the GPU machine needs (it has no Node) into .device/, which `run` carries. See ../../shared/DEVICE.md.
#   bash bench/device/prepare.sh
# then, with the device tool:  run(command="bash bench/device/gpu-check.sh", carry=[".device"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/../.."
npm run build:native
npm run build:ts
# The CUDA-vs-CPU op check (a separate executable; not part of the package).
cmake -S . -B build/checks -DSA_BUILD_CUDA_CHECKS=ON -DSA_OUTPUT_DIR="$PWD/build/checks/out" \
  -DCMAKE_JS_INC="$(node -p "require('node-api-headers').include_dir" 2>/dev/null || echo /usr/include/node)" >/dev/null
cmake --build build/checks --target engine_ops_check -j 2 >/dev/null
mkdir -p .device
[ -f .device/node.xz ] || xz -T2 -6 -c "$(command -v node)" > .device/node.xz
tar --exclude='node_modules/typescript' --exclude='node_modules/@types' --exclude='node_modules/cmake-js' \
    --exclude='node_modules/prebuildify' --exclude='node_modules/node-addon-api' --exclude='node_modules/node-api-headers' \
    -cJf .device/bundle.tar.xz node_modules dist build/Release build/checks/engine_ops_check
du -sh .device/*
