#pragma once
// The constants and scalar steps of the Safety Alignment steering transform (docs/semantics.md,
// "Steering"), shared by the CPU reference (cpu/steer_math.h) and the CUDA kernel (cuda/steer.cu) so
// that both compute every scalar with the same operations:
//   x <- ||x|| * normalize(normalize(x) - kSteerStrength / n * sum_i coef_i v_i)
//   coef_i = alpha_i (1 + relu(cos(x, v_i))) / ||v_i||
#include <cmath>

#include "common/dtype.h"  // SA_HD

namespace sa {

constexpr float kSteerStrength = 0.1f;    // the weight of the steering sum against normalize(x)
constexpr float kSteerNormFloor = 1e-12f;  // a norm below it divides as if it were this
constexpr float kSteerCosFloor = 1e-8f;    // the same for the ||x|| ||v|| under the cosine

// 1 / ||x||, from ||x||.
SA_HD float steer_inv_norm(float norm) { return 1.0f / fmaxf(norm, kSteerNormFloor); }

// coef_i from alpha_i, x.v_i, ||x|| and ||v_i||.
SA_HD float steer_coef(float alpha, float xv, float norm_x, float norm_v) {
  const float cosine = xv / fmaxf(norm_x * norm_v, kSteerCosFloor);
  return alpha * (1.0f + fmaxf(cosine, 0.0f)) / fmaxf(norm_v, kSteerNormFloor);
}

// The factor of the steering sum for n vectors.
SA_HD float steer_scale(int n) { return kSteerStrength / float(n); }

// The factor that gives y (with y.y = yy) the norm ||x||.
SA_HD float steer_out_scale(float norm_x, float yy) { return norm_x / fmaxf(sqrtf(yy), kSteerNormFloor); }

}  // namespace sa
