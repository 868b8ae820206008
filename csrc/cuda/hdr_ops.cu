// The CUDA backend's HDR ops. Each op takes a lane: device buffers that grow to the largest chunk,
// and a stream of its own. Ops called from several threads at once take different lanes, so one
// chunk's copies to and from the device overlap another's kernels.
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

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

struct Lane {
  DeviceBuffers buffers;
  BandBuffers band;
  unsigned host_hist[SA_HIST_BUCKETS];
};

// Lanes are made on demand, at most kMaxLanes, and kept for the process (as device buffers were);
// a caller waits for a free one.
class LanePool {
 public:
  Lane& acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    if (free_.empty() && all_.size() < kMaxLanes) {
      all_.push_back(std::make_unique<Lane>());
      free_.push_back(all_.back().get());
    }
    cv_.wait(lock, [&] { return !free_.empty(); });
    Lane* lane = free_.back();
    free_.pop_back();
    return *lane;
  }
  void release(Lane& lane) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      free_.push_back(&lane);
    }
    cv_.notify_one();
  }

 private:
  static constexpr size_t kMaxLanes = 4;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Lane>> all_;
  std::vector<Lane*> free_;
};
LanePool lanes;

class LaneLease {
 public:
  LaneLease() : lane_(lanes.acquire()) {}
  ~LaneLease() { lanes.release(lane_); }
  LaneLease(const LaneLease&) = delete;
  LaneLease& operator=(const LaneLease&) = delete;
  Lane& operator*() const { return lane_; }

 private:
  Lane& lane_;
};

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  throw Failure(e == cudaErrorMemoryAllocation ? SA_BACKEND_OUT_OF_MEMORY : SA_BACKEND_DEVICE,
                std::string(what) + ": " + cudaGetErrorString(e));
}

void ensure_buffers(DeviceBuffers& buffers, size_t elems) {
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

void ensure_band_buffers(BandBuffers& band_buffers, size_t elems) {
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
sa_hdr_chunk upload(const DeviceBuffers& buffers, const sa_hdr_chunk& host) {
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

void download_counts(const DeviceBuffers& buffers, sa_hdr_counts* counts) {
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
    if (c->n == 0) return;
    const LaneLease lease;
    Lane& lane = *lease;
    DeviceBuffers& buffers = lane.buffers;
    ensure_buffers(buffers, c->n);
    // The target goes up whenever the chunk has one (edit mask outside whole-region tensors).
    const sa_hdr_chunk dev = upload(buffers, *c);
    check(cudaMemsetAsync(buffers.hist, 0, SA_HIST_BUCKETS * sizeof(unsigned), buffers.stream), "cudaMemsetAsync");
    check(cudaMemsetAsync(buffers.counts, 0, sizeof(DeviceCounts), buffers.stream), "cudaMemsetAsync");
    check(launch_hdr_histogram(dev, level, prefix, buffers.hist, buffers.counts, buffers.stream), "histogram kernel");
    check(cudaMemcpyAsync(lane.host_hist, buffers.hist, sizeof lane.host_hist, cudaMemcpyDeviceToHost, buffers.stream),
          "cudaMemcpyAsync(histogram)");
    download_counts(buffers, counts);
    for (int k = 0; k < SA_HIST_BUCKETS; k++) hist[k] += lane.host_hist[k];
  });
}

int hdr_apply(const sa_hdr_chunk* c, int32_t trim, uint32_t threshold_bits, float lambda, void* out, uint8_t* kept_mask,
              sa_hdr_counts* counts, sa_error* err) {
  return guarded(err, [&] {
    if (c->n == 0) return;
    const LaneLease lease;
    DeviceBuffers& buffers = (*lease).buffers;
    ensure_buffers(buffers, c->n);
    const sa_hdr_chunk dev = upload(buffers, *c);
    check(cudaMemsetAsync(buffers.counts, 0, sizeof(DeviceCounts), buffers.stream), "cudaMemsetAsync");
    check(launch_hdr_apply(dev, trim, threshold_bits, lambda, buffers.out, kept_mask ? buffers.mask : nullptr,
                           buffers.counts, buffers.stream),
          "apply kernel");
    const size_t out_bytes = c->n * size_t(dtype_size(DType(c->target_dtype)));
    check(cudaMemcpyAsync(out, buffers.out, out_bytes, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(out)");
    if (kept_mask)
      check(cudaMemcpyAsync(kept_mask, buffers.mask, c->n, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(mask)");
    download_counts(buffers, counts);
  });
}

int hdr_apply_band(const sa_hdr_chunk* c, const sa_hdr_band* band, float lambda, void* out, sa_hdr_band_entry* entries,
                   uint64_t cap, sa_hdr_band_counts* counts, sa_error* err) {
  return guarded(err, [&] {
    if (c->n == 0) return;
    const LaneLease lease;
    DeviceBuffers& buffers = (*lease).buffers;
    BandBuffers& band_buffers = (*lease).band;
    ensure_buffers(buffers, c->n);
    ensure_band_buffers(band_buffers, c->n);
    const sa_hdr_chunk dev = upload(buffers, *c);
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
    download_counts(buffers, &counts->counts);  // synchronizes the stream
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
