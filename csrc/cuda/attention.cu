// Causal attention with grouped-query heads and an optional sliding window, float32 throughout.
//
// One kernel serves decode and prefill: a block handles one query row of one sequence and one KV
// head, with the (up to kMaxGroup) query heads of that head's GQA group, so that every K and V
// element it loads serves the whole group. It walks the row's window of key positions [first, pos]
// in chunks of kChunk positions starting at `first`:
//   1. scores: thread i computes q_g . k_t for position t = t0 + i and every head g of the group,
//      as the CPU does (float32, increasing j), times the scale;
//   2. per head, the chunk's maximum and the exponentials exp(s - max) and their sum (one warp per
//      head), folded into a running maximum m and denominator l (online softmax);
//   3. per head and dimension j, the chunk's sum of p_t * v_t[j] in increasing t, folded into the
//      running output with the same rescaling.
// out = o / l at the end. The work for a row depends only on the row's position and window, never
// on how many rows or sequences share the call, so decode and prefill give bit-identical results.
// Decode at batch 1 runs n_kv_heads blocks; splitting long windows over several blocks (with one
// more pass to combine their states, in this same order) is the next step if that is too slow.
#include "cuda/attention.cuh"

namespace sa::cuda {
namespace {

using engine::AttnSeq;
using engine::AttnShape;

constexpr int kThreads = 128;
constexpr int kChunk = kThreads;  // one key position per thread in step 1
constexpr int kMaxGroup = 8;      // query heads per block; larger groups are split over blocks
constexpr int kDimsPerThread = kAttnMaxHeadDim / kThreads;

template <bool VEC>
__global__ void __launch_bounds__(kThreads)
    attention_kernel(const float* __restrict__ q, const AttnSeq* __restrict__ seqs,
                     const AttnItem* __restrict__ items, AttnShape s, int splits, float* __restrict__ out) {
  __shared__ float q_s[kMaxGroup * kAttnMaxHeadDim];
  __shared__ float p_s[kMaxGroup * kChunk];  // scores, then exponentials
  __shared__ float m_s[kMaxGroup], l_s[kMaxGroup], alpha_s[kMaxGroup], beta_s[kMaxGroup];

  const AttnItem it = items[blockIdx.x];
  const AttnSeq sq = seqs[it.seq];
  const int group = s.n_heads / s.n_kv_heads;
  const int kvh = int(blockIdx.y) / splits;
  const int g0 = (int(blockIdx.y) % splits) * kMaxGroup;
  const int gn = imin(kMaxGroup, group - g0);  // query heads in this block, >= 1
  const int h0 = kvh * group + g0;
  const int D = s.head_dim;
  const size_t q_stride = size_t(s.n_heads) * size_t(D), kv_stride = size_t(s.n_kv_heads) * size_t(D);
  const int pos = sq.start_pos + it.row;
  const int first = s.sliding_window > 0 ? imax(0, pos - s.sliding_window + 1) : 0;
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;

  const float* qrow = q + size_t(sq.row_offset + it.row) * q_stride + size_t(h0) * size_t(D);
  for (int i = tid; i < gn * D; i += kThreads) q_s[i] = qrow[i];
  if (tid < kMaxGroup) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.f;
  }
  float o[kMaxGroup][kDimsPerThread];
#pragma unroll
  for (int g = 0; g < kMaxGroup; g++)
#pragma unroll
    for (int d = 0; d < kDimsPerThread; d++) o[g][d] = 0.f;
  const float* kbase = static_cast<const float*>(sq.k) + size_t(kvh) * size_t(D);
  const float* vbase = static_cast<const float*>(sq.v) + size_t(kvh) * size_t(D);
  __syncthreads();

