#pragma once
// The CPU's HDR ops over host buffers, as backend_api.h describes them (without the sa_error: they
// return 0, or throw). cpu_backend.cpp puts them into the tables.
#include <cstdint>

#include "backend/backend_api.h"
#include "cpu/gemm/gemm.h"

namespace sa::cpu {

struct HdrOps {
  int (*histogram)(const sa_hdr_chunk* c, int32_t level, uint32_t prefix, uint64_t* hist, sa_hdr_counts* counts);
  int (*apply)(const sa_hdr_chunk* c, int32_t trim, uint32_t threshold_bits, float lambda, void* out, uint8_t* kept_mask,
               sa_hdr_counts* counts);
  // On the kernels of a variant (gemm.h: hdr_scan_bf16).
  int (*apply_band)(const gemm::Kernel* kernel, const sa_hdr_chunk* c, const sa_hdr_band* band, float lambda, void* out, sa_hdr_band_entry* entries,
                    uint64_t cap, sa_hdr_band_counts* counts);
};

const HdrOps& hdr_ops();

}  // namespace sa::cpu
