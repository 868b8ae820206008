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

// The single-pass op's counts besides DeviceCounts: region elements above and below the band.
struct DeviceBandCounts {
  unsigned long long above, below;
};

// Elements of a chunk that one block of the single-pass kernels takes, in index order.
constexpr unsigned long long kBandTile = 2048;

// The single-pass op (backend_api.h, hdr_apply_band) in three launches: the apply at the provisional
// threshold with the counts and each tile's number of band elements (tile_counts: one per tile,
// zeroed by the caller); their exclusive sums (tile_offsets, and the total in *band_total); then
// the band elements written to entries in index order (those at or past cap are not written). The
// entries' target bits are those of c.target, which the apply does not change (out is another buffer).
cudaError_t launch_hdr_apply_band(const sa_hdr_chunk& c, const sa_hdr_band& band, float lambda, void* out,
                                  DeviceCounts* counts, DeviceBandCounts* band_counts, unsigned long long* tile_counts,
                                  unsigned long long* tile_offsets, unsigned long long* band_total,
                                  sa_hdr_band_entry* entries, unsigned long long cap, cudaStream_t stream);

}  // namespace sa::cuda
