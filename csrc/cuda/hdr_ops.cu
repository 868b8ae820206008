// The CUDA backend's HDR ops: the chunk's inputs go to device buffers that grow to the largest
// chunk, the kernels run on one stream, the results come back. One op runs at a time.
#include <cstring>
#include <mutex>
#include <string>

#include "backend/guard.h"
#include "common/dtype.h"
#include "common/hdr_math.h"
#include "cuda/device.cuh"
#include "cuda/hdr_kernels.cuh"
#include "cuda/hdr_ops.cuh"

namespace sa::cuda {
namespace {

using backend::Failure;
using backend::guarded;

std::mutex device_mu;

struct DeviceBuffers {
  void* base = nullptr;
  void* harmful = nullptr;
  void* target = nullptr;
  void* out = nullptr;
  unsigned char* mask = nullptr;
  unsigned* hist = nullptr;
  DeviceCounts* counts = nullptr;
  size_t elems = 0;
  cudaStream_t stream = nullptr;
};
DeviceBuffers buffers;

// The single pass's device memory, grown to the largest chunk: a band entry per element at most,
// and each tile's band count and offset.
struct BandBuffers {
  sa_hdr_band_entry* entries = nullptr;
  unsigned long long* tile_counts = nullptr;
  unsigned long long* tile_offsets = nullptr;
  unsigned long long* total = nullptr;
  DeviceBandCounts* counts = nullptr;
  size_t elems = 0;
};
BandBuffers band_buffers;

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  throw Failure(e == cudaErrorMemoryAllocation ? SA_BACKEND_OUT_OF_MEMORY : SA_BACKEND_DEVICE,
                std::string(what) + ": " + cudaGetErrorString(e));
}

void ensure_buffers(size_t elems) {
  if (!buffers.stream) check(cudaStreamCreateWithFlags(&buffers.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  if (!buffers.hist) {
    check(cudaMalloc(reinterpret_cast<void**>(&buffers.hist), SA_HIST_BUCKETS * sizeof(unsigned)), "cudaMalloc(histogram)");
    check(cudaMalloc(reinterpret_cast<void**>(&buffers.counts), sizeof(DeviceCounts)), "cudaMalloc(counts)");
  }
  if (elems <= buffers.elems) return;
  cudaFree(buffers.base); cudaFree(buffers.harmful); cudaFree(buffers.target); cudaFree(buffers.out); cudaFree(buffers.mask);
  buffers = DeviceBuffers{nullptr, nullptr, nullptr, nullptr, nullptr, buffers.hist, buffers.counts, 0, buffers.stream};
  const size_t bytes = elems * 4;
  check(cudaMalloc(&buffers.base, bytes), "cudaMalloc");
  check(cudaMalloc(&buffers.harmful, bytes), "cudaMalloc");
  check(cudaMalloc(&buffers.target, bytes), "cudaMalloc");
  check(cudaMalloc(&buffers.out, bytes), "cudaMalloc");
  check(cudaMalloc(reinterpret_cast<void**>(&buffers.mask), elems), "cudaMalloc");
  buffers.elems = elems;
}

void ensure_band_buffers(size_t elems) {
  if (!band_buffers.total) {
    check(cudaMalloc(reinterpret_cast<void**>(&band_buffers.total), sizeof(unsigned long long)), "cudaMalloc(band total)");
    check(cudaMalloc(reinterpret_cast<void**>(&band_buffers.counts), sizeof(DeviceBandCounts)), "cudaMalloc(band counts)");
  }
  if (elems <= band_buffers.elems) return;
  cudaFree(band_buffers.entries); cudaFree(band_buffers.tile_counts); cudaFree(band_buffers.tile_offsets);
  band_buffers.entries = nullptr;
  band_buffers.tile_counts = band_buffers.tile_offsets = nullptr;
  band_buffers.elems = 0;
  const size_t tiles = (elems + kBandTile - 1) / kBandTile;
  check(cudaMalloc(reinterpret_cast<void**>(&band_buffers.entries), elems * sizeof(sa_hdr_band_entry)), "cudaMalloc(band entries)");
  check(cudaMalloc(reinterpret_cast<void**>(&band_buffers.tile_counts), tiles * sizeof(unsigned long long)), "cudaMalloc(band tiles)");
  check(cudaMalloc(reinterpret_cast<void**>(&band_buffers.tile_offsets), tiles * sizeof(unsigned long long)), "cudaMalloc(band tiles)");
  band_buffers.elems = elems;
}

// Copies the chunk's host inputs to the device and returns a chunk pointing at device memory.
sa_hdr_chunk upload(const sa_hdr_chunk& host) {
  sa_hdr_chunk dev = host;
  auto copy = [&](const void* src, void* dst, int32_t dtype, const void** field) {
    *field = src ? dst : nullptr;
    if (src)
      check(cudaMemcpyAsync(dst, src, host.n * size_t(dtype_size(DType(dtype))), cudaMemcpyHostToDevice, buffers.stream),
            "cudaMemcpyAsync(upload)");
  };
  copy(host.base, buffers.base, host.base_dtype, &dev.base);
  copy(host.harmful, buffers.harmful, host.harmful_dtype, &dev.harmful);
  copy(host.target, buffers.target, host.target_dtype, &dev.target);
  return dev;
}

void download_counts(sa_hdr_counts* counts) {
  static_assert(sizeof(DeviceCounts) == sizeof(sa_hdr_counts), "DeviceCounts is sa_hdr_counts field for field");
  sa_hdr_counts chunk{};
  check(cudaMemcpyAsync(&chunk, buffers.counts, sizeof chunk, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(counts)");
  check(cudaStreamSynchronize(buffers.stream), "kernel");
  add_counts(counts, chunk);
}

}  // namespace

int host_alloc(size_t bytes, void** out, sa_error* err) {
  return guarded(err, [&] { check(cudaMallocHost(out, bytes ? bytes : 1), "cudaMallocHost"); });
}

void host_free(void* p) { cudaFreeHost(p); }

int hdr_histogram(const sa_hdr_chunk* c, int32_t level, uint32_t prefix, uint64_t* hist, sa_hdr_counts* counts, sa_error* err) {
  return guarded(err, [&] {
    std::lock_guard<std::mutex> lock(device_mu);
    if (c->n == 0) return;
    ensure_buffers(c->n);
    // The target goes up whenever the chunk has one (edit mask outside whole-region tensors).
    const sa_hdr_chunk dev = upload(*c);
    check(cudaMemsetAsync(buffers.hist, 0, SA_HIST_BUCKETS * sizeof(unsigned), buffers.stream), "cudaMemsetAsync");
    check(cudaMemsetAsync(buffers.counts, 0, sizeof(DeviceCounts), buffers.stream), "cudaMemsetAsync");
    check(launch_hdr_histogram(dev, level, prefix, buffers.hist, buffers.counts, buffers.stream), "histogram kernel");
    static thread_local unsigned host_hist[SA_HIST_BUCKETS];
    check(cudaMemcpyAsync(host_hist, buffers.hist, sizeof host_hist, cudaMemcpyDeviceToHost, buffers.stream),
          "cudaMemcpyAsync(histogram)");
    download_counts(counts);
    for (int k = 0; k < SA_HIST_BUCKETS; k++) hist[k] += host_hist[k];
  });
}

int hdr_apply(const sa_hdr_chunk* c, int32_t trim, uint32_t threshold_bits, float lambda, void* out, uint8_t* kept_mask,
              sa_hdr_counts* counts, sa_error* err) {
  return guarded(err, [&] {
    std::lock_guard<std::mutex> lock(device_mu);
    if (c->n == 0) return;
    ensure_buffers(c->n);
    const sa_hdr_chunk dev = upload(*c);
    check(cudaMemsetAsync(buffers.counts, 0, sizeof(DeviceCounts), buffers.stream), "cudaMemsetAsync");
    check(launch_hdr_apply(dev, trim, threshold_bits, lambda, buffers.out, kept_mask ? buffers.mask : nullptr,
                           buffers.counts, buffers.stream),
          "apply kernel");
    const size_t out_bytes = c->n * size_t(dtype_size(DType(c->target_dtype)));
    check(cudaMemcpyAsync(out, buffers.out, out_bytes, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(out)");
    if (kept_mask)
      check(cudaMemcpyAsync(kept_mask, buffers.mask, c->n, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(mask)");
    download_counts(counts);
  });
}

int hdr_apply_band(const sa_hdr_chunk* c, const sa_hdr_band* band, float lambda, void* out, sa_hdr_band_entry* entries,
                   uint64_t cap, sa_hdr_band_counts* counts, sa_error* err) {
  return guarded(err, [&] {
    std::lock_guard<std::mutex> lock(device_mu);
    if (c->n == 0) return;
    ensure_buffers(c->n);
    ensure_band_buffers(c->n);
    const sa_hdr_chunk dev = upload(*c);
    const size_t tiles = (c->n + kBandTile - 1) / kBandTile;
    check(cudaMemsetAsync(buffers.counts, 0, sizeof(DeviceCounts), buffers.stream), "cudaMemsetAsync");
    check(cudaMemsetAsync(band_buffers.counts, 0, sizeof(DeviceBandCounts), buffers.stream), "cudaMemsetAsync");
    check(cudaMemsetAsync(band_buffers.tile_counts, 0, tiles * sizeof(unsigned long long), buffers.stream), "cudaMemsetAsync");
    check(launch_hdr_apply_band(dev, *band, lambda, buffers.out, buffers.counts, band_buffers.counts, band_buffers.tile_counts,
                                band_buffers.tile_offsets, band_buffers.total, band_buffers.entries, cap, buffers.stream),
          "single-pass kernels");
    const size_t out_bytes = c->n * size_t(dtype_size(DType(c->target_dtype)));
    check(cudaMemcpyAsync(out, buffers.out, out_bytes, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(out)");
    unsigned long long total = 0;
    DeviceBandCounts around{};
    check(cudaMemcpyAsync(&total, band_buffers.total, sizeof total, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(band)");
    check(cudaMemcpyAsync(&around, band_buffers.counts, sizeof around, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(band)");
    download_counts(&counts->counts);  // synchronizes the stream
    const unsigned long long written = total < cap ? total : cap;
    if (written)
      check(cudaMemcpyAsync(entries, band_buffers.entries, written * sizeof(sa_hdr_band_entry), cudaMemcpyDeviceToHost, buffers.stream),
            "cudaMemcpyAsync(band entries)");
    check(cudaStreamSynchronize(buffers.stream), "single-pass kernels");
    counts->above += around.above;
    counts->below += around.below;
    counts->band += total;
  });
}

}  // namespace sa::cuda
