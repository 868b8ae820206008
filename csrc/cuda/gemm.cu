// Matrix products of float32 activations with weight matrices stored [n, k] row-major (the layout of
// a Hugging Face Linear), F32, BF16 or F16, accumulated in float32.
//
// One kernel, several tile shapes. A warp owns a tile of RT rows x CT columns of out, and its 32
// lanes split k: k is cut into chunks of 8 consecutive elements, lane l takes the chunks l, l + 32,
// l + 64, ... and accumulates each (row, column) with fused multiply-adds in increasing k; the 32
// partial sums are then combined by a butterfly (warp_sum). Each output element is therefore
// computed by the same operations in the same order whatever the tile shape, the number of rows in
// the call or the row's place among them: a sequence gets bit-identical results alone or inside any
// batch, and one-token decode agrees exactly with prefill.
//
// Tile shapes (they change the speed, never the results):
//  - rows <= kGemvMaxRows (decode): one row tile holds every row (RT = 1, 2, 4 or 8), so each
//    weight row is read once for all rows; CT = 4 columns per warp, or 1 when n < 8192 so that
//    enough warps stream the weights. Each lane issues one 16-byte load per weight row per step,
//    two steps in flight: a bandwidth-bound GEMV.
//  - more rows: 8 x 8 tiles, 512 FMAs per lane per step on 8 x-chunks and 8 W-chunks. Per step a
//    warp reads 8 KiB of x and 4 KiB of bf16 W through L1 for 512 FMAs per lane, about the balance
//    of L1 bandwidth and FMA throughput. (A 16- or 32-row GEMV tile would re-read its x rows for
//    every 1 or 2 columns and be L1-bound at well under half the FMA rate; for 9..32 rows it is
//    cheaper to read W two to four times, from L2.) Blocks run in groups of kGroupRows row tiles,
//    the row tile varying fastest, so that the row tiles of one group of columns run together and
//    share each W row in L2: W is read from DRAM about once per kGroupRows row tiles.
//  - k not a multiple of 8, or x or W not 16-byte aligned (no model has such shapes; tests do): a
//    4 x 4 kernel with scalar loads, the same operations in the same order, so the same results.
// Float32 tensor-core paths (TF32) would lose accuracy, and cuBLAS would change the order of the sums
// with the number of rows, so neither is used.
#include "cuda/gemm.cuh"

