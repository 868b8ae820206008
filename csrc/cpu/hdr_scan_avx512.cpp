// hdr_scan.h's scan for AVX-512 (F, BW, VL): 32 elements per step, the band's few elements gathered
// from a mask. Built with -mavx512f -mavx512bw -mavx512vl and -ffp-contract=off (CMakeLists.txt);
// runs only when cpu/cpu_dispatch.cpp chose the avx512 variant.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/hdr_scan.h"

namespace sa {
namespace {

__mmask16 nonfinite(__m512i bits, __mmask16 m) {
  const __m512i exponent = _mm512_set1_epi32(0x7f800000);
  return _mm512_mask_cmpeq_epi32_mask(m, _mm512_and_si512(bits, exponent), exponent);
}

uint64_t popcount(__mmask16 m) { return uint64_t(__builtin_popcount(m)); }

// Counts per lane, one add per step instead of a popcount per count; summed at the end.
struct LaneCounts {
  __m512i above = _mm512_setzero_si512(), kept = _mm512_setzero_si512();
  __m512i ties = _mm512_setzero_si512(), overflow = _mm512_setzero_si512();
};

__m512i count_lanes(__m512i counts, __mmask16 m) { return _mm512_mask_add_epi32(counts, m, counts, _mm512_set1_epi32(1)); }

uint64_t sum_lanes(__m512i counts) {
  return uint64_t(_mm512_reduce_add_epi64(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(counts)))) +
         uint64_t(_mm512_reduce_add_epi64(_mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(counts, 1))));
}

// dtype.h's f32_to_bf16 on 16 lanes: round to nearest even, NaN made quiet.
__m256i narrow_bf16(__m512i u) {
  const __m512i high = _mm512_srli_epi32(u, 16);
  const __m512i rounding = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(high, _mm512_set1_epi32(1)));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, rounding), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40))));
}

}  // namespace

namespace {

// One step of 16 lanes (m: the lanes in the run). kCheck: an input of these lanes may be NaN or
// infinite, so they are counted and a NaN tau is left out; without it the caller has made sure
// that none is.
template <bool kCheck>
inline void scan16(__m512i b, __m512i h, __m512i t, __mmask16 m, uint16_t* out, uint32_t index, const __m512i& lo, const __m512i& hi,
                   const __m512i& provisional, const __m512& lambda, LaneCounts& lanes, HdrScanCounts& counts, uint64_t& nan_count,
                   sa_hdr_band_entry* entries, uint64_t& written) {
  const __m512 tau = _mm512_sub_ps(_mm512_castsi512_ps(h), _mm512_castsi512_ps(b));
  const __m512i a = _mm512_and_si512(_mm512_castps_si512(tau), _mm512_set1_epi32(0x7fffffff));
  __mmask16 nan = 0;
  if (kCheck) {
    // Only a non-finite input makes tau NaN: the rare step that holds one counts them all.
    const __mmask16 bad_base = nonfinite(b, m), bad_harmful = nonfinite(h, m), bad_target = nonfinite(t, m);
    if (__builtin_expect((bad_base | bad_harmful | bad_target) != 0, 0)) {
      counts.bad_base += popcount(bad_base);
      counts.bad_harmful += popcount(bad_harmful);
      counts.bad_target += popcount(bad_target);
      nan = _mm512_mask_cmpgt_epu32_mask(m, a, _mm512_set1_epi32(0x7f800000));
      nan_count += popcount(nan);
    }
  }
  const __mmask16 live = _mm512_mask_cmpge_epu32_mask(m & ~nan, a, lo);
  const __mmask16 above = _mm512_mask_cmpge_epu32_mask(live, a, hi);
  const __mmask16 kept = _mm512_mask_cmpge_epu32_mask(live, a, provisional);
  lanes.above = count_lanes(lanes.above, above);
  lanes.kept = count_lanes(lanes.kept, kept);
  lanes.ties = count_lanes(lanes.ties, _mm512_mask_cmpeq_epi32_mask(live, a, provisional));
  const __m512 patched = _mm512_sub_ps(_mm512_castsi512_ps(t), _mm512_mul_ps(lambda, tau));
  const __m256i stored = narrow_bf16(_mm512_castps_si512(patched));
  _mm256_mask_storeu_epi16(out, kept, stored);
  lanes.overflow = count_lanes(lanes.overflow, _mm256_mask_cmpge_epu16_mask(above, _mm256_and_si256(stored, _mm256_set1_epi16(0x7fff)),
                                                                            _mm256_set1_epi16(short(0x7f80))));
  unsigned in_band = live & ~above;
  if (!in_band) return;
  // out may be target: the band's target bits come from the registers, not from memory.
  alignas(64) float taus[16];
  alignas(64) uint32_t targets[16];
  _mm512_store_ps(taus, tau);
  _mm512_store_si512(targets, _mm512_srli_epi32(t, 16));
  while (in_band) {
    const int j = __builtin_ctz(in_band);
    in_band &= in_band - 1;
    entries[written++] = sa_hdr_band_entry{index + uint32_t(j), taus[j], targets[j]};
  }
}

__m512i widen_bf16(__m256i v) { return _mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16); }

