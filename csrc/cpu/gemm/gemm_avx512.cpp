// The AVX-512 kernel variant (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512bf16 -mfma
// -mf16c; runs only after cpu/cpu_dispatch.cpp has checked the CPU and the OS support them). One
// zmm register holds the 16 lanes of an element; weights are widened to float32 in registers
// (bf16: shift into the high half; f16: vcvtph2ps), which is exact, so the products equal the
// AVX2 variant's and the results agree bit for bit.
#include "cpu/gemm/gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/gemm/gemm_tile.h"

namespace sa::gemm {
namespace {

struct Avx512 {
  using Acc = __m512;
  static constexpr int kMR = 4, kNR = 6, kGemvNR = 8;

  static Acc zero() { return _mm512_setzero_ps(); }
  static Acc fma(Acc a, Acc b, Acc acc) { return _mm512_fmadd_ps(a, b, acc); }
  static void store(float* p, Acc v) { _mm512_storeu_ps(p, v); }

  static Acc widen_bf16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

  template <DType D>
  static Acc load(const void* p, size_t i) {
    if constexpr (D == DType::F32) {
      return _mm512_loadu_ps(static_cast<const float*>(p) + i);
    } else {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
      if constexpr (D == DType::BF16) return widen_bf16(h);
      else return _mm512_cvtph_ps(h);
    }
  }

  template <DType D>
  static Acc load_tail(const void* p, size_t i, int n) {
    const __mmask16 m = __mmask16((1u << n) - 1u);
    if constexpr (D == DType::F32) {
      return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
    } else {
      const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i);
      if constexpr (D == DType::BF16) return widen_bf16(h);
      else return _mm512_cvtph_ps(h);
    }
  }

  static float sum(Acc v) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
};

void block_avx512(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t c0, int32_t c1, float* out,
                  size_t ldo, float* scratch) {
  tiles::block_any<Avx512>(x, rows, k, w, dt, c0, c1, out, ldo, scratch);
}

}  // namespace

Kernel avx512_kernel() { return {"avx512", &block_avx512}; }

}  // namespace sa::gemm
#endif
