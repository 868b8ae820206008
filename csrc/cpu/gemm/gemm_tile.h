#pragma once
// The blocked GEMM/GEMV over packed weights (gemm.h), shared by the kernel variants, over a vector
// policy V that each variant defines in its own translation unit (in an anonymous namespace, so
// that every instantiation here is local to that unit and compiled with its flags only). V provides:
//   Vec                      16 float lanes: one panel row (one or more registers)
//   Bcast                    one float, ready to multiply every lane
//   zero(), bcast(f)
//   fma(b, w, acc)           acc + b * w per lane, the one step of gemm.h's order
//   fma_lanes(a, b, acc)     acc + a * b per lane
//   sum(v)                   the lane sum in the order gemm.h states for dot
//   splat(f); add, sub, mul, div, min, max (per lane, IEEE); round(v) to the nearest integer (ties
//   to even); pow2(n) = 2^n for integral n in [-126, 127]
//   load<D>(p, i)            16 elements of dtype D from element i of p, widened to float
//   store(p, v), store_n(p, v, n)   all 16 lanes, or the first n, to p
//   load_n(p, n)             the first n floats of p, the other lanes 0
//   kMR, kNV                 rows and panels of the GEMM tile
//   kGemvNV                  panels of the one-row tile
// Every tile computes each of its elements in the order of gemm.h, whatever its shape.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "common/dtype.h"
#include "cpu/gemm/gemm.h"

namespace sa::gemm::tiles {

constexpr size_t kRowChunkBytes = size_t(640) << 10;
// Steps of j per pass over a row tile, so that the panels stay in the first-level cache while the
// row tiles of a chunk pass over them.
constexpr int32_t kDepth = 256;

// out[r * ldo + 16 v + l] for r < MR, v < NV, l < 16 (l < last_cols in the last panel) from x's MR
// rows and the NV panels of w that start at element w0, pe elements apart, for j in [j0, j1): the
// accumulators start at 0 when j0 is 0, else at what out holds (the earlier steps, exactly).
template <class V, DType D, int MR, int NV>
void tile(const float* x, size_t ldx, int32_t j0, int32_t j1, const void* w, size_t w0, size_t pe, float* out,
          size_t ldo, int last_cols) {
  typename V::Vec acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
      const float* o = out + size_t(r) * ldo + size_t(v) * kPanelColumns;
      const int n = v == NV - 1 ? last_cols : kPanelColumns;
      acc[r][v] = j0 == 0 ? V::zero() : n < kPanelColumns ? V::load_n(o, n) : V::template load<DType::F32>(o, 0);
    }
  for (int32_t j = j0; j < j1; j++) {
    typename V::Vec wv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) wv[v] = V::template load<D>(w, w0 + size_t(v) * pe + size_t(j) * kPanelColumns);
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      const typename V::Bcast b = V::bcast(x[size_t(r) * ldx + size_t(j)]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; v++) acc[r][v] = V::fma(b, wv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
      float* o = out + size_t(r) * ldo + size_t(v) * kPanelColumns;
      if (v == NV - 1 && last_cols < kPanelColumns) V::store_n(o, acc[r][v], last_cols);
      else V::store(o, acc[r][v]);
    }
}

using TileFn = void (*)(const float*, size_t, int32_t, int32_t, const void*, size_t, size_t, float*, size_t, int);

template <class V, DType D, int MR, int NV>
TileFn tile_panels_up_to(int nv) {
  if constexpr (NV == 0) {
    return nullptr;
  } else {
    return nv == NV ? &tile<V, D, MR, NV> : tile_panels_up_to<V, D, MR, NV - 1>(nv);
  }
}

template <class V, DType D, int MR, int NV>
TileFn tile_up_to(int mr, int nv) {
  if constexpr (MR == 0) {
    return nullptr;
  } else {
    return mr == MR ? tile_panels_up_to<V, D, MR, NV>(nv) : tile_up_to<V, D, MR - 1, NV>(mr, nv);
  }
}

