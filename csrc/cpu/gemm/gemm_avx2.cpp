// The AVX2 kernel variant (compiled with -mavx2 -mfma -mf16c; runs only after cpu/cpu_dispatch.cpp
// has checked the CPU and the OS support them). Two ymm registers hold a panel row, each lane
// taking the same fused multiply-adds as in the AVX-512 variant, so the results are its results.
#include "cpu/gemm/gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/gemm/gemm_tile.h"

namespace sa::gemm {
namespace {

struct Avx2 {
  struct Vec {
    __m256 lo, hi;
  };
  using Bcast = __m256;
  static constexpr int kMR = 6, kNV = 1, kGemvNV = 4;

  static Vec zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static Bcast bcast(float f) { return _mm256_set1_ps(f); }
  static Vec fma(Bcast b, Vec w, Vec acc) { return {_mm256_fmadd_ps(b, w.lo, acc.lo), _mm256_fmadd_ps(b, w.hi, acc.hi)}; }
  static Vec fma_lanes(Vec a, Vec b, Vec acc) { return {_mm256_fmadd_ps(a.lo, b.lo, acc.lo), _mm256_fmadd_ps(a.hi, b.hi, acc.hi)}; }
  static Vec splat(float f) { return {_mm256_set1_ps(f), _mm256_set1_ps(f)}; }
  static Vec add(Vec a, Vec b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static Vec sub(Vec a, Vec b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
  static Vec mul(Vec a, Vec b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
  static Vec div(Vec a, Vec b) { return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)}; }
  static Vec min(Vec a, Vec b) { return {_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)}; }
  static Vec max(Vec a, Vec b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
  static __m256 round8(__m256 v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static Vec round(Vec v) { return {round8(v.lo), round8(v.hi)}; }
  static __m256 pow2_8(__m256 n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static constexpr bool kF16Stores = true;
  static void store_f16(uint16_t* p, Vec v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v.lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 8), _mm256_cvtps_ph(v.hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static Vec pow2(Vec n) { return {pow2_8(n.lo), pow2_8(n.hi)}; }
  static float sum(Vec v) {
    const __m256 s8 = _mm256_add_ps(v.lo, v.hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
  static void store(float* p, Vec v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
  }
  static void store_n(float* p, Vec v, int n) {
    alignas(32) float all[16];
    store(all, v);
    for (int l = 0; l < n; l++) p[l] = all[l];
  }
  static Vec load_n(const float* p, int n) {
    alignas(32) float all[16] = {};
    for (int l = 0; l < n; l++) all[l] = p[l];
    return load<DType::F32>(all, 0);
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
  static Vec load(const void* p, size_t i) { return {load8<D>(p, i), load8<D>(p, i + 8)}; }
};

void block_avx2(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t c0, int32_t c1, float* out,
                size_t ldo) {
  tiles::block_any<Avx2>(x, rows, k, w, dt, c0, c1, out, ldo);
}

}  // namespace

Kernel avx2_kernel() { return {"avx2", &block_avx2, &tiles::scores_any<Avx2>, &tiles::weigh_any<Avx2>, &tiles::swiglu<Avx2>,
                                          &tiles::softmax<Avx2>, &tiles::narrow<Avx2>, nullptr}; }

}  // namespace sa::gemm
#endif
