#pragma once
// The operations the engine's forward pass is made of, over device buffers. The CPU backend
// implements them in cpu/engine_ops.cpp; the CUDA backend in cuda/engine_ops.cu, exported from its
// shared library. Activations are float32; weights are F32, BF16 or F16 as stored.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/dtype.h"

namespace sa::engine {

#define SA_ENGINE_OPS_ABI 4

// One sequence's slice of a ragged batch, for attention.
struct AttnSeq {
  int32_t row_offset;  // first row of this sequence's new tokens in q / out
  int32_t n_new;       // new tokens
  int32_t start_pos;   // position of the first new token (= tokens already in the cache)
  const void* k;       // cache [start_pos + n_new, n_kv_heads, head_dim] of kv_dtype
  const void* v;
  DType kv_dtype;
};

struct AttnShape {
  int32_t n_heads, n_kv_heads, head_dim;
  int32_t sliding_window;  // 0: none; else attend to the last sliding_window positions
  float scale;
};

// How matmul multiplies a BF16 weight matrix (other dtypes are always multiplied in float32):
// F32 widens the weights and keeps the activations in float32 (cpu/gemm/gemm.h's order); Bf16
// rounds the activations to bf16 and takes the products in pairs with a bf16 dot-product
// instruction (gemm.h's pair layout), as llama.cpp does for bf16 weights.
enum class MatmulPrecision : int32_t { F32 = 0, Bf16 = 1 };

constexpr int32_t kMaxSteerVectors = 8;

// Steering of one sequence's rows at one layer: n vectors of H floats (device) and their alphas.
struct SteerSlice {
  int32_t row_offset, rows, n;
  const float* vectors[kMaxSteerVectors];
  float alphas[kMaxSteerVectors];
};

class DeviceOps {
 public:
  virtual ~DeviceOps() = default;
  virtual const char* name() const = 0;
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  // Waits for queued work; rethrows a device error as std::runtime_error.
  virtual void synchronize() = 0;

  // A weight matrix W [n, k] (host) on the device in the layout that matmul takes at precision p, in
  // a buffer from alloc; packs_matrices() says whether the F32 layout differs from row-major.
  virtual void* upload_matrix(const void* src, DType dt, int32_t n, int32_t k, MatmulPrecision p) = 0;
  virtual bool packs_matrices() const = 0;
  // Empty when matmul runs at precision p here, else why not.
  virtual std::string matmul_precision_unsupported(MatmulPrecision p) const = 0;

  // Whether attention reads a KV cache of dtype dt.
  virtual bool kv_dtype_supported(DType dt) const = 0;
  // dst[i] = src[i] as dt (rounded to nearest even) for i < n: keys and values entering the cache.
  virtual void store_kv(void* dst, DType dt, const float* src, size_t n) = 0;

  // out[r, :] = table[ids[r], :] (ids on the host)
  virtual void embed(const int32_t* ids, int32_t rows, const void* table, DType dt, int32_t hidden, float* out) = 0;
  // out = x / sqrt(mean(x^2) + eps) * w, per row
  virtual void rmsnorm(const float* x, const void* w, DType dt, int32_t rows, int32_t hidden, float eps, float* out) = 0;
  // out[rows, n] = x[rows, k] . W[n, k]^T (+ bias[n]), W from upload_matrix at the same precision
  virtual void matmul(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t n, const void* bias,
                      DType bias_dt, float* out, MatmulPrecision p) = 0;
  // Rotary embedding, rotate-half convention, in place on x[rows, heads, head_dim]; positions on the host.
  virtual void rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions,
                    const float* inv_freq, float attention_scaling) = 0;
  // Causal attention of each sequence's new queries over its cache. q [rows, n_heads*head_dim].
  virtual void attention(const float* q, const AttnSeq* seqs, int32_t n_seqs, const AttnShape& shape, float* out) = 0;
  // out = silu(gate) * up
  virtual void swiglu(const float* gate, const float* up, size_t n, float* out) = 0;
  // x += y
  virtual void add(float* x, const float* y, size_t n) = 0;
  // The Safety Alignment transform on rows of x [rows, H], in place (docs/semantics.md, "Steering").
  virtual void steer(float* x, int32_t hidden, const SteerSlice* slices, int32_t n_slices) = 0;
};

}  // namespace sa::engine
