#pragma once
// The per-element arithmetic of Harm Direction Removal, shared by every backend so that they agree
// bit for bit. Both compilers are told not to contract a - b * c into a fused multiply-add.
#include "backend/backend_api.h"
#include "common/dtype.h"

namespace sa {

SA_HD uint32_t abs_bits(float x) { return f32_bits(x) & 0x7fffffffu; }
SA_HD bool is_nan_bits(uint32_t abs) { return abs > 0x7f800000u; }
// 1 when x is NaN or +-Inf, else 0: added up in the passes that already read x.
SA_HD uint32_t nonfinite(float x) { return abs_bits(x) >= 0x7f800000u ? 1u : 0u; }

// total += c, count by count (chunks and blocks summed on the host).
inline void add_counts(sa_hdr_counts* total, const sa_hdr_counts& c) {
  total->region += c.region;
  total->nan += c.nan;
  total->kept += c.kept;
  total->ties += c.ties;
  total->nonfinite_base += c.nonfinite_base;
  total->nonfinite_harmful += c.nonfinite_harmful;
  total->nonfinite_target += c.nonfinite_target;
  total->nonfinite_out += c.nonfinite_out;
}

SA_HD float hdr_patch(float target, float lambda, float tau) {
  float scaled = lambda * tau;
  return target - scaled;
}

// Stores v rounded to T; returns 1 when the stored value is NaN or +-Inf (v overflowed T's range).
template <DType T>
SA_HD uint32_t store_checked(void* p, uint64_t i, float v) {
  const auto e = narrow<T>(v);
  static_cast<typename Storage<T>::type*>(p)[i] = e;
  if constexpr (T == DType::F32) return nonfinite(e);
  else return (e & 0x7fffu) >= (T == DType::BF16 ? 0x7f80u : 0x7c00u) ? 1u : 0u;
}

// The stored bits of element i (the low 16 for BF16 and F16).
template <DType T>
SA_HD uint32_t raw_bits(const void* p, uint64_t i) {
  if constexpr (T == DType::F32) return f32_bits(static_cast<const float*>(p)[i]);
  else return static_cast<const uint16_t*>(p)[i];
}

// Calls fn(DTypeTag<B>, DTypeTag<H>, DTypeTag<T>) with the chunk's three dtypes as constants.
template <class Fn>
inline void with_dtypes(const sa_hdr_chunk& c, Fn&& fn) {
  with_dtype(DType(c.base_dtype), [&](auto b) {
    with_dtype(DType(c.harmful_dtype), [&](auto h) {
      with_dtype(DType(c.target_dtype), [&](auto t) { fn(b, h, t); });
    });
  });
}

}  // namespace sa
