// The AVX2 kernel variant (compiled with -mavx2 -mfma -mf16c; runs only after cpu/cpu_dispatch.cpp
// has checked the CPU and the OS support them). Two ymm registers hold the 16 lanes of an element,
// so the order of operations, and the results, are the AVX-512 variant's.
#include "cpu/gemm/gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cstring>

#include "cpu/gemm/gemm_tile.h"

namespace sa::gemm {
namespace {

struct Avx2 {
  struct Acc {
    __m256 lo, hi;
  };
  static constexpr int kMR = 2, kNR = 2, kGemvNR = 4;

  static Acc zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static Acc fma(Acc a, Acc b, Acc acc) { return {_mm256_fmadd_ps(a.lo, b.lo, acc.lo), _mm256_fmadd_ps(a.hi, b.hi, acc.hi)}; }
  static void store(float* p, Acc v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
  }

  template <DType D>
  static __m256 load8(const void* p, size_t i) {
    if constexpr (D == DType::F32) {
      return _mm256_loadu_ps(static_cast<const float*>(p) + i);
    } else {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
      if constexpr (D == DType::BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      else return _mm256_cvtph_ps(h);
    }
  }

  template <DType D>
  static Acc load(const void* p, size_t i) { return {load8<D>(p, i), load8<D>(p, i + 8)}; }

  template <DType D>
  static Acc load_tail(const void* p, size_t i, int n) {
    constexpr size_t kSize = D == DType::F32 ? 4 : 2;
    alignas(32) unsigned char padded[16 * kSize] = {};
    std::memcpy(padded, static_cast<const unsigned char*>(p) + i * kSize, size_t(n) * kSize);
    return load<D>(padded, 0);
  }

  static float sum(Acc v) {
    const __m256 s8 = _mm256_add_ps(v.lo, v.hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
};

void block_avx2(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t c0, int32_t c1, float* out,
                size_t ldo, float* scratch) {
  tiles::block_any<Avx2>(x, rows, k, w, dt, c0, c1, out, ldo, scratch);
}

}  // namespace

Kernel avx2_kernel() { return {"avx2", &block_avx2}; }

}  // namespace sa::gemm
#endif
