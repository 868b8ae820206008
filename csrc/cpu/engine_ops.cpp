// CPU engine ops. Rows are independent and each reduction runs in a fixed order, so a sequence
// gets the same result alone or inside any batch.
#include "cpu/engine_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.h"
#include "cpu/engine_rowwise.h"

namespace sa {
namespace {

using engine::AttnSeq;
using engine::AttnShape;
using engine::SteerSlice;

template <DType T>
inline float weight_at(const void* w, size_t i) {
  if constexpr (T == DType::F32) return static_cast<const float*>(w)[i];
  else if constexpr (T == DType::BF16) return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
  else return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
}

float weight_any(const void* w, DType dt, size_t i) {
  switch (dt) {
    case DType::F32: return weight_at<DType::F32>(w, i);
    case DType::BF16: return weight_at<DType::BF16>(w, i);
    default: return weight_at<DType::F16>(w, i);
  }
}

// Dot products of up to 4 rows of x with one weight row, 8 independent accumulators each.
template <DType T>
void dot_rows(const float* const* xs, int nx, const void* w, size_t w_off, int32_t k, float* out) {
  float acc[4][8] = {};
  int32_t j = 0;
  for (; j + 8 <= k; j += 8) {
    float wv[8];
    for (int u = 0; u < 8; u++) wv[u] = weight_at<T>(w, w_off + size_t(j + u));
    for (int r = 0; r < nx; r++)
      for (int u = 0; u < 8; u++) acc[r][u] += xs[r][j + u] * wv[u];
  }
  for (int r = 0; r < nx; r++) {
    float tail = 0.f;
    for (int32_t jj = j; jj < k; jj++) tail += xs[r][jj] * weight_at<T>(w, w_off + size_t(jj));
    out[r] = ((acc[r][0] + acc[r][4]) + (acc[r][1] + acc[r][5])) + ((acc[r][2] + acc[r][6]) + (acc[r][3] + acc[r][7])) + tail;
  }
}

template <DType T>
void matmul_t(const float* x, int32_t rows, int32_t k, const void* w, int32_t n, const void* bias, DType bias_dt, float* out) {
  // Parallel over blocks of output columns; each weight row is read once per group of 4 input rows.
  const int32_t cols_per_task = 16;
  const int64_t tasks = (n + cols_per_task - 1) / cols_per_task;
  ThreadPool::shared().parallel_for(tasks, [&](int64_t t) {
    const int32_t c0 = int32_t(t) * cols_per_task, c1 = std::min(n, c0 + cols_per_task);
    for (int32_t r0 = 0; r0 < rows; r0 += 4) {
      const int nx = std::min(4, rows - r0);
      const float* xs[4];
      for (int r = 0; r < nx; r++) xs[r] = x + size_t(r0 + r) * size_t(k);
      for (int32_t c = c0; c < c1; c++) {
        float res[4];
        dot_rows<T>(xs, nx, w, size_t(c) * size_t(k), k, res);
        const float b = bias ? weight_any(bias, bias_dt, size_t(c)) : 0.f;
        for (int r = 0; r < nx; r++) out[size_t(r0 + r) * size_t(n) + size_t(c)] = bias ? res[r] + b : res[r];
      }
    }
  });
}

class CpuOps final : public engine::DeviceOps {
 public:
  const char* name() const override { return "cpu"; }
  void* alloc(size_t bytes) override {
    void* p = nullptr;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) throw std::runtime_error("out of host memory allocating " + std::to_string(bytes) + " bytes");
    return p;
  }
  void release(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); }
  void synchronize() override {}

  void embed(const int32_t* ids, int32_t rows, const void* table, DType dt, int32_t hidden, float* out) override {
    cpu::embed(ids, rows, table, dt, hidden, out);
  }

  void rmsnorm(const float* x, const void* w, DType dt, int32_t rows, int32_t hidden, float eps, float* out) override {
    cpu::rmsnorm(x, w, dt, rows, hidden, eps, out);
  }

  void matmul(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t n, const void* bias, DType bias_dt, float* out) override {
    switch (dt) {
      case DType::F32: matmul_t<DType::F32>(x, rows, k, w, n, bias, bias_dt, out); break;
      case DType::BF16: matmul_t<DType::BF16>(x, rows, k, w, n, bias, bias_dt, out); break;
      default: matmul_t<DType::F16>(x, rows, k, w, n, bias, bias_dt, out); break;
    }
  }

  void rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions, const float* inv_freq, float scaling) override {
    cpu::rope(x, rows, heads, head_dim, positions, inv_freq, scaling);
  }

  void attention(const float* q, const AttnSeq* seqs, int32_t n_seqs, const AttnShape& s, float* out) override {
    cpu::attention(q, seqs, n_seqs, s, out);
  }

  void swiglu(const float* gate, const float* up, size_t n, float* out) override { cpu::swiglu(gate, up, n, out); }

  void add(float* x, const float* y, size_t n) override { cpu::add(x, y, n); }

  void steer(float* x, int32_t hidden, const SteerSlice* slices, int32_t n_slices) override {
    cpu::steer(x, hidden, slices, n_slices);
  }
};

}  // namespace

engine::DeviceOps* cpu_engine_ops() {
  static CpuOps ops;
  return &ops;
}

}  // namespace sa
