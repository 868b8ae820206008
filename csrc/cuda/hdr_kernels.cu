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

// One region element's place relative to the band (backend_api.h, hdr_apply_band).
enum class Place { outside, nan, below, band, above };

template <DType B, DType H, DType T>
__device__ Place place_of(const sa_hdr_chunk& c, const sa_hdr_band& band, unsigned long long i, float& target, float& tau,
                          DeviceCounts* local) {
  const float base = load_as<B>(c.base, i), harmful = load_as<H>(c.harmful, i);
  target = load_as<T>(c.target, i);
  if (local) {
    local->nonfinite_target += nonfinite(target);
    local->nonfinite_base += nonfinite(base);
    local->nonfinite_harmful += nonfinite(harmful);
  }
  if (!c.whole_region && !(c.edit_mask && target != base)) return Place::outside;
  tau = harmful - base;
  const unsigned a = abs_bits(tau);
  if (is_nan_bits(a)) return Place::nan;
  if (a < band.lo_bits) return Place::below;
  return a < band.hi_bits ? Place::band : Place::above;
}

template <DType B, DType H, DType T>
__global__ void apply_band_kernel(sa_hdr_chunk c, sa_hdr_band band, float lambda, void* out, DeviceCounts* counts,
                                  DeviceBandCounts* band_counts, unsigned long long* tile_counts) {
  DeviceCounts local{};
  unsigned long long above = 0, below = 0, in_band = 0;
  const unsigned long long tile = blockIdx.x * kBandTile;
  for (unsigned long long k = threadIdx.x; k < kBandTile; k += blockDim.x) {
    const unsigned long long i = tile + k;
    if (i >= c.n) break;
    float target = 0.f, tau = 0.f;
    const Place place = place_of<B, H, T>(c, band, i, target, tau, &local);
    bool keep = false;
    if (place != Place::outside) local.region++;
    if (place == Place::nan) local.nan++;
    if (place == Place::below) below++;
    if (place == Place::band) in_band++;
    if (place == Place::above) above++;
    if (place == Place::band || place == Place::above) {
      const unsigned a = abs_bits(tau);
      keep = a >= band.provisional_bits;
      if (keep) {
        local.kept++;
        if (a == band.provisional_bits) local.ties++;
        const unsigned overflowed = store_checked<T>(out, i, hdr_patch(target, lambda, tau));
        if (place == Place::above) local.nonfinite_out += overflowed;
      }
    }
    if (keep) continue;
    if constexpr (T == DType::F32) static_cast<float*>(out)[i] = static_cast<const float*>(c.target)[i];
    else static_cast<unsigned short*>(out)[i] = static_cast<const unsigned short*>(c.target)[i];
  }
  add_counts(counts, local);
  warp_add(&band_counts->above, above);
  warp_add(&band_counts->below, below);
  warp_add(&tile_counts[blockIdx.x], in_band);
}

// Exclusive sums of the tiles' counts, in one block: each thread sums a run of tiles, the block
// scans the runs' sums in shared memory, then each thread writes its run's offsets.
__global__ void band_offsets_kernel(const unsigned long long* tile_counts, unsigned long long tiles,
                                    unsigned long long* tile_offsets, unsigned long long* band_total) {
  __shared__ unsigned long long sums[1024];
  const unsigned long long per = (tiles + blockDim.x - 1) / blockDim.x;
  const unsigned long long first = threadIdx.x * per, last = first + per < tiles ? first + per : tiles;
  unsigned long long own = 0;
  for (unsigned long long t = first; t < last; t++) own += tile_counts[t];
  sums[threadIdx.x] = own;
  __syncthreads();
  for (unsigned step = 1; step < blockDim.x; step <<= 1) {
    const unsigned long long add = threadIdx.x >= step ? sums[threadIdx.x - step] : 0;
    __syncthreads();
    sums[threadIdx.x] += add;
    __syncthreads();
  }
  unsigned long long at = sums[threadIdx.x] - own;
  for (unsigned long long t = first; t < last; t++) {
    tile_offsets[t] = at;
    at += tile_counts[t];
  }
  if (threadIdx.x == blockDim.x - 1) *band_total = sums[threadIdx.x];
}

// Each block writes its tile's band elements at the tile's offset, in index order: a round of
// blockDim.x consecutive elements at a time, their places numbered by a scan in shared memory.
template <DType B, DType H, DType T>
__global__ void band_entries_kernel(sa_hdr_chunk c, sa_hdr_band band, const unsigned long long* tile_offsets,
                                    sa_hdr_band_entry* entries, unsigned long long cap) {
  __shared__ unsigned flags[kThreads];
  const unsigned long long tile = blockIdx.x * kBandTile;
  unsigned long long next = tile_offsets[blockIdx.x];
  for (unsigned long long round = 0; round < kBandTile; round += kThreads) {
    const unsigned long long i = tile + round + threadIdx.x;
    float target = 0.f, tau = 0.f;
    const bool in_band = i < c.n && place_of<B, H, T>(c, band, i, target, tau, nullptr) == Place::band;
    flags[threadIdx.x] = in_band ? 1u : 0u;
    __syncthreads();
    for (unsigned step = 1; step < kThreads; step <<= 1) {
      const unsigned add = threadIdx.x >= step ? flags[threadIdx.x - step] : 0u;
      __syncthreads();
      flags[threadIdx.x] += add;
      __syncthreads();
    }
    const unsigned long long at = next + flags[threadIdx.x] - (in_band ? 1u : 0u);
    if (in_band && at < cap) entries[at] = sa_hdr_band_entry{unsigned(i), tau, raw_bits<T>(c.target, i)};
    next += flags[kThreads - 1];
    __syncthreads();  // flags is written again in the next round
  }
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

cudaError_t launch_hdr_apply_band(const sa_hdr_chunk& c, const sa_hdr_band& band, float lambda, void* out,
                                  DeviceCounts* counts, DeviceBandCounts* band_counts, unsigned long long* tile_counts,
                                  unsigned long long* tile_offsets, unsigned long long* band_total,
                                  sa_hdr_band_entry* entries, unsigned long long cap, cudaStream_t stream) {
  const unsigned long long tiles = (c.n + kBandTile - 1) / kBandTile;
  cudaError_t e = cudaSuccess;
  with_dtypes(c, [&](auto bt, auto ht, auto tt) {
    constexpr DType B = decltype(bt)::value, H = decltype(ht)::value, T = decltype(tt)::value;
    e = launch(apply_band_kernel<B, H, T>, dim3(unsigned(tiles)), dim3(kThreads), 0, stream, c, band, lambda, out, counts,
               band_counts, tile_counts);
    if (e == cudaSuccess)
      e = launch(band_offsets_kernel, dim3(1), dim3(1024), 0, stream, (const unsigned long long*)tile_counts, tiles, tile_offsets,
                 band_total);
    if (e == cudaSuccess)
      e = launch(band_entries_kernel<B, H, T>, dim3(unsigned(tiles)), dim3(kThreads), 0, stream, c, band,
                 (const unsigned long long*)tile_offsets, entries, cap);
  });
  return e;
}

}  // namespace sa::cuda
