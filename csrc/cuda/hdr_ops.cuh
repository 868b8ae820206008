#pragma once
// The CUDA backend's HDR ops and their staging memory: members of its table (backend_api.h says
// what each does). The ops copy the chunk to the device, run hdr_kernels.cuh and copy back.
#include "backend/backend_api.h"

namespace sa::cuda {

int host_alloc(size_t bytes, void** out, sa_error* err);
void host_free(void* p);
int hdr_histogram(const sa_hdr_chunk* c, int32_t level, uint32_t prefix, uint64_t* hist, sa_hdr_counts* counts, sa_error* err);
int hdr_apply(const sa_hdr_chunk* c, int32_t trim, uint32_t threshold_bits, float lambda, void* out, uint8_t* kept_mask,
              sa_hdr_counts* counts, sa_error* err);
int hdr_apply_band(const sa_hdr_chunk* c, const sa_hdr_band* band, float lambda, void* out, sa_hdr_band_entry* entries,
                   uint64_t cap, sa_hdr_band_counts* counts, sa_error* err);

}  // namespace sa::cuda
