#include "cuda/device.cuh"

#include <cstdio>

#include "backend/guard.h"

namespace sa::cuda {
namespace {

Device find_device() {
  Device d;
  char why[512];
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    d.why = error_text(e);
    return d;
  }
  if (count == 0) {
    d.why = "the CUDA driver reports no device";
    return d;
  }
  const int index = 0;
  cudaDeviceProp prop{};
  if ((e = cudaSetDevice(index)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, index)) != cudaSuccess) {
    std::snprintf(why, sizeof why, "device %d: %s", index, cudaGetErrorString(e));
    d.why = why;
    return d;
  }
  if (prop.major < 7 || (prop.major == 7 && prop.minor < 5)) {
    std::snprintf(why, sizeof why, "%s has compute capability %d.%d; this build needs 7.5 or newer", prop.name, prop.major,
                  prop.minor);
    d.why = why;
    return d;
  }
  d.index = index;
  return d;
}

}  // namespace

const Device& device() {
  static const Device d = find_device();
  return d;
}

int describe(char* buf, size_t cap, sa_error* err) {
  return backend::guarded(err, [&] {
    int dev = 0, driver = 0, runtime = 0;
    cudaDeviceProp prop{};
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, dev);
    if (e != cudaSuccess) throw backend::Failure(SA_BACKEND_DEVICE, "cudaGetDeviceProperties: " + error_text(e));
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    std::snprintf(buf, cap,
                  "{\"name\":\"cuda\",\"device\":%d,\"gpu\":\"%s\",\"computeCapability\":\"%d.%d\",\"memoryBytes\":%zu,"
                  "\"driverVersion\":%d,\"runtimeVersion\":%d}",
                  dev, prop.name, prop.major, prop.minor, prop.totalGlobalMem, driver, runtime);
  });
}

std::string error_text(cudaError_t e) { return std::string(cudaGetErrorString(e)) + " (" + cudaGetErrorName(e) + ")"; }

}  // namespace sa::cuda
