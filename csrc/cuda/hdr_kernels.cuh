#pragma once
// CUDA kernels of the HDR ops over device buffers. No host logic here.
#include "backend/backend_api.h"
#include "cuda/common.cuh"

namespace sa::cuda {

// The device side of sa_hdr_counts, field for field.
struct DeviceCounts {
  unsigned long long region, nan, kept, ties;
  unsigned long long nonfinite_base, nonfinite_harmful, nonfinite_target, nonfinite_out;
};

// hist: SA_HIST_BUCKETS unsigned int counters on the device (one chunk holds < 2^32 elements).
cudaError_t launch_hdr_histogram(const sa_hdr_chunk& c, int level, unsigned prefix, unsigned* hist,
                                 DeviceCounts* counts, cudaStream_t stream);
cudaError_t launch_hdr_apply(const sa_hdr_chunk& c, int trim, unsigned threshold_bits, float lambda,
                             void* out, unsigned char* kept_mask, DeviceCounts* counts,
                             cudaStream_t stream);

}  // namespace sa::cuda
