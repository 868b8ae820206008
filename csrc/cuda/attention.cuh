#pragma once
// Causal attention of each sequence's new query rows over its KV cache, float32.
#include "cuda/common.cuh"
#include "engine/ops.h"

namespace sa::cuda {

constexpr int kAttnMaxHeadDim = 256;

// One query row of one sequence: the block of work of the attention kernel.
struct AttnItem {
  int32_t seq, row;  // index into the AttnSeq array; row within the sequence's new tokens
};

// q, out [rows, n_heads * head_dim]; seqs [n_seqs] and items [n_items] in device memory (the k and v
// pointers inside seqs are device pointers to caches [positions, n_kv_heads, head_dim]).
// vector_loads: head_dim % 4 == 0 and every k and v pointer 16-byte aligned.
// head_dim <= kAttnMaxHeadDim; n_heads a multiple of n_kv_heads.
cudaError_t launch_attention(const float* q, const engine::AttnSeq* seqs, const AttnItem* items, int n_items,
                             const engine::AttnShape& shape, bool vector_loads, float* out, cudaStream_t stream);

}  // namespace sa::cuda
