#pragma once
// The CPU matrix-multiplication kernels, one set per instruction-set variant, each in its own
// translation unit compiled with that variant's flags (CMakeLists.txt); cpu/cpu_dispatch.cpp
// chooses one at load. Nothing here may run before that choice.
//
// Weights are kept packed (pack_matrix): W [n, k] becomes panels of 16 output columns, panel p
// holding W[16p + l][j] at element j * 16 + l, the columns past n zero. The packed matrix holds
// the same values in the same dtype; its size is packed_matrix_elements(n, k) elements.
//
// The order of operations, which every caller relies on for bit-identical results alone or in any
// batch: out[r][c] = dot(x[r, 0:k], W[c, 0:k]) is one accumulator, starting at 0, that takes
// x[r][j] * W[c][j] for j = 0, 1, ..., k - 1 in turn. The AVX2 and AVX-512 kernels take each with
// one fused multiply-add and agree bit for bit; the baseline multiplies, then adds. No kernel
// depends on the number of rows, on how rows and columns are blocked, or on the thread that
// computes an element.
#include <cstddef>
#include <cstdint>

#include "common/dtype.h"
#include "cpu/hdr_scan.h"

namespace sa::gemm {

constexpr int32_t kPanelColumns = 16;

inline size_t packed_matrix_elements(int32_t n, int32_t k) {
  return size_t((n + kPanelColumns - 1) / kPanelColumns) * kPanelColumns * size_t(k);
}

// dst (packed_matrix_elements(n, k) elements of dt) = src [n, k] of dt, packed. Parallel.
void pack_matrix(const void* src, DType dt, int32_t n, int32_t k, void* dst);

// Writes out[r * ldo + (c - c0)] for r in [0, rows), c in [c0, c1): x is [rows, k] (row stride k),
// w is a packed [n, k] matrix of dtype dt, c0 is a multiple of kPanelColumns and c1 <= n.
using BlockFn = void (*)(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t c0, int32_t c1,
                         float* out, size_t ldo);

// The vector loops of attention over n positions of a cache (rows `stride` elements apart, dtype
// dt, widened exactly), in orders that do not depend on the variant's register width. The AVX2 and
// AVX-512 variants take each product with a fused multiply-add; the baseline multiplies, then adds.
// scores: out[g * n + i] = dot(q_g, k_i) * scale for i < n and each of the n_q queries q_g (dims
//   floats each, one after another), dot summing q[j] * k_i[j] with lane l of 16 taking j = l,
//   l + 16, ... in turn, then the lanes summed (l, l + 8), (l, l + 4), (l, l + 2), (0, 1). The
//   queries (a group of heads that share a key head) read each key once.
// weigh: o[j] = sum over i = 0, 1, ..., n - 1 in turn of (p[i] / sum) * v_i[j], for j < dims.
using ScoresFn = void (*)(const float* q, int32_t n_q, const void* k, size_t stride, DType dt, int32_t n, int32_t dims, float scale,
                          float* out);
using WeighFn = void (*)(const float* p, float sum, const void* v, size_t stride, DType dt, int32_t n, int32_t dims, float* o);
// out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i] for i < n, with the exp of
// gemm_tile.h's exp_lanes: silu within 2.4 ulp of the exact value (measured over [-87, 88]); the
// same operations in every variant.
using SwigluFn = void (*)(const float* gate, const float* up, size_t n, float* out);
// scores[t] = exp(scores[t] - max) for t < n (max over the n scores; exp as in swiglu); returns
// their sum, added in position order.
using SoftmaxFn = float (*)(float* scores, int32_t n);
// dst[i] = src[i] as dt, rounded to nearest even (dtype.h's narrow, bit for bit), for i < n.
using NarrowFn = void (*)(const float* src, DType dt, void* dst, size_t n);

struct Kernel {
  const char* name;
  BlockFn block;
  ScoresFn scores;
  WeighFn weigh;
  SwigluFn swiglu;
  SoftmaxFn softmax;
  NarrowFn narrow;
  HdrScanBf16Fn hdr_scan_bf16;  // null: cpu/hdr_ops.cpp's portable loop
};

// The pair layout, for bf16 weights with activations rounded to bf16 (the engine's matmul precision
// "bf16"): a packed matrix (pack_matrix_pairs) holds panels of 16 columns, panel p holding the
// 32-bit word W[16p + l][2i] | W[16p + l][2i + 1] << 16 at word i * 16 + l (an odd k ends with a
// zero); the activations of a row are words of two bf16 values likewise (to_pairs). Then
// out[r][c] is one float32 accumulator, starting at 0, that takes for i = 0, 1, ... in turn both
// products of pair i in one bf16 dot-product instruction (vdpbf16ps: products exact, bf16 inputs
// below the normal range taken as zero). As for gemm.h's order, nothing depends on the rows in a
// call, the blocking or the thread.
using PairBlockFn = void (*)(const uint32_t* x, int32_t rows, int32_t pairs, const uint32_t* w, int32_t c0, int32_t c1,
                             float* out, size_t ldo);
// dst [rows, (k + 1) / 2] = x [rows, k] rounded to bf16 (to nearest even) in pairs. Parallel.
using ToPairsFn = void (*)(const float* x, size_t rows, int32_t k, uint32_t* dst);
struct PairKernel {
  PairBlockFn block;
  ToPairsFn to_pairs;
};

inline size_t packed_pair_words(int32_t n, int32_t k) {
  return size_t((n + kPanelColumns - 1) / kPanelColumns) * kPanelColumns * size_t((k + 1) / 2);
}
// dst (packed_pair_words(n, k) words) = the bf16 matrix src [n, k] in the pair layout. Parallel.
void pack_matrix_pairs(const uint16_t* src, int32_t n, int32_t k, uint32_t* dst);

Kernel baseline_kernel();
#if defined(__x86_64__) || defined(__i386__)
Kernel avx2_kernel();
Kernel avx512_kernel();
PairKernel avx512_bf16_pair_kernel();  // needs AVX512_BF16 besides the avx512 variant's sets
#endif

}  // namespace sa::gemm