  for (int t0 = first; t0 <= pos; t0 += kChunk) {
    const int len = imin(kChunk, pos + 1 - t0);

    // 1. Scores of key position t0 + tid.
    if (tid < len) {
      const float* kr = kbase + size_t(t0 + tid) * kv_stride;
      float acc[kMaxGroup];
#pragma unroll
      for (int g = 0; g < kMaxGroup; g++) acc[g] = 0.f;
      if constexpr (VEC) {
        for (int j = 0; j < D; j += 4) {
          const float4 kv = *reinterpret_cast<const float4*>(kr + j);
#pragma unroll
          for (int g = 0; g < kMaxGroup; g++) {
            if (g < gn) {
              const float* qg = q_s + g * D + j;
              acc[g] += qg[0] * kv.x;
              acc[g] += qg[1] * kv.y;
              acc[g] += qg[2] * kv.z;
              acc[g] += qg[3] * kv.w;
            }
          }
        }
      } else {
        for (int j = 0; j < D; j++) {
          const float kj = kr[j];
#pragma unroll
          for (int g = 0; g < kMaxGroup; g++)
            if (g < gn) acc[g] += q_s[g * D + j] * kj;
        }
      }
#pragma unroll
      for (int g = 0; g < kMaxGroup; g++)
        if (g < gn) p_s[g * kChunk + tid] = acc[g] * s.scale;
    }
    __syncthreads();

    // 2. One warp per head: chunk maximum, exponentials, their sum; update m and l.
    for (int g = warp; g < gn; g += kThreads / 32) {
      float* p = p_s + g * kChunk;
      float mx = -INFINITY;
      for (int i = lane; i < len; i += 32) mx = fmaxf(mx, p[i]);
      mx = warp_max(mx);
      float sum = 0.f;
      for (int i = lane; i < len; i += 32) {
        const float e = expf(p[i] - mx);
        p[i] = e;
        sum += e;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float m_new = fmaxf(m_s[g], mx);
        const float alpha = expf(m_s[g] - m_new), beta = expf(mx - m_new);  // alpha = 0 on the first chunk
        l_s[g] = l_s[g] * alpha + sum * beta;
        m_s[g] = m_new;
        alpha_s[g] = alpha;
        beta_s[g] = beta;
      }
    }
    __syncthreads();

    // 3. Dimensions tid and tid + kThreads: each V element is loaded once for the whole group.
#pragma unroll
    for (int d = 0; d < kDimsPerThread; d++) {
      const int j = tid + d * kThreads;
      if (j < D) {
        float pv[kMaxGroup];
#pragma unroll
        for (int g = 0; g < kMaxGroup; g++) pv[g] = 0.f;
        for (int i = 0; i < len; i++) {
          const float vj = vbase[size_t(t0 + i) * kv_stride + size_t(j)];
#pragma unroll
          for (int g = 0; g < kMaxGroup; g++)
            if (g < gn) pv[g] += p_s[g * kChunk + i] * vj;
        }
#pragma unroll
        for (int g = 0; g < kMaxGroup; g++)
          if (g < gn) o[g][d] = o[g][d] * alpha_s[g] + pv[g] * beta_s[g];
      }
    }
    __syncthreads();  // p_s, alpha_s and beta_s are rewritten by the next chunk
  }

  float* orow = out + size_t(sq.row_offset + it.row) * q_stride + size_t(h0) * size_t(D);
#pragma unroll
  for (int d = 0; d < kDimsPerThread; d++) {
    const int j = tid + d * kThreads;
    if (j < D) {
#pragma unroll
      for (int g = 0; g < kMaxGroup; g++)
        if (g < gn) orow[g * D + j] = o[g][d] / l_s[g];
    }
  }
}

}  // namespace

cudaError_t launch_attention(const float* q, const AttnSeq* seqs, const AttnItem* items, int n_items,
                             const AttnShape& shape, bool vector_loads, float* out, cudaStream_t stream) {
  if (n_items <= 0) return cudaSuccess;
  if (shape.head_dim <= 0 || shape.head_dim > kAttnMaxHeadDim || shape.n_kv_heads <= 0 ||
      shape.n_heads % shape.n_kv_heads != 0)
    return cudaErrorInvalidValue;
  const int group = shape.n_heads / shape.n_kv_heads;
  const int splits = (group + kMaxGroup - 1) / kMaxGroup;
  const long long grid_y = (long long)shape.n_kv_heads * splits;
  if (grid_y > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid{unsigned(n_items), unsigned(grid_y)}, block{unsigned(kThreads)};
  if (vector_loads)
    return launch(attention_kernel<true>, grid, block, 0, stream, q, seqs, items, shape, splits, out);
  return launch(attention_kernel<false>, grid, block, 0, stream, q, seqs, items, shape, splits, out);
}

}  // namespace sa::cuda
