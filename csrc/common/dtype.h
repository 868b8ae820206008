#pragma once
// Element types of safetensors tensors, and exact conversions between the floating ones and float32.
// Usable from host C++ and from CUDA device code, so that both backends round identically.
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define SA_HD __host__ __device__ __forceinline__
#else
#define SA_HD inline
#endif

namespace sa {

enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, OTHER = 3 };

SA_HD int dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

SA_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; std::memcpy(&u, &f, 4); return u;
#endif
}
SA_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; std::memcpy(&f, &u, 4); return f;
#endif
}

SA_HD float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

// Round to nearest even; NaN stays NaN (quiet).
SA_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return uint16_t((u + rounding) >> 16);
}

SA_HD float f16_to_f32(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));  // one instruction; the same value as below (NaN stays NaN)
#else
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bits_f32(sign);
    // subnormal: value = man * 2^-24, exact in float32
    float v = float(man) * 5.9604644775390625e-8f;
    return bits_f32(sign | f32_bits(v));
  }
  return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
#endif
}

// Round to nearest even, with overflow to infinity and gradual underflow.
SA_HD uint16_t f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: infinity
  if (a < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (a < 0x33000000u) return uint16_t(sign);  // < 2^-25 rounds to zero
    uint32_t exp = a >> 23;
    uint32_t man = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - exp;  // 14..24 bits dropped below the half's subnormal unit
    uint32_t half = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1u);
    uint32_t mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half & 1u))) half++;
    return uint16_t(sign | half);
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
  return uint16_t(sign | ((r - 0x38000000u) >> 13));
}

// How an element of each type is held in memory.
template <DType T> struct Storage { using type = uint16_t; };
template <> struct Storage<DType::F32> { using type = float; };

// An element of type T as float32: exact.
template <DType T>
SA_HD float widen(typename Storage<T>::type e) {
  if constexpr (T == DType::F32) return e;
  else if constexpr (T == DType::BF16) return bf16_to_f32(e);
  else return f16_to_f32(e);
}

// float32 as an element of type T: rounded to nearest even.
template <DType T>
SA_HD typename Storage<T>::type narrow(float v) {
  if constexpr (T == DType::F32) return v;
  else if constexpr (T == DType::BF16) return f32_to_bf16(v);
  else return f32_to_f16(v);
}

// Element i of an array of T, as float32.
template <DType T>
SA_HD float load_as(const void* p, size_t i) {
  return widen<T>(static_cast<const typename Storage<T>::type*>(p)[i]);
}

// Stores v as element i of an array of T.
template <DType T>
SA_HD void store_as(void* p, size_t i, float v) {
  static_cast<typename Storage<T>::type*>(p)[i] = narrow<T>(v);
}

// The same with the type known only at run time (OTHER is not a float type: callers refuse it).
SA_HD float load_f32(const void* p, DType t, size_t i) {
  switch (t) {
    case DType::F32: return load_as<DType::F32>(p, i);
    case DType::BF16: return load_as<DType::BF16>(p, i);
    default: return load_as<DType::F16>(p, i);
  }
}

SA_HD void store_f32(void* p, DType t, size_t i, float v) {
  switch (t) {
    case DType::F32: store_as<DType::F32>(p, i, v); break;
    case DType::BF16: store_as<DType::BF16>(p, i, v); break;
    default: store_as<DType::F16>(p, i, v); break;
  }
}

template <DType V> struct DTypeTag { static constexpr DType value = V; };

// Calls fn(DTypeTag<T>{}) with t as a compile-time constant T (host code).
template <class Fn>
inline void with_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::F32: fn(DTypeTag<DType::F32>{}); break;
    case DType::BF16: fn(DTypeTag<DType::BF16>{}); break;
    default: fn(DTypeTag<DType::F16>{}); break;
  }
}

}  // namespace sa
