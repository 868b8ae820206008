#pragma once
// The CPU engine ops other than matmul, parallel over rows (or chunks of elements) on the shared
// thread pool. Every element is computed by the same operations in the same order as a serial loop,
// so results do not depend on the thread count, and a row does not depend on the other rows.
// attention and swiglu run on the kernels of the variant they are given.
#include <cstddef>
#include <cstdint>

#include "cpu/gemm/gemm.h"
#include "engine/ops.h"

namespace sa::cpu {

void embed(const int32_t* ids, int32_t rows, const void* table, DType dt, int32_t hidden, float* out);
void rmsnorm(const float* x, const void* w, DType dt, int32_t rows, int32_t hidden, float eps, float* out);
void rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions, const float* inv_freq, float scaling);
void attention(const gemm::Kernel& kernel, const float* q, const engine::AttnSeq* seqs, int32_t n_seqs, const engine::AttnShape& s, float* out);
void swiglu(const gemm::Kernel& kernel, const float* gate, const float* up, size_t n, float* out);
void add(float* x, const float* y, size_t n);
void steer(float* x, int32_t hidden, const engine::SteerSlice* slices, int32_t n_slices);

}  // namespace sa::cpu
