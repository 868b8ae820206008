#pragma once
// What the engine's CUDA kernels share: the CUDA headers, a typed launch helper, loads of 8 weights
// with 16-byte loads (one element: load_as in common/dtype.h), and deterministic warp and block
// reductions.
//
// Built with SA_CUDA_SIM defined (tests only), the same kernels and host code compile as plain C++
// against tests/cuda_sim.h, a CPU stand-in that runs each CUDA thread as an OS thread; see
// tests/engine_ops_check.cu.
#include <cstddef>
#include <cstdint>
#include <utility>

#if defined(SA_CUDA_SIM)
#include "cuda/tests/cuda_sim.h"
#else
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include "common/dtype.h"

namespace sa::cuda {

// Launches kernel<<<grid, block, smem, stream>>>(args...) and returns the launch error, if any.
template <typename Kernel, typename... Args>
cudaError_t launch(Kernel kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
#if defined(SA_CUDA_SIM)
  (void)stream;
  return sim::launch(kernel, grid, block, smem, std::forward<Args>(args)...);
#else
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
#endif
}

__host__ __device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// Eight consecutive elements starting at element i (a multiple of 8; the array 16-byte aligned),
// loaded with 16-byte loads: two float4 for float32, one uint4 for 16-bit types.
template <DType T>
struct Chunk8 {
  uint4 u;
};
template <>
struct Chunk8<DType::F32> {
  float4 a, b;
};

template <DType T>
__device__ __forceinline__ Chunk8<T> load_chunk8(const void* p, size_t i) {
  Chunk8<T> c;
  if constexpr (T == DType::F32) {
    const float4* v = reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
    c.a = v[0];
    c.b = v[1];
  } else {
    c.u = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(p) + i);
  }
  return c;
}

template <DType T>
__device__ __forceinline__ void unpack_chunk8(const Chunk8<T>& c, float (&out)[8]) {
  if constexpr (T == DType::F32) {
    out[0] = c.a.x; out[1] = c.a.y; out[2] = c.a.z; out[3] = c.a.w;
    out[4] = c.b.x; out[5] = c.b.y; out[6] = c.b.z; out[7] = c.b.w;
  } else {
    const uint32_t words[4] = {c.u.x, c.u.y, c.u.z, c.u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      // Little endian: the low half of each 32-bit word is the earlier element.
      if constexpr (T == DType::BF16) {
        out[2 * i] = bits_f32(words[i] << 16);
        out[2 * i + 1] = bits_f32(words[i] & 0xffff0000u);
      } else {
        out[2 * i] = f16_to_f32(uint16_t(words[i] & 0xffffu));
        out[2 * i + 1] = f16_to_f32(uint16_t(words[i] >> 16));
      }
    }
  }
}

// Butterfly sum over the 32 lanes of a warp: every lane ends with the same value, and the order of
// the additions depends only on the lane values (a + b == b + a), never on timing.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// Sums N values over the whole block (blockDim.x a multiple of 32, at most 1024): each warp reduces
// with warp_sum, then every thread adds the per-warp sums in warp order, so all threads get the
// same, deterministic result. red: shared memory of N * 32 floats. Every thread of the block must
// call it (it synchronizes twice).
template <int N>
__device__ __forceinline__ void block_sum(float (&v)[N], float* red) {
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, warps = int(blockDim.x) >> 5;
#pragma unroll
  for (int i = 0; i < N; i++) {
    const float s = warp_sum(v[i]);
    if (lane == 0) red[i * 32 + warp] = s;
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; i++) {
    float total = 0.f;
    for (int w = 0; w < warps; w++) total += red[i * 32 + w];
    v[i] = total;
  }
  __syncthreads();  // red may be reused at once
}

}  // namespace sa::cuda
