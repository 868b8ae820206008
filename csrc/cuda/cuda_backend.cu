// The CUDA backend library: device discovery, staging between host and device, and the sa_backend
// table that the addon loads with dlopen. Built with a static CUDA runtime, so it needs only the
// driver at run time.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "backend/backend_api.h"
#include "common/dtype.h"
#include "cuda/hdr_kernels.cuh"

namespace sa::cuda {
namespace {

thread_local std::string last_error;
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

bool check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  last_error = std::string(what) + ": " + cudaGetErrorString(e);
  return false;
}

bool ensure_buffers(size_t elems) {
  if (!buffers.stream && !check(cudaStreamCreateWithFlags(&buffers.stream, cudaStreamNonBlocking), "cudaStreamCreate")) return false;
  if (!buffers.hist) {
    if (!check(cudaMalloc(&buffers.hist, SA_HIST_BUCKETS * sizeof(unsigned)), "cudaMalloc(histogram)")) return false;
    if (!check(cudaMalloc(&buffers.counts, sizeof(DeviceCounts)), "cudaMalloc(counts)")) return false;
  }
  if (elems <= buffers.elems) return true;
  cudaFree(buffers.base); cudaFree(buffers.harmful); cudaFree(buffers.target); cudaFree(buffers.out); cudaFree(buffers.mask);
  buffers = DeviceBuffers{nullptr, nullptr, nullptr, nullptr, nullptr, buffers.hist, buffers.counts, 0, buffers.stream};
  const size_t bytes = elems * 4;
  if (!check(cudaMalloc(&buffers.base, bytes), "cudaMalloc") || !check(cudaMalloc(&buffers.harmful, bytes), "cudaMalloc") ||
      !check(cudaMalloc(&buffers.target, bytes), "cudaMalloc") || !check(cudaMalloc(&buffers.out, bytes), "cudaMalloc") ||
      !check(cudaMalloc(&buffers.mask, elems), "cudaMalloc"))
    return false;
  buffers.elems = elems;
  return true;
}

// Copies the chunk's host inputs to the device and returns a chunk pointing at device memory.
bool upload(const sa_hdr_chunk& host, bool need_target, sa_hdr_chunk* dev) {
  *dev = host;
  auto copy = [&](const void* src, void* dst, int32_t dtype, const void** field) {
    if (!src) { *field = nullptr; return true; }
    *field = dst;
    return check(cudaMemcpyAsync(dst, src, host.n * size_t(dtype_size(DType(dtype))), cudaMemcpyHostToDevice, buffers.stream), "cudaMemcpyAsync(upload)");
  };
  return copy(host.base, buffers.base, host.base_dtype, &dev->base) &&
         copy(host.harmful, buffers.harmful, host.harmful_dtype, &dev->harmful) &&
         copy(need_target ? host.target : nullptr, buffers.target, host.target_dtype, &dev->target);
}

bool download_counts(sa_hdr_counts* counts) {
  DeviceCounts dc;
  if (!check(cudaMemcpyAsync(&dc, buffers.counts, sizeof dc, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(counts)")) return false;
  if (!check(cudaStreamSynchronize(buffers.stream), "kernel")) return false;
  counts->region += dc.region;
  counts->nan += dc.nan;
  counts->kept += dc.kept;
  counts->ties += dc.ties;
  counts->nonfinite_base += dc.nonfinite_base;
  counts->nonfinite_harmful += dc.nonfinite_harmful;
  counts->nonfinite_target += dc.nonfinite_target;
  counts->nonfinite_out += dc.nonfinite_out;
  return true;
}

int cuda_describe(char* buf, size_t cap) {
  int dev = 0, driver = 0, runtime = 0;
  cudaDeviceProp prop{};
  if (!check(cudaGetDevice(&dev), "cudaGetDevice") || !check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties")) return 1;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::snprintf(buf, cap,
                "{\"name\":\"cuda\",\"device\":%d,\"gpu\":\"%s\",\"computeCapability\":\"%d.%d\",\"memoryBytes\":%zu,"
                "\"driverVersion\":%d,\"runtimeVersion\":%d}",
                dev, prop.name, prop.major, prop.minor, prop.totalGlobalMem, driver, runtime);
  return 0;
}

void* cuda_host_alloc(size_t bytes) {
  void* p = nullptr;
  if (!check(cudaMallocHost(&p, bytes ? bytes : 1), "cudaMallocHost")) return nullptr;
  return p;
}

void cuda_host_free(void* p) { cudaFreeHost(p); }

int cuda_histogram(const sa_hdr_chunk* c, int32_t level, uint32_t prefix, uint64_t* hist, sa_hdr_counts* counts) {
  std::lock_guard<std::mutex> lock(device_mu);
  if (c->n == 0) return 0;
  sa_hdr_chunk dev;
  // The target goes up whenever the chunk has one (edit mask outside whole-region tensors).
  if (!ensure_buffers(c->n) || !upload(*c, true, &dev)) return 1;
  if (!check(cudaMemsetAsync(buffers.hist, 0, SA_HIST_BUCKETS * sizeof(unsigned), buffers.stream), "cudaMemsetAsync") ||
      !check(cudaMemsetAsync(buffers.counts, 0, sizeof(DeviceCounts), buffers.stream), "cudaMemsetAsync") ||
      !check(launch_hdr_histogram(dev, level, prefix, buffers.hist, buffers.counts, buffers.stream), "histogram kernel"))
    return 1;
  static thread_local unsigned host_hist[SA_HIST_BUCKETS];
  if (!check(cudaMemcpyAsync(host_hist, buffers.hist, sizeof host_hist, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(histogram)") ||
      !download_counts(counts))
    return 1;
  for (int k = 0; k < SA_HIST_BUCKETS; k++) hist[k] += host_hist[k];
  return 0;
}

int cuda_apply(const sa_hdr_chunk* c, int32_t trim, uint32_t threshold_bits, float lambda, void* out,
               uint8_t* kept_mask, sa_hdr_counts* counts) {
  std::lock_guard<std::mutex> lock(device_mu);
  if (c->n == 0) return 0;
  sa_hdr_chunk dev;
  if (!ensure_buffers(c->n) || !upload(*c, true, &dev)) return 1;
  if (!check(cudaMemsetAsync(buffers.counts, 0, sizeof(DeviceCounts), buffers.stream), "cudaMemsetAsync") ||
      !check(launch_hdr_apply(dev, trim, threshold_bits, lambda, buffers.out, kept_mask ? buffers.mask : nullptr,
                              buffers.counts, buffers.stream), "apply kernel"))
    return 1;
  const size_t out_bytes = c->n * size_t(dtype_size(DType(c->target_dtype)));
  if (!check(cudaMemcpyAsync(out, buffers.out, out_bytes, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(out)")) return 1;
  if (kept_mask && !check(cudaMemcpyAsync(kept_mask, buffers.mask, c->n, cudaMemcpyDeviceToHost, buffers.stream), "cudaMemcpyAsync(mask)")) return 1;
  return download_counts(counts) ? 0 : 1;
}

const char* cuda_last_error() { return last_error.c_str(); }

const sa_backend kCudaBackend = {
    SA_BACKEND_ABI_VERSION, "cuda", cuda_describe, cuda_host_alloc, cuda_host_free,
    cuda_histogram, cuda_apply, cuda_last_error,
};

}  // namespace
}  // namespace sa::cuda

extern "C" __attribute__((visibility("default"))) const sa_backend* sa_cuda_backend_v1(char* why, size_t cap) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    std::snprintf(why, cap, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    return nullptr;
  }
  if (count == 0) {
    std::snprintf(why, cap, "the CUDA driver reports no device");
    return nullptr;
  }
  int dev = 0;
  cudaDeviceProp prop{};
  if ((e = cudaSetDevice(dev)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess) {
    std::snprintf(why, cap, "device %d: %s", dev, cudaGetErrorString(e));
    return nullptr;
  }
  if (prop.major < 7 || (prop.major == 7 && prop.minor < 5)) {
    std::snprintf(why, cap, "%s has compute capability %d.%d; this build needs 7.5 or newer", prop.name, prop.major, prop.minor);
    return nullptr;
  }
  return &sa::cuda::kCudaBackend;
}
