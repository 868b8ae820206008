#pragma once
// The CPU engine ops that the kernel variant or the buffers concern (the rest: engine_rowwise.h).
// The backend's buffers are host memory. cpu_backend.cpp puts them into the tables. The bf16
// products (MatmulPrecision::Bf16 on BF16 weights) run on cpu_dispatch.h's pair kernels.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/dtype.h"
#include "cpu/gemm/gemm.h"
#include "engine/ops.h"

namespace sa::cpu {

// 64-byte aligned host memory, freed with std::free.
void* alloc(size_t bytes);
// W [n, k] packed for the kernels at precision (gemm.h), in a buffer from alloc.
void* upload_matrix(const void* src, DType dt, int32_t n, int32_t k, engine::MatmulPrecision precision);
// Empty when matmul runs at precision here, else why not.
std::string matmul_precision_unsupported(engine::MatmulPrecision precision);
void matmul(const gemm::Kernel& kernel, const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t n,
            const void* bias, DType bias_dt, float* out, engine::MatmulPrecision precision);
bool kv_dtype_supported(DType dt);
void store_kv(const gemm::Kernel& kernel, void* dst, DType dt, const float* src, size_t n);

}  // namespace sa::cpu
