#pragma once
// The Safety Alignment steering transform of one row (docs/semantics.md, "Steering"), in float32:
//   x <- ||x|| * normalize(normalize(x) - 0.1 * sum_i alpha_i (1 + relu(cos(x, v_i))) normalize(v_i) / n)
#include <cmath>
#include <cstdint>
#include <vector>

namespace sa {

inline void steer_row(float* x, int32_t hidden, const float* const* vectors, const float* alphas, int32_t n) {
  if (n <= 0) return;
  float xx = 0.f;
  for (int32_t j = 0; j < hidden; j++) xx += x[j] * x[j];
  const float norm_x = std::sqrt(xx);
  const float inv_x = 1.0f / std::fmax(norm_x, 1e-12f);
  thread_local std::vector<float> y;
  y.assign(size_t(hidden), 0.f);
  for (int32_t i = 0; i < n; i++) {
    const float* v = vectors[i];
    float vv = 0.f, xv = 0.f;
    for (int32_t j = 0; j < hidden; j++) {
      vv += v[j] * v[j];
      xv += x[j] * v[j];
    }
    const float norm_v = std::sqrt(vv);
    const float cos = xv / std::fmax(norm_x * norm_v, 1e-8f);
    const float coef = alphas[i] * (1.0f + std::fmax(cos, 0.0f)) / std::fmax(norm_v, 1e-12f);
    for (int32_t j = 0; j < hidden; j++) y[size_t(j)] += coef * v[j];
  }
  const float scale = 0.1f / float(n);
  float yy = 0.f;
  for (int32_t j = 0; j < hidden; j++) {
    y[size_t(j)] = x[j] * inv_x - scale * y[size_t(j)];
    yy += y[size_t(j)] * y[size_t(j)];
  }
  const float out_scale = norm_x / std::fmax(std::sqrt(yy), 1e-12f);
  for (int32_t j = 0; j < hidden; j++) x[j] = y[size_t(j)] * out_scale;
}

}  // namespace sa
