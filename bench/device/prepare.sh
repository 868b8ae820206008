#!/usr/bin/env bash
# Run HERE (the development machine) before a device session: builds everything, then packs what
# the GPU machine needs (it has no Node) into .device/, which `run` carries. See ../../shared/DEVICE.md.
#   bash bench/device/prepare.sh
# then, with the device tool:  run(command="bash bench/device/gpu-check.sh", carry=[".device"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/../.."
npm run build:native
npm run build:ts
# The CUDA-vs-CPU checks (separate executables, not part of the package): host code only, they
# dlopen() the CUDA library and take the CPU ops from the core library the native build made.
mkdir -p build/checks
for check in engine_ops_check model_check; do
  g++ -std=c++17 -O2 -ffp-contract=off -Icsrc -x c++ "csrc/cuda/tests/$check.cu" -x none build/cmake/libsa_core.a \
    -o "build/checks/$check" -ldl -lpthread
done
mkdir -p .device
[ -f .device/node.xz ] || xz -T2 -6 -c "$(command -v node)" > .device/node.xz
tar --exclude='node_modules/typescript' --exclude='node_modules/@types' --exclude='node_modules/cmake-js' \
    --exclude='node_modules/prebuildify' --exclude='node_modules/node-addon-api' --exclude='node_modules/node-api-headers' \
    -cJf .device/bundle.tar.xz node_modules dist build/Release build/checks/engine_ops_check build/checks/model_check
du -sh .device/*