// Rows per chunk: at most those whose kDepth columns stay in the second-level cache while the
// panels pass over them, the chunks of `rows` as even as whole tiles allow (every chunk streams the
// weights once).
inline int32_t chunk_rows(int32_t rows, int32_t mr) {
  const int32_t most = std::max(mr, int32_t(kRowChunkBytes / (size_t(kDepth) * 4)) / mr * mr);
  const int32_t chunks = (rows + most - 1) / most;
  const int32_t even = (rows + chunks - 1) / chunks;
  return std::min(most, (even + mr - 1) / mr * mr);
}

template <class V, DType D>
void block(const float* x, int32_t rows, int32_t k, const void* w, int32_t c0, int32_t c1, float* out, size_t ldo) {
  const size_t ldx = size_t(k), pe = size_t(k) * kPanelColumns;
  const int32_t p0 = c0 / kPanelColumns, p1 = (c1 + kPanelColumns - 1) / kPanelColumns;
  auto last_cols = [&](int32_t last_panel) {
    const int32_t left = c1 - last_panel * kPanelColumns;
    return int(left < kPanelColumns ? left : kPanelColumns);
  };
  if (rows == 1) {  // one row: every weight is read once, several panels in flight
    for (int32_t p = p0; p < p1; p += V::kGemvNV) {
      const int nv = p1 - p < V::kGemvNV ? int(p1 - p) : V::kGemvNV;
      tile_panels_up_to<V, D, 1, V::kGemvNV>(nv)(x, ldx, 0, k, w, size_t(p) * pe, pe, out + size_t(p * kPanelColumns - c0),
                                                 ldo, last_cols(p + nv - 1));
    }
    return;
  }
  const int32_t rc = chunk_rows(rows, V::kMR);
  for (int32_t r0 = 0; r0 < rows; r0 += rc) {
    const int32_t r1 = rows - r0 < rc ? rows : r0 + rc;
    for (int32_t j0 = 0; j0 < k; j0 += kDepth) {
      const int32_t j1 = k - j0 < kDepth ? k : j0 + kDepth;
      for (int32_t p = p0; p < p1; p += V::kNV) {
        const int nv = p1 - p < V::kNV ? int(p1 - p) : V::kNV;
        const int last = last_cols(p + nv - 1);
        for (int32_t r = r0; r < r1; r += V::kMR) {
          const int mr = r1 - r < V::kMR ? int(r1 - r) : V::kMR;
          float* o = out + size_t(r) * ldo + size_t(p * kPanelColumns - c0);
          tile_up_to<V, D, V::kMR, V::kNV>(mr, nv)(x + size_t(r) * ldx, ldx, j0, j1, w, size_t(p) * pe, pe, o, ldo, last);
        }
      }
    }
  }
}

// Elements [i, i + n) of p (n < 16) as dtype D, widened, the other lanes 0.
template <class V, DType D>
typename V::Vec load_tail(const void* p, size_t i, int n) {
  typename Storage<D>::type part[kPanelColumns] = {};
  for (int l = 0; l < n; l++) part[l] = static_cast<const typename Storage<D>::type*>(p)[i + size_t(l)];
  return V::template load<D>(part, 0);
}

// Calls fn(std::integral_constant<int, N>{}) with N = n, for n in [1, Most] (larger n: Most).
template <int Most, class Fn>
void with_count(int n, Fn&& fn) {
  if constexpr (Most > 1) {
    if (n < Most) return with_count<Most - 1>(n, fn);
  }
  fn(std::integral_constant<int, Most>{});
}

