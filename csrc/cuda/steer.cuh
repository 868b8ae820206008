#pragma once
// The Safety Alignment steering transform (docs/semantics.md, "Steering"), fused: one block per row.
#include "cuda/common.cuh"
#include "engine/ops.h"

namespace sa::cuda {

// One row of one slice: the block of work of the steer kernel.
struct SteerItem {
  int32_t slice, row;  // index into the SteerSlice array; row within the slice
};

// In place on x [rows, hidden]. slices and items in device memory; every slice has 1 <= n <=
// engine::kMaxSteerVectors vectors of hidden floats in device memory.
cudaError_t launch_steer(float* x, int hidden, const engine::SteerSlice* slices, const SteerItem* items, int n_items,
                         cudaStream_t stream);

// In place on every row of x [rows, hidden] (F32, BF16 or F16), math in float32, with the vectors and
// alphas of one slice (its row_offset and rows are ignored). For other engines (see steer_api.cu).
cudaError_t launch_steer_rows(void* x, DType dtype, int64_t rows, int hidden, const engine::SteerSlice& slice,
                              cudaStream_t stream);

}  // namespace sa::cuda
