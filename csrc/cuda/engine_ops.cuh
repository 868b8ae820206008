#pragma once
// The CUDA backend's engine ops: members of its table (backend_api.h says what each does). All
// work goes to one stream of the device of device.cuh, which the first op sets up.
#include "backend/backend_api.h"

namespace sa::cuda::engine_ops {

int alloc(size_t bytes, void** out, sa_error* err);
void release(void* p);
int upload(void* dst, const void* src, size_t bytes, sa_error* err);
int download(void* dst, const void* src, size_t bytes, sa_error* err);
int copy(void* dst, const void* src, size_t bytes, sa_error* err);
int synchronize(sa_error* err);
int upload_matrix(const void* src, int32_t dtype, int32_t n, int32_t k, int32_t precision, void** out, sa_error* err);
int32_t packs_matrices();
int check_matmul_precision(int32_t precision, sa_error* err);
int32_t kv_dtype_supported(int32_t dtype);
int store_kv(void* dst, int32_t dtype, const float* src, size_t n, sa_error* err);
int embed(const int32_t* ids, int32_t rows, const void* table, int32_t dtype, int32_t hidden, float* out, sa_error* err);
int rmsnorm(const float* x, const void* w, int32_t dtype, int32_t rows, int32_t hidden, float eps, float* out, sa_error* err);
int matmul(const float* x, int32_t rows, int32_t k, const void* w, int32_t dtype, int32_t n, const void* bias,
           int32_t bias_dtype, float* out, int32_t precision, sa_error* err);
int rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions, const float* inv_freq,
         float attention_scaling, sa_error* err);
int attention(const float* q, const sa_attn_seq* seqs, int32_t n_seqs, const sa_attn_shape* shape, float* out, sa_error* err);
int swiglu(const float* gate, const float* up, size_t n, float* out, sa_error* err);
int add(float* x, const float* y, size_t n, sa_error* err);
int steer(float* x, int32_t hidden, const sa_steer_slice* slices, int32_t n_slices, sa_error* err);

}  // namespace sa::cuda::engine_ops
