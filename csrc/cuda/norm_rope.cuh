#pragma once
// RMS normalization and rotary position embedding (rotate-half), float32 activations.
#include "cuda/common.cuh"

namespace sa::cuda {

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w; x and out may be the same buffer.
cudaError_t launch_rmsnorm(const float* x, const void* w, DType dt, int rows, int hidden, float eps, float* out,
                           cudaStream_t stream);

// In place on x[rows, heads, head_dim]; positions [rows] and inv_freq [head_dim / 2] on the device.
cudaError_t launch_rope(float* x, int rows, int heads, int head_dim, const int32_t* positions, const float* inv_freq,
                        float attention_scaling, cudaStream_t stream);

}  // namespace sa::cuda
