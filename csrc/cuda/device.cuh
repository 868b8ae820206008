#pragma once
// The device this library computes on, found once for the HDR ops and the engine alike.
#include <string>

#include "backend/backend_api.h"
#include "cuda/common.cuh"

namespace sa::cuda {

struct Device {
  int index = -1;   // -1: none usable
  std::string why;  // why not, when index is -1
};

// Device 0 when the driver reports one that this build's kernels run on (compute capability 7.5
// or newer). Found at the first call, which also makes it the calling thread's current device.
const Device& device();

// The table's describe: a JSON object naming the device, its compute capability, memory and the
// driver and runtime versions.
int describe(char* buf, size_t cap, sa_error* err);

// "message (cudaErrorName)".
std::string error_text(cudaError_t e);

}  // namespace sa::cuda
