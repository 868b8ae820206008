#pragma once
// The Safety Alignment steering transform of one row (common/steer_constants.h), in float32.
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/steer_constants.h"

namespace sa {

inline void steer_row(float* x, int32_t hidden, const float* const* vectors, const float* alphas, int32_t n) {
  if (n <= 0) return;
  float xx = 0.f;
  for (int32_t j = 0; j < hidden; j++) xx += x[j] * x[j];
  const float norm_x = std::sqrt(xx);
  const float inv_x = steer_inv_norm(norm_x);
  thread_local std::vector<float> y;
  y.assign(size_t(hidden), 0.f);
  for (int32_t i = 0; i < n; i++) {
    const float* v = vectors[i];
    float vv = 0.f, xv = 0.f;
    for (int32_t j = 0; j < hidden; j++) {
      vv += v[j] * v[j];
      xv += x[j] * v[j];
    }
    const float coef = steer_coef(alphas[i], xv, norm_x, std::sqrt(vv));
    for (int32_t j = 0; j < hidden; j++) y[size_t(j)] += coef * v[j];
  }
  const float scale = steer_scale(n);
  float yy = 0.f;
  for (int32_t j = 0; j < hidden; j++) {
    y[size_t(j)] = x[j] * inv_x - scale * y[size_t(j)];
    yy += y[size_t(j)] * y[size_t(j)];
  }
  const float out_scale = steer_out_scale(norm_x, yy);
  for (int32_t j = 0; j < hidden; j++) x[j] = y[size_t(j)] * out_scale;
}

}  // namespace sa