namespace sa::cuda {
namespace {

constexpr int kWarps = 4;       // warps per block, side by side along n
constexpr int kGroupRows = 16;  // row tiles per group in the order blocks are run
constexpr int kGemvMaxRows = 8;

template <DType WT, int RT, int CT>
__device__ __forceinline__ void matmul_step(const float* __restrict__ x, const size_t (&xoff)[RT], int q,
                                            const Chunk8<WT> (&wc)[CT], float (&acc)[RT][CT]) {
  float wv[CT][8];
#pragma unroll
  for (int c = 0; c < CT; c++) unpack_chunk8<WT>(wc[c], wv[c]);
#pragma unroll
  for (int r = 0; r < RT; r++) {
    float xv[8];
    unpack_chunk8<DType::F32>(load_chunk8<DType::F32>(x, xoff[r] + size_t(q) * 8), xv);
#pragma unroll
    for (int c = 0; c < CT; c++)
#pragma unroll
      for (int j = 0; j < 8; j++) acc[r][c] = __fmaf_rn(xv[j], wv[c][j], acc[r][c]);
  }
}

template <DType WT, int RT, int CT, bool VEC>
__global__ void __launch_bounds__(kWarps * 32)
    matmul_kernel(const float* __restrict__ x, int rows, int k, const void* __restrict__ w, int n,
                  const void* __restrict__ bias, DType bias_dt, float* __restrict__ out, int row_tiles,
                  int col_groups) {
  // Block -> (row tile, column group), kGroupRows row tiles at a time.
  const long long pid = blockIdx.x;
  const long long per_group = (long long)kGroupRows * col_groups;
  const int first_tile = int(pid / per_group) * kGroupRows;
  const int group_size = imin(row_tiles - first_tile, kGroupRows);
  const int local = int(pid % per_group);
  const int row_tile = first_tile + local % group_size;
  const int col_group = local / group_size;

  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int c0 = (col_group * kWarps + warp) * CT;
  if (c0 >= n) return;  // the whole warp; this kernel has no block-level synchronization
  const int r0 = row_tile * RT;

  // Rows and columns past the end read the last valid one; their results are not stored.
  size_t xoff[RT], woff[CT];
#pragma unroll
  for (int r = 0; r < RT; r++) xoff[r] = size_t(imin(r0 + r, rows - 1)) * size_t(k);
#pragma unroll
  for (int c = 0; c < CT; c++) woff[c] = size_t(imin(c0 + c, n - 1)) * size_t(k);

  float acc[RT][CT];
#pragma unroll
  for (int r = 0; r < RT; r++)
#pragma unroll
    for (int c = 0; c < CT; c++) acc[r][c] = 0.f;

  const int chunks = k / 8 + (k % 8 != 0 ? 1 : 0);
  if constexpr (VEC) {
    int q = lane;
    if constexpr (RT * CT <= 32) {
      // Two steps per iteration: both steps' weight loads are in flight before either is used.
#pragma unroll 1
      for (; q + 32 < chunks; q += 64) {
        Chunk8<WT> wa[CT], wb[CT];
#pragma unroll
        for (int c = 0; c < CT; c++) wa[c] = load_chunk8<WT>(w, woff[c] + size_t(q) * 8);
#pragma unroll
        for (int c = 0; c < CT; c++) wb[c] = load_chunk8<WT>(w, woff[c] + size_t(q + 32) * 8);
        matmul_step<WT, RT, CT>(x, xoff, q, wa, acc);
        matmul_step<WT, RT, CT>(x, xoff, q + 32, wb, acc);
      }
    }
#pragma unroll 1
    for (; q < chunks; q += 32) {
      Chunk8<WT> wa[CT];
#pragma unroll
      for (int c = 0; c < CT; c++) wa[c] = load_chunk8<WT>(w, woff[c] + size_t(q) * 8);
      matmul_step<WT, RT, CT>(x, xoff, q, wa, acc);
    }
  } else {
#pragma unroll 1
    for (int q = lane; q < chunks; q += 32) {
      const int j0 = q * 8, len = imin(8, k - j0);
#pragma unroll 1
      for (int j = 0; j < len; j++) {
        float wv[CT];
#pragma unroll
        for (int c = 0; c < CT; c++) wv[c] = load_as<WT>(w, woff[c] + size_t(j0 + j));
#pragma unroll
        for (int r = 0; r < RT; r++) {
          const float xv = x[xoff[r] + size_t(j0 + j)];
#pragma unroll
          for (int c = 0; c < CT; c++) acc[r][c] = __fmaf_rn(xv, wv[c], acc[r][c]);
        }
      }
    }
  }

  // The bias, loaded once per column (outside the unrolled stores, which stay one copy).
  const bool has_bias = bias != nullptr;
  float bv[CT];
#pragma unroll
  for (int c = 0; c < CT; c++) bv[c] = has_bias ? load_f32(bias, bias_dt, size_t(imin(c0 + c, n - 1))) : 0.f;

  // Every lane takes part in each butterfly; the lanes take turns storing.
#pragma unroll
  for (int r = 0; r < RT; r++) {
#pragma unroll
    for (int c = 0; c < CT; c++) {
      const float s = warp_sum(acc[r][c]);
      const int row = r0 + r, col = c0 + c;
      if (lane == ((r * CT + c) & 31) && row < rows && col < n)
        out[size_t(row) * size_t(n) + size_t(col)] = has_bias ? s + bv[c] : s;
    }
  }
}

using MatmulKernel = void (*)(const float*, int, int, const void*, int, const void*, DType, float*, int, int);

template <DType WT, int RT>
MatmulKernel pick_cols(int ct) {
  return ct >= 4 ? matmul_kernel<WT, RT, 4, true> : matmul_kernel<WT, RT, 1, true>;
}

template <DType WT>
MatmulKernel pick(const MatmulPlan& p) {
  if (!p.vector_loads) return matmul_kernel<WT, 4, 4, false>;
  if (p.col_tile == 8) return matmul_kernel<WT, 8, 8, true>;
  switch (p.row_tile) {
    case 1: return pick_cols<WT, 1>(p.col_tile);
    case 2: return pick_cols<WT, 2>(p.col_tile);
    case 4: return pick_cols<WT, 4>(p.col_tile);
    default: return pick_cols<WT, 8>(p.col_tile);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

MatmulPlan plan_matmul(const float* x, int rows, int k, const void* w, int n) {
  MatmulPlan p{8, 8, k % 8 == 0 && aligned16(x) && aligned16(w), 0};
  if (!p.vector_loads) {
    p.row_tile = p.col_tile = 4;
  } else if (rows <= kGemvMaxRows) {
    p.row_tile = rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : 8;
    // Enough warps to keep DRAM busy (2048 or more), and fewer x reloads from L1 when n allows.
    p.col_tile = n >= 8192 ? 4 : 1;
  }
  const long long row_tiles = (rows + (long long)p.row_tile - 1) / p.row_tile;
  const long long col_groups = (n + (long long)kWarps * p.col_tile - 1) / ((long long)kWarps * p.col_tile);
  p.blocks = row_tiles * col_groups;
  return p;
}

cudaError_t launch_matmul(const float* x, int rows, int k, const void* w, DType dt, int n, const void* bias,
                          DType bias_dt, float* out, cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return cudaSuccess;
  const MatmulPlan p = plan_matmul(x, rows, k, w, n);
  if (p.blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  const int row_tiles = int((rows + (long long)p.row_tile - 1) / p.row_tile);
  const int col_groups = int((n + (long long)kWarps * p.col_tile - 1) / ((long long)kWarps * p.col_tile));
  MatmulKernel kernel = dt == DType::F32    ? pick<DType::F32>(p)
                        : dt == DType::BF16 ? pick<DType::BF16>(p)
                                            : pick<DType::F16>(p);
  return launch(kernel, dim3(unsigned(p.blocks)), dim3(kWarps * 32), 0, stream, x, rows, k, w, n, bias, bias_dt,
                out, row_tiles, col_groups);
}

}  // namespace sa::cuda
