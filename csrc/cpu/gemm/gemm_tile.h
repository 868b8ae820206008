#pragma once
// The blocked GEMM/GEMV shared by the kernel variants, over a vector policy V that each variant
// defines in its own translation unit (in an anonymous namespace, so that every instantiation here
// is local to that unit and compiled with its flags only). V provides:
//   Acc                      16 float lanes (one or more registers)
//   zero(), fma(a, b, acc)   acc + a * b per lane
//   load<D>(p, i)            16 elements of dtype D from element i of p, widened to float
//   load_tail<D>(p, i, n)    the first n < 16 of them, the other lanes zero
//   store(p, acc)            16 floats to p
//   sum(acc)                 the lane sum in the order that gemm.h states
//   kMR, kNR                 rows and columns of the GEMM tile; kGemvNR: columns of the one-row tile
// Every tile computes each of its elements in the order of gemm.h, whatever its shape.
#include <cstddef>
#include <cstdint>

#include "common/dtype.h"
#include "cpu/gemm/gemm.h"

namespace sa::gemm::tiles {

constexpr size_t kPrefetchBytes = 1024;

// out[r * ldo + c] = x[r] . W[w0 + c * ldw ...] for r < MR, c < NR.
template <class V, DType D, int MR, int NR>
void tile(const float* x, size_t ldx, int32_t k, const void* w, size_t w0, size_t ldw, float* out, size_t ldo) {
  typename V::Acc acc[MR][NR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int c = 0; c < NR; c++) acc[r][c] = V::zero();
  int32_t j = 0;
  for (; j + 16 <= k; j += 16) {
    typename V::Acc wv[NR];
    if constexpr (MR == 1) {  // one row streams the weights: ask for them ahead of the loads
      constexpr size_t kSize = D == DType::F32 ? 4 : 2;
#pragma GCC unroll 8
      for (int c = 0; c < NR; c++)
        __builtin_prefetch(static_cast<const char*>(w) + (w0 + size_t(c) * ldw + size_t(j)) * kSize + kPrefetchBytes);
    }
#pragma GCC unroll 8
    for (int c = 0; c < NR; c++) wv[c] = V::template load<D>(w, w0 + size_t(c) * ldw + size_t(j));
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const typename V::Acc xv = V::template load<DType::F32>(x + size_t(r) * ldx, size_t(j));
#pragma GCC unroll 8
      for (int c = 0; c < NR; c++) acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
    }
  }
  if (j < k) {
    const int n = int(k - j);
    typename V::Acc wv[NR];
#pragma GCC unroll 8
    for (int c = 0; c < NR; c++) wv[c] = V::template load_tail<D>(w, w0 + size_t(c) * ldw + size_t(j), n);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const typename V::Acc xv = V::template load_tail<DType::F32>(x + size_t(r) * ldx, size_t(j), n);
#pragma GCC unroll 8
      for (int c = 0; c < NR; c++) acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int c = 0; c < NR; c++) out[size_t(r) * ldo + size_t(c)] = V::sum(acc[r][c]);
}

using TileFn = void (*)(const float*, size_t, int32_t, const void*, size_t, size_t, float*, size_t);

template <class V, DType D, int MR, int NR>
TileFn tile_up_to(int nr) {
  if constexpr (NR == 0) {
    return nullptr;
  } else {
    return nr == NR ? &tile<V, D, MR, NR> : tile_up_to<V, D, MR, NR - 1>(nr);
  }
}

template <class V, DType D, int MR>
TileFn tile_rows_up_to(int mr, int nr) {
  if constexpr (MR == 0) {
    return nullptr;
  } else {
    return mr == MR ? tile_up_to<V, D, MR, V::kNR>(nr) : tile_rows_up_to<V, D, MR - 1>(mr, nr);
  }
}

// Rows of x whose float32 copy stays in the second-level cache while the column panels pass over it.
static inline int32_t chunk_rows(int32_t k, int32_t mr) {
  int32_t rows = (65536 / (k > 0 ? k : 1)) / mr * mr;
  return rows < mr ? mr : rows;
}

template <class V, DType D>
void block(const float* x, int32_t rows, int32_t k, const void* w, int32_t c0, int32_t c1, float* out, size_t ldo,
           float* scratch) {
  const size_t ldk = size_t(k), ldp = (ldk + 15) / 16 * 16;
  if (rows == 1) {  // one row: every weight is read once, several columns in flight
    for (int32_t c = c0; c < c1; c += V::kGemvNR) {
      const int nr = c1 - c < V::kGemvNR ? int(c1 - c) : V::kGemvNR;
      tile_up_to<V, D, 1, V::kGemvNR>(nr)(x, ldk, k, w, size_t(c) * ldk, ldk, out + (c - c0), ldo);
    }
    return;
  }
  const int32_t rc = chunk_rows(k, V::kMR);
  for (int32_t r0 = 0; r0 < rows; r0 += rc) {
    const int32_t r1 = rows - r0 < rc ? rows : r0 + rc;
    // Widen the panel's weights once when several row tiles use them (exact: same products).
    const bool widen = D != DType::F32 && r1 - r0 > V::kMR;
    for (int32_t c = c0; c < c1; c += V::kNR) {
      const int nr = c1 - c < V::kNR ? int(c1 - c) : V::kNR;
      if (widen) {
        for (int cc = 0; cc < nr; cc++) {
          const size_t base = size_t(c + cc) * ldk;
          float* dst = scratch + size_t(cc) * ldp;
          int32_t j = 0;
          for (; j + 16 <= k; j += 16) V::store(dst + j, V::template load<D>(w, base + size_t(j)));
          if (j < k) V::store(dst + j, V::template load_tail<D>(w, base + size_t(j), int(k - j)));
        }
      }
      for (int32_t r = r0; r < r1; r += V::kMR) {
        const int mr = r1 - r < V::kMR ? int(r1 - r) : V::kMR;
        float* o = out + size_t(r) * ldo + size_t(c - c0);
        if (widen)
          tile_rows_up_to<V, DType::F32, V::kMR>(mr, nr)(x + size_t(r) * ldk, ldk, k, scratch, 0, ldp, o, ldo);
        else
          tile_rows_up_to<V, D, V::kMR>(mr, nr)(x + size_t(r) * ldk, ldk, k, w, size_t(c) * ldk, ldk, o, ldo);
      }
    }
  }
}

template <class V>
void block_any(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t c0, int32_t c1, float* out,
               size_t ldo, float* scratch) {
  switch (dt) {
    case DType::F32: block<V, DType::F32>(x, rows, k, w, c0, c1, out, ldo, scratch); break;
    case DType::BF16: block<V, DType::BF16>(x, rows, k, w, c0, c1, out, ldo, scratch); break;
    default: block<V, DType::F16>(x, rows, k, w, c0, c1, out, ldo, scratch); break;
  }
}

}  // namespace sa::gemm::tiles
