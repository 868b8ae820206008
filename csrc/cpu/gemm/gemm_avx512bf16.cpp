// The bf16 dot-product kernels (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512bf16; run
// only after cpu/cpu_dispatch.cpp has found AVX512_BF16). gemm.h's pair layout: activations and
// weights hold two bf16 values in each 32-bit word, and one vdpbf16ps takes both products of a pair.
// tiles::block is reused as is: a word of the pair layout takes the place of a float.
#include "cpu/gemm/gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "common/thread_pool.h"
#include "cpu/gemm/gemm_tile.h"

namespace sa::gemm {
namespace {

struct Avx512Bf16Dot {
  using Vec = __m512;
  using Bcast = __m512;
  static constexpr int kMR = 12, kNV = 2, kGemvNV = 8;

  static Vec zero() { return _mm512_setzero_ps(); }
  // f holds a pair of activations (gemm.h's pair layout), not a float.
  static Bcast bcast(float f) { return _mm512_set1_ps(f); }
  static Vec fma(Bcast pair, Vec w, Vec acc) { return _mm512_dpbf16_ps(acc, __m512bh(pair), __m512bh(w)); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static void store_n(float* p, Vec v, int n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1u), v); }
  static Vec load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1u), p); }
  template <DType D>
  static Vec load(const void* p, size_t i) {
    static_assert(D == DType::F32, "the pair layout is read as 32-bit words");
    return _mm512_loadu_ps(static_cast<const float*>(p) + i);
  }
};

void block_bf16_pairs(const uint32_t* x, int32_t rows, int32_t pairs, const uint32_t* w, int32_t c0, int32_t c1, float* out,
                      size_t ldo) {
  tiles::block<Avx512Bf16Dot, DType::F32>(reinterpret_cast<const float*>(x), rows, pairs, w, c0, c1, out, ldo);
}

// Rounds with vcvtne2ps2bf16: to nearest even, as dtype.h's f32_to_bf16, except that values
// below float32's normal range become zero (the dot product would take them as zero anyway).
void to_bf16_pairs(const float* x, size_t rows, int32_t k, uint32_t* dst) {
  const int32_t pairs = (k + 1) / 2;
  ThreadPool::shared().parallel_for(int64_t(rows), [&](int64_t r) {
    const float* row = x + size_t(r) * size_t(k);
    uint32_t* out = dst + size_t(r) * size_t(pairs);
    int32_t j = 0;
    for (; j + 32 <= k; j += 32) {
      const __m512 lo = _mm512_loadu_ps(row + j), hi = _mm512_loadu_ps(row + j + 16);
      const __m512i packed = __m512i(_mm512_cvtne2ps_pbh(hi, lo));  // lo's values in the low half: row[j, j + 32) in order
      _mm512_storeu_si512(out + j / 2, packed);
    }
    for (; j < k; j += 2) {
      const __m128 two = _mm_setr_ps(row[j], j + 1 < k ? row[j + 1] : 0.0f, 0.0f, 0.0f);
      out[j / 2] = uint32_t(_mm_cvtsi128_si32(__m128i(_mm_cvtneps_pbh(two))));
    }
  }, rows * size_t(k) < (1u << 14) ? int64_t(rows) : 0);
}

}  // namespace

PairKernel avx512_bf16_pair_kernel() { return {&block_bf16_pairs, &to_bf16_pairs}; }

}  // namespace sa::gemm
#endif
