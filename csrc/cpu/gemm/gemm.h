#pragma once
// The CPU matrix-multiplication kernels, one set per instruction-set variant, each in its own
// translation unit compiled with that variant's flags (CMakeLists.txt); cpu/cpu_dispatch.cpp
// chooses one at load. Nothing here may run before that choice.
//
// The order of operations, which every caller relies on for bit-identical results alone or in any
// batch: out[r][c] = dot(x[r, 0:k], W[c, 0:k]) is computed in 16 lanes, lane l accumulating
// x[j] * W[c][j] for j = l, l + 16, l + 32, ... in increasing j (the last, partial block padded
// with zeros), then the lanes are summed as ((l[i] + l[i+8]) for i < 8), then (i, i+4), (i, i+2),
// (0, 1). The AVX2 and AVX-512 kernels accumulate with fused multiply-add and agree bit for bit;
// the baseline multiplies and adds. No kernel depends on the number of rows, on how rows and
// columns are blocked, or on the thread that computes an element.
#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

namespace sa::gemm {

// Writes out[r * ldo + (c - c0)] for r in [0, rows), c in [c0, c1): x is [rows, k] (row stride k),
// W is [n, k] in dtype dt. scratch holds kScratchColumns * (k rounded up to
// a multiple of 16) floats, private to the caller's thread.
using BlockFn = void (*)(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t c0, int32_t c1,
                         float* out, size_t ldo, float* scratch);

constexpr int32_t kScratchColumns = 8;

struct Kernel {
  const char* name;
  BlockFn block;
};

Kernel baseline_kernel();
#if defined(__x86_64__) || defined(__i386__)
Kernel avx2_kernel();
Kernel avx512_kernel();
#endif

}  // namespace sa::gemm
