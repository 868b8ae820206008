// The exported C entry points of steer_api.h: the steering transform on device buffers, and its timing.
#include <cmath>
#include <cstdio>
#include <vector>

#include "cuda/steer.cuh"
#include "cuda/steer_api.h"

namespace {

int fail(char* err, size_t cap, const char* what, cudaError_t e) {
  if (err && cap) std::snprintf(err, cap, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
  return 1;
}

int fail_msg(char* err, size_t cap, const char* what) {
  if (err && cap) std::snprintf(err, cap, "%s", what);
  return 1;
}

__global__ void fill_kernel(uint32_t* p, size_t words, uint32_t seed, uint32_t mask) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < words; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
    // Small finite floats in every 16-bit half: exponent bits constrained by the mask.
    p[i] = h & mask;
  }
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int sa_cuda_steer_rows(void* x, int32_t dtype, int64_t rows, int32_t hidden,
                                                                         const float* const* vectors, const float* alphas, int32_t n,
                                                                         void* stream, char* err, size_t err_cap) {
  if (n < 0 || n > sa::engine::kMaxSteerVectors) return fail_msg(err, err_cap, "sa_cuda_steer_rows: n must be 0..8");
  if (dtype != SA_STEER_F32 && dtype != SA_STEER_F16 && dtype != SA_STEER_BF16) return fail_msg(err, err_cap, "sa_cuda_steer_rows: unknown dtype");
  sa::engine::SteerSlice slice{};
  for (int32_t i = 0; i < n; i++)
    if (!std::isfinite(alphas[i])) return fail_msg(err, err_cap, "sa_cuda_steer_rows: every alpha must be finite (not NaN or infinity)");
  for (int32_t i = 0; i < n; i++) {
    if (alphas[i] == 0.f) continue;
    slice.vectors[slice.n] = vectors[i];
    slice.alphas[slice.n] = alphas[i];
    slice.n++;
  }
  if (slice.n == 0) return 0;
  const sa::DType dt = dtype == SA_STEER_F32 ? sa::DType::F32 : dtype == SA_STEER_BF16 ? sa::DType::BF16 : sa::DType::F16;
  const cudaError_t e = sa::cuda::launch_steer_rows(x, dt, rows, hidden, slice, static_cast<cudaStream_t>(stream));
  return e == cudaSuccess ? 0 : fail(err, err_cap, "sa_cuda_steer_rows", e);
}

extern "C" __attribute__((visibility("default"))) int sa_cuda_bench_steer(int64_t rows, int32_t hidden, int32_t dtype, int32_t iters,
                                                                          double* steer_us, double* copy_us, char* err, size_t err_cap) {
  const size_t es = dtype == SA_STEER_F32 ? 4 : 2;
  const size_t bytes = size_t(rows) * size_t(hidden) * es;
  void *x = nullptr, *y = nullptr;
  float* v = nullptr;
  cudaEvent_t a = nullptr, b = nullptr;
  cudaError_t e = cudaMalloc(&x, bytes);
  if (e == cudaSuccess) e = cudaMalloc(&y, bytes);
  if (e == cudaSuccess) e = cudaMalloc(&v, size_t(hidden) * 4);
  if (e == cudaSuccess) e = cudaEventCreate(&a);
  if (e == cudaSuccess) e = cudaEventCreate(&b);
  int rc = 0;
  if (e != cudaSuccess) {
    rc = fail(err, err_cap, "sa_cuda_bench_steer: setup", e);
  } else {
    // Finite values of magnitude below 8 in any dtype: most exponent bits of each element cleared.
    const uint32_t mask = es == 4 ? 0xC0FFFFFFu : 0xC0FFC0FFu;
    fill_kernel<<<1024, 256>>>(static_cast<uint32_t*>(x), bytes / 4, 1u, mask);
    fill_kernel<<<64, 256>>>(reinterpret_cast<uint32_t*>(v), size_t(hidden), 2u, 0xC0FFFFFFu);
    const float* vectors[1] = {v};
    const float alphas[1] = {0.12f};
    for (int w = 0; w < 3 && rc == 0; w++) rc = sa_cuda_steer_rows(x, dtype, rows, hidden, vectors, alphas, 1, nullptr, err, err_cap);
    float ms = 0.f;
    if (rc == 0) {
      cudaEventRecord(a);
      for (int i = 0; i < iters && rc == 0; i++) rc = sa_cuda_steer_rows(x, dtype, rows, hidden, vectors, alphas, 1, nullptr, err, err_cap);
      cudaEventRecord(b);
      e = cudaEventSynchronize(b);
      if (e != cudaSuccess) rc = fail(err, err_cap, "sa_cuda_bench_steer: steering", e);
      cudaEventElapsedTime(&ms, a, b);
      *steer_us = 1000.0 * ms / iters;
    }
    if (rc == 0) {
      cudaMemcpy(y, x, bytes, cudaMemcpyDeviceToDevice);
      cudaEventRecord(a);
      for (int i = 0; i < iters; i++) cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice);
      cudaEventRecord(b);
      e = cudaEventSynchronize(b);
      if (e != cudaSuccess) rc = fail(err, err_cap, "sa_cuda_bench_steer: copy", e);
      cudaEventElapsedTime(&ms, a, b);
      *copy_us = 1000.0 * ms / iters;
    }
  }
  cudaFree(x); cudaFree(y); cudaFree(v);
  if (a) cudaEventDestroy(a);
  if (b) cudaEventDestroy(b);
  return rc;
}
