// RMS normalization and rotary position embedding: one block per row, written to give the CPU
// backend's results (csrc/cpu/engine_ops.cpp) up to the order of the sum of squares.
#include "cuda/norm_rope.cuh"

namespace sa::cuda {
namespace {

constexpr int kNormThreads = 256;

// One block per row: the sum of squares in float32 (per-thread strided partial sums, then the
// deterministic block_sum), then one scaling pass. The same row always gets the same result.
template <DType WT>
__global__ void __launch_bounds__(kNormThreads)
    rmsnorm_kernel(const float* x, const void* __restrict__ w, int hidden, float eps, float* out) {
  __shared__ float red[32];
  const float* xr = x + size_t(blockIdx.x) * size_t(hidden);
  float* o = out + size_t(blockIdx.x) * size_t(hidden);
  float ss[1] = {0.f};
  for (int j = int(threadIdx.x); j < hidden; j += int(blockDim.x)) ss[0] += xr[j] * xr[j];
  block_sum<1>(ss, red);  // also orders every read of xr before any write of o (in place)
  const float inv = 1.0f / sqrtf(ss[0] / float(hidden) + eps);
  for (int j = int(threadIdx.x); j < hidden; j += int(blockDim.x)) o[j] = load_as<WT>(w, size_t(j)) * (xr[j] * inv);
}

// One block per row. Thread i computes the angle of frequency i once, as the CPU does: the float32
// product position * inv_freq[i], its cosine and sine in double precision rounded to float32 (so
// both backends get the correctly rounded value), times attention_scaling; then rotates element
// pair (i, i + half) of every head of the row.
__global__ void rope_kernel(float* x, int heads, int head_dim, const int32_t* __restrict__ positions,
                            const float* __restrict__ inv_freq, float scaling) {
  const int half = head_dim / 2;
  const float pos = float(positions[blockIdx.x]);
  for (int i = int(threadIdx.x); i < half; i += int(blockDim.x)) {
    const float angle = pos * inv_freq[i];
    const float c = float(cos(double(angle))) * scaling;
    const float s = float(sin(double(angle))) * scaling;
    for (int h = 0; h < heads; h++) {
      float* v = x + (size_t(blockIdx.x) * size_t(heads) + size_t(h)) * size_t(head_dim);
      const float a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

}  // namespace

cudaError_t launch_rmsnorm(const float* x, const void* w, DType dt, int rows, int hidden, float eps, float* out,
                           cudaStream_t stream) {
  if (rows <= 0 || hidden <= 0) return cudaSuccess;
  const dim3 grid{unsigned(rows)}, block{unsigned(kNormThreads)};
  switch (dt) {
    case DType::F32: return launch(rmsnorm_kernel<DType::F32>, grid, block, 0, stream, x, w, hidden, eps, out);
    case DType::BF16: return launch(rmsnorm_kernel<DType::BF16>, grid, block, 0, stream, x, w, hidden, eps, out);
    default: return launch(rmsnorm_kernel<DType::F16>, grid, block, 0, stream, x, w, hidden, eps, out);
  }
}

cudaError_t launch_rope(float* x, int rows, int heads, int head_dim, const int32_t* positions, const float* inv_freq,
                        float attention_scaling, cudaStream_t stream) {
  const int half = head_dim / 2;
  if (rows <= 0 || heads <= 0 || half <= 0) return cudaSuccess;
  const int threads = imin(128, (half + 31) / 32 * 32);
  return launch(rope_kernel, dim3(unsigned(rows)), dim3(unsigned(threads)), 0, stream, x, heads, head_dim, positions,
                inv_freq, attention_scaling);
}

}  // namespace sa::cuda
