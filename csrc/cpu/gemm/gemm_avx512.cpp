// The AVX-512 kernel variant (compiled with -mavx512f -mavx512bw -mavx512vl -mfma -mf16c; runs
// only after cpu/cpu_dispatch.cpp has checked the CPU and the OS support them). One zmm register
// holds a panel row; weights are widened to float32 in registers (bf16: shift into the high half;
// f16: vcvtph2ps), which is exact, so the products equal the AVX2 variant's and the results agree
// bit for bit.
#include "cpu/gemm/gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/gemm/gemm_tile.h"

namespace sa::gemm {
namespace {

struct Avx512 {
  using Vec = __m512;
  using Bcast = __m512;
  static constexpr int kMR = 12, kNV = 2, kGemvNV = 8;

  static Vec zero() { return _mm512_setzero_ps(); }
  static Bcast bcast(float f) { return _mm512_set1_ps(f); }
  static Vec fma(Bcast b, Vec w, Vec acc) { return _mm512_fmadd_ps(b, w, acc); }
  static Vec fma_lanes(Vec a, Vec b, Vec acc) { return _mm512_fmadd_ps(a, b, acc); }
  static Vec splat(float f) { return _mm512_set1_ps(f); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
  static Vec min(Vec a, Vec b) { return _mm512_min_ps(a, b); }
  static Vec max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
  static Vec round(Vec v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static constexpr bool kF16Stores = true;
  static void store_f16(uint16_t* p, Vec v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static Vec pow2(Vec n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static float sum(Vec v) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static void store_n(float* p, Vec v, int n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1u), v); }
  static Vec load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1u), p); }

  template <DType D>
  static Vec load(const void* p, size_t i) {
    if constexpr (D == DType::F32) {
      return _mm512_loadu_ps(static_cast<const float*>(p) + i);
    } else {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
      if constexpr (D == DType::BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
      else return _mm512_cvtph_ps(h);
    }
  }
};

void block_avx512(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t c0, int32_t c1, float* out,
                  size_t ldo) {
  tiles::block_any<Avx512>(x, rows, k, w, dt, c0, c1, out, ldo);
}

}  // namespace

Kernel avx512_kernel() { return {"avx512", &block_avx512, &tiles::scores_any<Avx512>, &tiles::weigh_any<Avx512>,
                              &tiles::swiglu<Avx512>, &tiles::softmax<Avx512>, &tiles::narrow<Avx512>,
                              &hdr_scan_bf16_avx512}; }

}  // namespace sa::gemm
#endif
