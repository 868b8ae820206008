#pragma once
// out[rows, n] = x[rows, k] . W[n, k]^T (+ bias[n]): float32 activations, F32/BF16/F16 weights,
// float32 accumulation. See gemm.cu for the kernels and their reduction order.
#include "cuda/common.cuh"

namespace sa::cuda {

// Which kernel configuration a call uses, for tests and benchmarks.
struct MatmulPlan {
  int row_tile, col_tile;  // rows and columns of out per warp
  bool vector_loads;       // 16-byte loads (k % 8 == 0 and x, W 16-byte aligned)
  long long blocks;
};
MatmulPlan plan_matmul(const float* x, int rows, int k, const void* w, int n);

// Enqueues the product on stream; returns the launch error. rows, k, n >= 0.
cudaError_t launch_matmul(const float* x, int rows, int k, const void* w, DType dt, int n, const void* bias,
                          DType bias_dt, float* out, cudaStream_t stream);

}  // namespace sa::cuda
