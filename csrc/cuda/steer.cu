// The Safety Alignment transform of each steered row x (common/steer_constants.h; csrc/cpu/steer_math.h
// is the reference). One block per row, float32:
//   pass 1: the reductions x.x, v_i.v_i and x.v_i (per-thread partial sums, then block_sum);
//   pass 2: y_j = x_j / ||x|| - kSteerStrength/n * sum_i coef_i v_ij, reduced to ||y||^2;
//   pass 3: the same y_j again (identical operations), written back as y_j * ||x|| / ||y||.
// Passes 2 and 3 re-read the row and the vectors, which the first pass left in L1/L2, so the row
// crosses DRAM about once each way. Each element j belongs to one thread in every pass, so writing
// x in place in pass 3 cannot race with another thread's reads.
#include "common/steer_constants.h"
#include "cuda/steer.cuh"

namespace sa::cuda {
namespace {

using engine::kMaxSteerVectors;
using engine::SteerSlice;

constexpr int kThreads = 256;
constexpr int kSums = 1 + 2 * kMaxSteerVectors;  // x.x, v_i.v_i, x.v_i

__device__ __forceinline__ float steered(float xj, size_t j, const float* const (&v)[kMaxSteerVectors],
                                         const float (&coef)[kMaxSteerVectors], int n, float inv_x, float scale) {
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxSteerVectors; i++)
    if (i < n) acc += coef[i] * v[i][j];
  return xj * inv_x - scale * acc;
}

// The transform of one row by one block; X is the row's element type (math in float32).
template <DType X>
__device__ __forceinline__ void steer_row_block(void* xr, int hidden, const SteerSlice& sl, float* red) {
  const int n = sl.n;
  const float* v[kMaxSteerVectors];
  float alpha[kMaxSteerVectors];
#pragma unroll
  for (int i = 0; i < kMaxSteerVectors; i++) {
    v[i] = i < n ? sl.vectors[i] : nullptr;
    alpha[i] = i < n ? sl.alphas[i] : 0.f;
  }

  // Pass 1.
  float r[kSums];
#pragma unroll
  for (int i = 0; i < kSums; i++) r[i] = 0.f;
  for (int j = int(threadIdx.x); j < hidden; j += kThreads) {
    const float xj = load_as<X>(xr, size_t(j));
    r[0] += xj * xj;
#pragma unroll
    for (int i = 0; i < kMaxSteerVectors; i++) {
      if (i < n) {
        const float vj = v[i][j];
        r[1 + i] += vj * vj;
        r[1 + kMaxSteerVectors + i] += xj * vj;
      }
    }
  }
  block_sum<kSums>(r, red);
  const float norm_x = sqrtf(r[0]);
  const float inv_x = steer_inv_norm(norm_x);
  float coef[kMaxSteerVectors];
#pragma unroll
  for (int i = 0; i < kMaxSteerVectors; i++) {
    coef[i] = 0.f;
    if (i < n) coef[i] = steer_coef(alpha[i], r[1 + kMaxSteerVectors + i], norm_x, sqrtf(r[1 + i]));
  }
  const float scale = steer_scale(n);

  // Pass 2.
  float yy[1] = {0.f};
  for (int j = int(threadIdx.x); j < hidden; j += kThreads) {
    const float y = steered(load_as<X>(xr, size_t(j)), size_t(j), v, coef, n, inv_x, scale);
    yy[0] += y * y;
  }
  block_sum<1>(yy, red);
  const float out_scale = steer_out_scale(norm_x, yy[0]);

  // Pass 3.
  for (int j = int(threadIdx.x); j < hidden; j += kThreads)
    store_as<X>(xr, size_t(j), steered(load_as<X>(xr, size_t(j)), size_t(j), v, coef, n, inv_x, scale) * out_scale);
}

// The engine's kernel: float32 activations, one block per (slice, row) work item.
// (kThreads, 4): 64 registers and no spills on every target architecture.
__global__ void __launch_bounds__(kThreads, 4)
    steer_kernel(float* x, int hidden, const SteerSlice* __restrict__ slices, const SteerItem* __restrict__ items) {
  __shared__ float red[kSums * 32];
  const SteerItem it = items[blockIdx.x];
  const SteerSlice& sl = slices[it.slice];
  steer_row_block<DType::F32>(x + size_t(sl.row_offset + it.row) * size_t(hidden), hidden, sl, red);
}

// The standalone kernel: every row of x [rows, hidden] with the same vectors; rows strided over the grid.
template <DType X>
__global__ void __launch_bounds__(kThreads, 4) steer_rows_kernel(void* x, int64_t rows, int hidden, SteerSlice sl) {
  __shared__ float red[kSums * 32];
  const size_t es = X == DType::F32 ? 4 : 2;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    steer_row_block<X>(static_cast<char*>(x) + size_t(r) * size_t(hidden) * es, hidden, sl, red);
}

}  // namespace

cudaError_t launch_steer(float* x, int hidden, const SteerSlice* slices, const SteerItem* items, int n_items,
                         cudaStream_t stream) {
  if (n_items <= 0 || hidden <= 0) return cudaSuccess;
  return launch(steer_kernel, dim3(unsigned(n_items)), dim3(kThreads), 0, stream, x, hidden, slices, items);
}

cudaError_t launch_steer_rows(void* x, DType dtype, int64_t rows, int hidden, const SteerSlice& slice, cudaStream_t stream) {
  if (rows <= 0 || hidden <= 0 || slice.n <= 0) return cudaSuccess;
  const unsigned grid = unsigned(rows < 65535 * 8 ? rows : 65535 * 8);
  switch (dtype) {
    case DType::F32: return launch(steer_rows_kernel<DType::F32>, dim3(grid), dim3(kThreads), 0, stream, x, rows, hidden, slice);
    case DType::BF16: return launch(steer_rows_kernel<DType::BF16>, dim3(grid), dim3(kThreads), 0, stream, x, rows, hidden, slice);
    default: return launch(steer_rows_kernel<DType::F16>, dim3(grid), dim3(kThreads), 0, stream, x, rows, hidden, slice);
  }
}

}  // namespace sa::cuda
