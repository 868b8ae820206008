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

SA_HD float hdr_patch(float target, float lambda, float tau) {
  float scaled = lambda * tau;
  return target - scaled;
}

}  // namespace sa

namespace sa {

template <DType T>
SA_HD float load_as(const void* p, uint64_t i) {
  if constexpr (T == DType::F32) return static_cast<const float*>(p)[i];
  else if constexpr (T == DType::BF16) return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  else return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
}

// Stores v rounded to T; returns 1 when the stored value is NaN or +-Inf (v overflowed T's range).
template <DType T>
SA_HD uint32_t store_as(void* p, uint64_t i, float v) {
  if constexpr (T == DType::F32) {
    static_cast<float*>(p)[i] = v;
    return nonfinite(v);
  } else if constexpr (T == DType::BF16) {
    const uint16_t h = f32_to_bf16(v);
    static_cast<uint16_t*>(p)[i] = h;
    return (h & 0x7fffu) >= 0x7f80u ? 1u : 0u;
  } else {
    const uint16_t h = f32_to_f16(v);
    static_cast<uint16_t*>(p)[i] = h;
    return (h & 0x7fffu) >= 0x7c00u ? 1u : 0u;
  }
}

template <DType V> struct DTypeTag { static constexpr DType value = V; };

// Calls fn(DTypeTag<B>, DTypeTag<H>, DTypeTag<T>) with the chunk's three dtypes as constants.
template <class Fn>
inline void with_dtypes(const sa_hdr_chunk& c, Fn&& fn) {
  auto on_target = [&](auto b, auto h) {
    switch (DType(c.target_dtype)) {
      case DType::F32: fn(b, h, DTypeTag<DType::F32>{}); break;
      case DType::BF16: fn(b, h, DTypeTag<DType::BF16>{}); break;
      default: fn(b, h, DTypeTag<DType::F16>{}); break;
    }
  };
  auto on_harmful = [&](auto b) {
    switch (DType(c.harmful_dtype)) {
      case DType::F32: on_target(b, DTypeTag<DType::F32>{}); break;
      case DType::BF16: on_target(b, DTypeTag<DType::BF16>{}); break;
      default: on_target(b, DTypeTag<DType::F16>{}); break;
    }
  };
  switch (DType(c.base_dtype)) {
    case DType::F32: on_harmful(DTypeTag<DType::F32>{}); break;
    case DType::BF16: on_harmful(DTypeTag<DType::BF16>{}); break;
    default: on_harmful(DTypeTag<DType::F16>{}); break;
  }
}

}  // namespace sa
