// Embedding lookup, SwiGLU and residual add: memory-bound, one element per thread per iteration of a
// grid-stride loop, the CPU's formulas exactly.
#include "cuda/elementwise.cuh"

namespace sa::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kMaxBlocks = size_t(1) << 16;

unsigned blocks_for(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return unsigned(b < kMaxBlocks ? b : kMaxBlocks);
}

// One block per row.
template <DType T>
__global__ void __launch_bounds__(kThreads)
    embed_kernel(const int32_t* __restrict__ ids, const void* __restrict__ table, int hidden, float* __restrict__ out) {
  const size_t src = size_t(ids[blockIdx.x]) * size_t(hidden);
  float* o = out + size_t(blockIdx.x) * size_t(hidden);
  for (int j = int(threadIdx.x); j < hidden; j += int(blockDim.x)) o[j] = load_as<T>(table, src + size_t(j));
}

__global__ void __launch_bounds__(kThreads)
    swiglu_kernel(const float* gate, const float* up, size_t n, float* out) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = gate[i];
    out[i] = (g / (1.0f + expf(-g))) * up[i];
  }
}

__global__ void __launch_bounds__(kThreads) add_kernel(float* x, const float* y, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) x[i] += y[i];
}

}  // namespace

cudaError_t launch_embed(const int32_t* ids, int rows, const void* table, DType dt, int hidden, float* out,
                         cudaStream_t stream) {
  if (rows <= 0 || hidden <= 0) return cudaSuccess;
  const dim3 grid{unsigned(rows)}, block{unsigned(kThreads)};
  switch (dt) {
    case DType::F32: return launch(embed_kernel<DType::F32>, grid, block, 0, stream, ids, table, hidden, out);
    case DType::BF16: return launch(embed_kernel<DType::BF16>, grid, block, 0, stream, ids, table, hidden, out);
    default: return launch(embed_kernel<DType::F16>, grid, block, 0, stream, ids, table, hidden, out);
  }
}

cudaError_t launch_swiglu(const float* gate, const float* up, size_t n, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return launch(swiglu_kernel, dim3(blocks_for(n)), dim3(kThreads), 0, stream, gate, up, n, out);
}

cudaError_t launch_add(float* x, const float* y, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return launch(add_kernel, dim3(blocks_for(n)), dim3(kThreads), 0, stream, x, y, n);
}

}  // namespace sa::cuda
