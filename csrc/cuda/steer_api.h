#pragma once
/*
 * Safety Alignment's steering transform for other engines, on device buffers (C ABI, exported by
 * libsafety_arithmetic_cuda.so; load it with dlopen, or link it). In place on each row x of
 * [rows, hidden] (F32, BF16 or F16; math in float32):
 *   x <- ||x|| * normalize(normalize(x) - 0.1 * sum_i alpha_i (1 + relu(cos(x, v_i))) normalize(v_i) / n)
 * vectors: n (<= 8) device pointers to `hidden` floats each, given as a host array.
 * alphas: n finite floats on the host (a NaN or infinite alpha is refused). With every alpha 0
 * nothing is launched and x is unchanged.
 * stream: a cudaStream_t (0 for the default stream). Returns 0, or non-zero with a message in err.
 */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { SA_STEER_F32 = 0, SA_STEER_F16 = 1, SA_STEER_BF16 = 2 };

int sa_cuda_steer_rows(void* x, int32_t dtype, int64_t rows, int32_t hidden, const float* const* vectors,
                       const float* alphas, int32_t n, void* stream, char* err, size_t err_cap);

/* Times sa_cuda_steer_rows on random [rows, hidden] data of the dtype with one vector, and a device
 * copy moving the same bytes (read + write), as the memory floor. Microseconds per call. */
int sa_cuda_bench_steer(int64_t rows, int32_t hidden, int32_t dtype, int32_t iters, double* steer_us,
                        double* copy_us, char* err, size_t err_cap);

#ifdef __cplusplus
}
#endif