// Lanes of 32 bf16 values whose exponent bits are all ones: NaN or infinite.
__mmask32 nonfinite_bf16(__m512i v) {
  const __m512i exponent = _mm512_set1_epi16(0x7f80);
  return _mm512_cmpeq_epi16_mask(_mm512_and_si512(v, exponent), exponent);
}

}  // namespace

uint64_t hdr_scan_bf16_avx512(const uint16_t* base, const uint16_t* harmful, const uint16_t* target, uint16_t* out,
                              uint64_t n, uint32_t first, const HdrScanBand& band, sa_hdr_band_entry* entries,
                              HdrScanCounts& counts) {
  const __m512i lo = _mm512_set1_epi32(int(band.lo)), hi = _mm512_set1_epi32(int(band.hi));
  const __m512i provisional = _mm512_set1_epi32(int(band.provisional));
  const __m512 lambda = _mm512_set1_ps(band.lambda);
  uint64_t written = 0, nan = 0;
  LaneCounts lanes;
  uint64_t i = 0;
  // 32 elements a step; their inputs are checked for non-finite values on the 16-bit patterns at
  // once, and the rare step that holds one goes through the checking steps.
  for (; i + 32 <= n; i += 32) {
    const __m512i b = _mm512_loadu_si512(base + i), h = _mm512_loadu_si512(harmful + i), t = _mm512_loadu_si512(target + i);
    const bool finite = (nonfinite_bf16(b) | nonfinite_bf16(h) | nonfinite_bf16(t)) == 0;
    for (int half = 0; half < 2; half++) {
      const uint64_t at = i + uint64_t(half) * 16;
      const __m512i bw = widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + at)));
      const __m512i hw = widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(harmful + at)));
      const __m512i tw = widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(target + at)));
      if (__builtin_expect(finite, 1))
        scan16<false>(bw, hw, tw, 0xffff, out + at, first + uint32_t(at), lo, hi, provisional, lambda, lanes, counts, nan, entries, written);
      else
        scan16<true>(bw, hw, tw, 0xffff, out + at, first + uint32_t(at), lo, hi, provisional, lambda, lanes, counts, nan, entries, written);
    }
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    scan16<true>(widen_bf16(_mm256_maskz_loadu_epi16(m, base + i)), widen_bf16(_mm256_maskz_loadu_epi16(m, harmful + i)),
                 widen_bf16(_mm256_maskz_loadu_epi16(m, target + i)), m, out + i, first + uint32_t(i), lo, hi, provisional, lambda, lanes,
                 counts, nan, entries, written);
  }
  const uint64_t above = sum_lanes(lanes.above);
  counts.nan += nan;
  counts.above += above;
  counts.below += n - nan - above - written;  // every element is NaN, above, in the band or below it
  counts.kept += sum_lanes(lanes.kept);
  counts.ties += sum_lanes(lanes.ties);
  counts.bad_out += sum_lanes(lanes.overflow);
  return written;
}

}  // namespace sa
#endif