template <class V, DType D, int NQ>
void scores_of_group(const float* q, const void* k, size_t stride, int32_t n, int32_t dims, float scale, float* out) {
  for (int32_t i = 0; i < n; i++) {
    const size_t row = size_t(i) * stride;
    typename V::Vec acc[NQ];
#pragma GCC unroll 8
    for (int g = 0; g < NQ; g++) acc[g] = V::zero();
    int32_t j = 0;
    for (; j + kPanelColumns <= dims; j += kPanelColumns) {
      const typename V::Vec kv = V::template load<D>(k, row + size_t(j));
#pragma GCC unroll 8
      for (int g = 0; g < NQ; g++) acc[g] = V::fma_lanes(V::template load<DType::F32>(q + size_t(g) * dims, size_t(j)), kv, acc[g]);
    }
    if (j < dims) {
      const typename V::Vec kv = load_tail<V, D>(k, row + size_t(j), int(dims - j));
#pragma GCC unroll 8
      for (int g = 0; g < NQ; g++) acc[g] = V::fma_lanes(V::load_n(q + size_t(g) * dims + j, int(dims - j)), kv, acc[g]);
    }
#pragma GCC unroll 8
    for (int g = 0; g < NQ; g++) out[size_t(g) * size_t(n) + size_t(i)] = V::sum(acc[g]) * scale;
  }
}

template <class V, DType D>
void scores(const float* q, int32_t n_q, const void* k, size_t stride, int32_t n, int32_t dims, float scale, float* out) {
  constexpr int kGroup = 4;  // queries per pass over the keys
  for (int32_t g = 0; g < n_q; g += kGroup) {
    const float* qg = q + size_t(g) * dims;
    float* og = out + size_t(g) * size_t(n);
    with_count<kGroup>(n_q - g, [&](auto nq) { scores_of_group<V, D, decltype(nq)::value>(qg, k, stride, n, dims, scale, og); });
  }
}

