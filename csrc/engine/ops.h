#pragma once
// The operations the engine's forward pass is made of, over a backend's buffers: the engine's view of
// a backend table (backend/backend_api.h), given by backend/table_ops.h over the CPU's or the CUDA
// library's table. Failures are exceptions: std::invalid_argument for arguments an op cannot
// serve, std::runtime_error otherwise.
#include <cstddef>
#include <cstdint>
#include <string>

#include "backend/backend_api.h"
#include "common/dtype.h"

namespace sa::engine {

using AttnSeq = sa_attn_seq;
using AttnShape = sa_attn_shape;
using SteerSlice = sa_steer_slice;
constexpr int32_t kMaxSteerVectors = SA_MAX_STEER_VECTORS;
// How matmul multiplies a BF16 weight matrix (backend_api.h, SA_MATMUL_*).
enum class MatmulPrecision : int32_t { F32 = SA_MATMUL_F32, Bf16 = SA_MATMUL_BF16 };

// Each op is the table member of the same name (backend_api.h says what it does), with DType for
// dtypes and exceptions for failures.
class DeviceOps {
 public:
  virtual ~DeviceOps() = default;
  virtual const char* name() const = 0;
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* p) = 0;  // never throws
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void synchronize() = 0;
  virtual void* upload_matrix(const void* src, DType dt, int32_t n, int32_t k, MatmulPrecision p) = 0;
  virtual bool packs_matrices() const = 0;
  // Empty when matmul runs at precision p here, else why not.
  virtual std::string matmul_precision_unsupported(MatmulPrecision p) const = 0;
  virtual bool kv_dtype_supported(DType dt) const = 0;
  virtual void store_kv(void* dst, DType dt, const float* src, size_t n) = 0;
  virtual void embed(const int32_t* ids, int32_t rows, const void* table, DType dt, int32_t hidden, float* out) = 0;
  virtual void rmsnorm(const float* x, const void* w, DType dt, int32_t rows, int32_t hidden, float eps, float* out) = 0;
  virtual void matmul(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t n, const void* bias,
                      DType bias_dt, float* out, MatmulPrecision p) = 0;
  virtual void rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions,
                    const float* inv_freq, float attention_scaling) = 0;
  virtual void attention(const float* q, const AttnSeq* seqs, int32_t n_seqs, const AttnShape& shape, float* out) = 0;
  virtual void swiglu(const float* gate, const float* up, size_t n, float* out) = 0;
  virtual void add(float* x, const float* y, size_t n) = 0;
  virtual void steer(float* x, int32_t hidden, const SteerSlice* slices, int32_t n_slices) = 0;
};

}  // namespace sa::engine
