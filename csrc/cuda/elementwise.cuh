#pragma once
// Embedding lookup and the element-wise ops of the forward pass.
#include "cuda/common.cuh"

namespace sa::cuda {

// out[r, :] = table[ids[r], :] as float32; ids [rows] on the device.
cudaError_t launch_embed(const int32_t* ids, int rows, const void* table, DType dt, int hidden, float* out,
                         cudaStream_t stream);
// out = silu(gate) * up
cudaError_t launch_swiglu(const float* gate, const float* up, size_t n, float* out, cudaStream_t stream);
// x += y
cudaError_t launch_add(float* x, const float* y, size_t n, cudaStream_t stream);

}  // namespace sa::cuda
