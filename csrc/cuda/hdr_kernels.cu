// HDR kernels: one grid-stride pass per op; the arithmetic is shared with the CPU backend
// (common/hdr_math.h) and compiled with --fmad=false, so both backends agree bit for bit.
#include "common/hdr_math.h"
#include "cuda/hdr_kernels.cuh"

namespace sa::cuda {
namespace {

constexpr int kThreads = 256;

// Sums v over the warp and adds it to *total once per warp.
__device__ void warp_add(unsigned long long* total, unsigned long long v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  if ((threadIdx.x & 31) == 0 && v) atomicAdd(total, v);
}

__device__ void add_counts(DeviceCounts* counts, const DeviceCounts& local) {
  warp_add(&counts->region, local.region);
  warp_add(&counts->nan, local.nan);
  warp_add(&counts->kept, local.kept);
  warp_add(&counts->ties, local.ties);
  warp_add(&counts->nonfinite_base, local.nonfinite_base);
  warp_add(&counts->nonfinite_harmful, local.nonfinite_harmful);
  warp_add(&counts->nonfinite_target, local.nonfinite_target);
  warp_add(&counts->nonfinite_out, local.nonfinite_out);
}

template <DType B, DType H, DType T>
__global__ void histogram_kernel(sa_hdr_chunk c, int level, unsigned prefix, unsigned* hist,
                                 DeviceCounts* counts) {
  DeviceCounts local{};
  const bool has_target = c.target != nullptr;
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < c.n; i += stride) {
    const float base = load_as<B>(c.base, i), harmful = load_as<H>(c.harmful, i);
    local.nonfinite_base += nonfinite(base);
    local.nonfinite_harmful += nonfinite(harmful);
    float target = 0.f;
    if (has_target) {
      target = load_as<T>(c.target, i);
      local.nonfinite_target += nonfinite(target);
    }
    if (!c.whole_region && !(c.edit_mask && target != base)) continue;
    local.region++;
    const unsigned a = abs_bits(harmful - base);
    if (is_nan_bits(a)) { local.nan++; continue; }
    if (level == 0) atomicAdd(&hist[a >> 16], 1u);
    else if ((a >> 16) == prefix) atomicAdd(&hist[a & 0xffffu], 1u);
  }
  add_counts(counts, local);
}

template <DType B, DType H, DType T>
__global__ void apply_kernel(sa_hdr_chunk c, int trim, unsigned threshold_bits, float lambda, void* out,
                             unsigned char* kept_mask, DeviceCounts* counts) {
  DeviceCounts local{};
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < c.n; i += stride) {
    const float target = load_as<T>(c.target, i), base = load_as<B>(c.base, i), harmful = load_as<H>(c.harmful, i);
    local.nonfinite_target += nonfinite(target);
    local.nonfinite_base += nonfinite(base);
    local.nonfinite_harmful += nonfinite(harmful);
    bool keep = false;
    float tau = 0.f;
    if (c.whole_region || (c.edit_mask && target != base)) {
      local.region++;
      tau = harmful - base;
      const unsigned a = abs_bits(tau);
      if (is_nan_bits(a)) local.nan++;
      else if (!trim || a >= threshold_bits) {
        keep = true;
        local.kept++;
        if (trim && a == threshold_bits) local.ties++;
      }
    }
    if (keep) local.nonfinite_out += store_checked<T>(out, i, hdr_patch(target, lambda, tau));
    else if constexpr (T == DType::F32) static_cast<float*>(out)[i] = static_cast<const float*>(c.target)[i];
    else static_cast<unsigned short*>(out)[i] = static_cast<const unsigned short*>(c.target)[i];
    if (kept_mask) kept_mask[i] = keep ? 1 : 0;
  }
  add_counts(counts, local);
}

int grid_for(unsigned long long n) {
  unsigned long long blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 65536ull) blocks = 65536ull;
  return blocks ? int(blocks) : 1;
}

}  // namespace

cudaError_t launch_hdr_histogram(const sa_hdr_chunk& c, int level, unsigned prefix, unsigned* hist,
                                 DeviceCounts* counts, cudaStream_t stream) {
  cudaError_t e = cudaSuccess;
  with_dtypes(c, [&](auto bt, auto ht, auto tt) {
    e = launch(histogram_kernel<decltype(bt)::value, decltype(ht)::value, decltype(tt)::value>, dim3(grid_for(c.n)),
               dim3(kThreads), 0, stream, c, level, prefix, hist, counts);
  });
  return e;
}

cudaError_t launch_hdr_apply(const sa_hdr_chunk& c, int trim, unsigned threshold_bits, float lambda,
                             void* out, unsigned char* kept_mask, DeviceCounts* counts,
                             cudaStream_t stream) {
  cudaError_t e = cudaSuccess;
  with_dtypes(c, [&](auto bt, auto ht, auto tt) {
    e = launch(apply_kernel<decltype(bt)::value, decltype(ht)::value, decltype(tt)::value>, dim3(grid_for(c.n)),
               dim3(kThreads), 0, stream, c, trim, threshold_bits, lambda, out, kept_mask, counts);
  });
  return e;
}

}  // namespace sa::cuda
