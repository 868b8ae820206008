#pragma once
// The single-pass HDR scan over one run of bf16 elements, vectorised per CPU variant (a variant
// without one leaves cpu/hdr_ops.cpp's portable loop to do it). Every element is in the region.
// For i in [0, n): tau = harmful[i] - base[i], a = bits(|tau|); a < lo counts below, a NaN counts
// nan, a >= hi counts above, lo <= a < hi appends {first + i, tau, target[i]} to band (in index
// order; band has room for n), and a >= provisional is kept: out[i] = bf16(target - lambda * tau)
// (multiply, then subtract, rounded to nearest even: dtype.h and hdr_math.h bit for bit), counted,
// its ties (a == provisional) counted, and an overflow to +-Inf counted when a >= hi. Elements not
// kept leave out[i] as it was. The nonfinite counts cover all n elements of each input.
#include <cstdint>

#include "backend/backend_api.h"

namespace sa {

struct HdrScanCounts {
  uint64_t below, above, nan, kept, ties, bad_out, bad_base, bad_harmful, bad_target;
};

struct HdrScanBand {
  uint32_t lo, hi, provisional;
  float lambda;
};

// Returns the number of band entries written.
using HdrScanBf16Fn = uint64_t (*)(const uint16_t* base, const uint16_t* harmful, const uint16_t* target, uint16_t* out,
                                   uint64_t n, uint32_t first, const HdrScanBand& band, sa_hdr_band_entry* entries,
                                   HdrScanCounts& counts);

#if defined(__x86_64__) || defined(__i386__)
uint64_t hdr_scan_bf16_avx512(const uint16_t* base, const uint16_t* harmful, const uint16_t* target, uint16_t* out,
                              uint64_t n, uint32_t first, const HdrScanBand& band, sa_hdr_band_entry* entries,
                              HdrScanCounts& counts);
#endif

}  // namespace sa