// o[j0, j0 + 16 NV) (the last of the NV vectors holding `last` < 16 lanes when last > 0) over all
// positions, the accumulators held in registers.
template <class V, DType D, int NV>
void weigh_block(const float* p, float sum, const void* v, size_t stride, int32_t n, int32_t j0, int last, float* o) {
  typename V::Vec acc[NV];
#pragma GCC unroll 8
  for (int c = 0; c < NV; c++) acc[c] = V::zero();
  for (int32_t i = 0; i < n; i++) {
    const typename V::Bcast b = V::bcast(p[i] / sum);
    const size_t row = size_t(i) * stride + size_t(j0);
#pragma GCC unroll 8
    for (int c = 0; c < NV; c++) {
      const size_t at = row + size_t(c) * kPanelColumns;
      acc[c] = V::fma(b, c == NV - 1 && last > 0 ? load_tail<V, D>(v, at, last) : V::template load<D>(v, at), acc[c]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < NV; c++) {
    float* out = o + j0 + c * kPanelColumns;
    if (c == NV - 1 && last > 0) V::store_n(out, acc[c], last);
    else V::store(out, acc[c]);
  }
}

template <class V, DType D>
void weigh(const float* p, float sum, const void* v, size_t stride, int32_t n, int32_t dims, float* o) {
  constexpr int kBlock = 8;  // vectors of accumulators per pass over the positions
  for (int32_t j0 = 0; j0 < dims; j0 += kBlock * kPanelColumns) {
    const int32_t width = dims - j0 < kBlock * kPanelColumns ? dims - j0 : kBlock * kPanelColumns;
    const int vectors = int((width + kPanelColumns - 1) / kPanelColumns), last = int(width % kPanelColumns);
    with_count<kBlock>(vectors, [&](auto nv) { weigh_block<V, D, decltype(nv)::value>(p, sum, v, stride, n, j0, last, o); });
  }
}

template <class V>
void scores_any(const float* q, int32_t n_q, const void* k, size_t stride, DType dt, int32_t n, int32_t dims, float scale, float* out) {
  switch (dt) {
    case DType::F32: scores<V, DType::F32>(q, n_q, k, stride, n, dims, scale, out); break;
    case DType::BF16: scores<V, DType::BF16>(q, n_q, k, stride, n, dims, scale, out); break;
    default: scores<V, DType::F16>(q, n_q, k, stride, n, dims, scale, out); break;
  }
}

template <class V>
void weigh_any(const float* p, float sum, const void* v, size_t stride, DType dt, int32_t n, int32_t dims, float* o) {
  switch (dt) {
    case DType::F32: weigh<V, DType::F32>(p, sum, v, stride, n, dims, o); break;
    case DType::BF16: weigh<V, DType::BF16>(p, sum, v, stride, n, dims, o); break;
    default: weigh<V, DType::F16>(p, sum, v, stride, n, dims, o); break;
  }
}

// exp(x) for x clamped to [-87, 88] (so that 2^n stays a normal float): x = n ln2 + r with n the
// nearest integer to x / ln2 (ln2 in two parts), e^r by its Taylor polynomial of degree 7
// (|r| <= ln2 / 2, truncation below 1e-8 relative), times 2^n built in the exponent field.
template <class V>
typename V::Vec exp_lanes(typename V::Vec x) {
  x = V::min(V::max(x, V::splat(-87.0f)), V::splat(88.0f));
  const typename V::Vec n = V::round(V::mul(x, V::splat(1.44269504088896341f)));
  typename V::Vec r = V::fma_lanes(n, V::splat(-0.693145751953125f), x);
  r = V::fma_lanes(n, V::splat(-1.428606765330187e-06f), r);
  typename V::Vec p = V::splat(1.0f / 5040.0f);
  for (const float c : {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f}) p = V::fma_lanes(p, r, V::splat(c));
  return V::mul(p, V::pow2(n));
}

template <class V>
typename V::Vec swiglu_lanes(typename V::Vec g, typename V::Vec u) {
  const typename V::Vec e = exp_lanes<V>(V::sub(V::zero(), g));
  return V::mul(V::div(g, V::add(V::splat(1.0f), e)), u);
}

template <class V>
void swiglu(const float* gate, const float* up, size_t n, float* out) {
  size_t i = 0;
  for (; i + kPanelColumns <= n; i += kPanelColumns)
    V::store(out + i, swiglu_lanes<V>(V::template load<DType::F32>(gate, i), V::template load<DType::F32>(up, i)));
  if (i < n) {
    const int rest = int(n - i);
    V::store_n(out + i, swiglu_lanes<V>(V::load_n(gate + i, rest), V::load_n(up + i, rest)), rest);
  }
}

template <class V>
float softmax(float* scores, int32_t n) {
  float mx = -INFINITY;
  for (int32_t t = 0; t < n; t++) mx = scores[t] > mx ? scores[t] : mx;
  const typename V::Vec top = V::splat(mx);
  int32_t t = 0;
  for (; t + kPanelColumns <= n; t += kPanelColumns)
    V::store(scores + t, exp_lanes<V>(V::sub(V::template load<DType::F32>(scores, size_t(t)), top)));
  if (t < n) V::store_n(scores + t, exp_lanes<V>(V::sub(V::load_n(scores + t, int(n - t)), top)), int(n - t));
  float sum = 0.f;
  for (t = 0; t < n; t++) sum += scores[t];
  return sum;
}

template <class V, DType D>
void narrow_to(const float* src, void* dst, size_t n) {
  size_t i = 0;
  if constexpr (D == DType::F16 && V::kF16Stores) {
    for (; i + kPanelColumns <= n; i += kPanelColumns)
      V::store_f16(static_cast<uint16_t*>(dst) + i, V::template load<DType::F32>(src, i));
  }
  for (; i < n; i++) store_as<D>(dst, i, src[i]);
}

template <class V>
void narrow(const float* src, DType dt, void* dst, size_t n) {
  switch (dt) {
    case DType::F32: narrow_to<V, DType::F32>(src, dst, n); break;
    case DType::BF16: narrow_to<V, DType::BF16>(src, dst, n); break;
    default: narrow_to<V, DType::F16>(src, dst, n); break;
  }
}

template <class V>
void block_any(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t c0, int32_t c1, float* out,
               size_t ldo) {
  switch (dt) {
    case DType::F32: block<V, DType::F32>(x, rows, k, w, c0, c1, out, ldo); break;
    case DType::BF16: block<V, DType::BF16>(x, rows, k, w, c0, c1, out, ldo); break;
    default: block<V, DType::F16>(x, rows, k, w, c0, c1, out, ldo); break;
  }
}

}  // namespace sa::gemm::tiles
