// HDR kernels: one grid-stride pass per op; the arithmetic is shared with the CPU backend
// (common/hdr_math.h) and compiled with --fmad=false, so both backends agree bit for bit.
#include "common/hdr_math.h"
#include "cuda/hdr_kernels.cuh"

namespace sa::cuda {
namespace {

constexpr int kThreads = 256;

__device__ void add_counts(DeviceCounts* counts, unsigned long long region, unsigned long long nan,
                           unsigned long long kept, unsigned long long ties) {
  for (int off = 16; off > 0; off >>= 1) {
    region += __shfl_down_sync(0xffffffffu, region, off);
    nan += __shfl_down_sync(0xffffffffu, nan, off);
    kept += __shfl_down_sync(0xffffffffu, kept, off);
    ties += __shfl_down_sync(0xffffffffu, ties, off);
  }
  if ((threadIdx.x & 31) == 0) {
    if (region) atomicAdd(&counts->region, region);
    if (nan) atomicAdd(&counts->nan, nan);
    if (kept) atomicAdd(&counts->kept, kept);
    if (ties) atomicAdd(&counts->ties, ties);
  }
}

template <DType B, DType H, DType T>
__global__ void histogram_kernel(sa_hdr_chunk c, int level, unsigned prefix, unsigned* hist,
                                 DeviceCounts* counts) {
  unsigned long long region = 0, nan = 0;
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < c.n; i += stride) {
    if (!c.whole_region && !(c.edit_mask && load_as<T>(c.target, i) != load_as<B>(c.base, i))) continue;
    region++;
    const unsigned a = abs_bits(load_as<H>(c.harmful, i) - load_as<B>(c.base, i));
    if (is_nan_bits(a)) { nan++; continue; }
    if (level == 0) atomicAdd(&hist[a >> 16], 1u);
    else if ((a >> 16) == prefix) atomicAdd(&hist[a & 0xffffu], 1u);
  }
  add_counts(counts, region, nan, 0, 0);
}

template <DType B, DType H, DType T>
__global__ void apply_kernel(sa_hdr_chunk c, int trim, unsigned threshold_bits, float lambda, void* out,
                             unsigned char* kept_mask, DeviceCounts* counts) {
  unsigned long long region = 0, nan = 0, kept = 0, ties = 0;
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < c.n; i += stride) {
    const float target = load_as<T>(c.target, i);
    bool keep = false;
    float tau = 0.f;
    if (c.whole_region || (c.edit_mask && target != load_as<B>(c.base, i))) {
      region++;
      tau = load_as<H>(c.harmful, i) - load_as<B>(c.base, i);
      const unsigned a = abs_bits(tau);
      if (is_nan_bits(a)) nan++;
      else if (!trim || a >= threshold_bits) {
        keep = true;
        kept++;
        if (trim && a == threshold_bits) ties++;
      }
    }
    if (keep) store_as<T>(out, i, hdr_patch(target, lambda, tau));
    else if constexpr (T == DType::F32) static_cast<float*>(out)[i] = static_cast<const float*>(c.target)[i];
    else static_cast<unsigned short*>(out)[i] = static_cast<const unsigned short*>(c.target)[i];
    if (kept_mask) kept_mask[i] = keep ? 1 : 0;
  }
  add_counts(counts, region, nan, kept, ties);
}

int grid_for(unsigned long long n) {
  unsigned long long blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 65536ull) blocks = 65536ull;
  return blocks ? int(blocks) : 1;
}

}  // namespace

cudaError_t launch_hdr_histogram(const sa_hdr_chunk& c, int level, unsigned prefix, unsigned* hist,
                                 DeviceCounts* counts, cudaStream_t stream) {
  with_dtypes(c, [&](auto bt, auto ht, auto tt) {
    histogram_kernel<decltype(bt)::value, decltype(ht)::value, decltype(tt)::value>
        <<<grid_for(c.n), kThreads, 0, stream>>>(c, level, prefix, hist, counts);
  });
  return cudaGetLastError();
}

cudaError_t launch_hdr_apply(const sa_hdr_chunk& c, int trim, unsigned threshold_bits, float lambda,
                             void* out, unsigned char* kept_mask, DeviceCounts* counts,
                             cudaStream_t stream) {
  with_dtypes(c, [&](auto bt, auto ht, auto tt) {
    apply_kernel<decltype(bt)::value, decltype(ht)::value, decltype(tt)::value>
        <<<grid_for(c.n), kThreads, 0, stream>>>(c, trim, threshold_bits, lambda, out, kept_mask, counts);
  });
  return cudaGetLastError();
}

}  // namespace sa::cuda
