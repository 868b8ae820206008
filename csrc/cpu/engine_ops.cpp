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
#include "cpu/steer_math.h"

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
    for (int32_t r = 0; r < rows; r++)
      for (int32_t j = 0; j < hidden; j++) out[size_t(r) * hidden + j] = weight_any(table, dt, size_t(ids[r]) * hidden + j);
  }

  void rmsnorm(const float* x, const void* w, DType dt, int32_t rows, int32_t hidden, float eps, float* out) override {
    for (int32_t r = 0; r < rows; r++) {
      const float* xr = x + size_t(r) * hidden;
      double ss = 0;
      for (int32_t j = 0; j < hidden; j++) ss += double(xr[j]) * xr[j];
      const float inv = 1.0f / std::sqrt(float(ss / hidden) + eps);
      for (int32_t j = 0; j < hidden; j++) out[size_t(r) * hidden + j] = weight_any(w, dt, j) * (xr[j] * inv);
    }
  }

  void matmul(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t n, const void* bias, DType bias_dt, float* out) override {
    switch (dt) {
      case DType::F32: matmul_t<DType::F32>(x, rows, k, w, n, bias, bias_dt, out); break;
      case DType::BF16: matmul_t<DType::BF16>(x, rows, k, w, n, bias, bias_dt, out); break;
      default: matmul_t<DType::F16>(x, rows, k, w, n, bias, bias_dt, out); break;
    }
  }

  void rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions, const float* inv_freq, float scaling) override {
    const int32_t half = head_dim / 2;
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int32_t r = 0; r < rows; r++) {
      for (int32_t i = 0; i < half; i++) {
        const float angle = float(positions[r]) * inv_freq[i];  // float32 product, as the reference
        cs[size_t(i)] = float(std::cos(double(angle))) * scaling;
        sn[size_t(i)] = float(std::sin(double(angle))) * scaling;
      }
      for (int32_t h = 0; h < heads; h++) {
        float* v = x + (size_t(r) * heads + h) * head_dim;
        for (int32_t i = 0; i < half; i++) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cs[size_t(i)] - b * sn[size_t(i)];
          v[i + half] = b * cs[size_t(i)] + a * sn[size_t(i)];
        }
      }
    }
  }

  void attention(const float* q, const AttnSeq* seqs, int32_t n_seqs, const AttnShape& s, float* out) override {
    const int32_t group = s.n_heads / s.n_kv_heads;
    const size_t q_stride = size_t(s.n_heads) * s.head_dim, kv_stride = size_t(s.n_kv_heads) * s.head_dim;
    std::vector<std::pair<int32_t, int32_t>> work;  // (seq, row within seq)
    for (int32_t i = 0; i < n_seqs; i++)
      for (int32_t r = 0; r < seqs[i].n_new; r++) work.emplace_back(i, r);
    ThreadPool::shared().parallel_for(int64_t(work.size()), [&](int64_t w) {
      const AttnSeq& sq = seqs[work[size_t(w)].first];
      const int32_t r = work[size_t(w)].second;
      const int32_t pos = sq.start_pos + r;
      const int32_t first = s.sliding_window > 0 ? std::max(0, pos - s.sliding_window + 1) : 0;
      std::vector<float> scores(static_cast<size_t>(pos + 1));
      for (int32_t h = 0; h < s.n_heads; h++) {
        const float* qv = q + size_t(sq.row_offset + r) * q_stride + size_t(h) * s.head_dim;
        const int32_t kvh = h / group;
        float mx = -INFINITY;
        for (int32_t t = first; t <= pos; t++) {
          const float* kv = sq.k + size_t(t) * kv_stride + size_t(kvh) * s.head_dim;
          float d = 0.f;
          for (int32_t j = 0; j < s.head_dim; j++) d += qv[j] * kv[j];
          scores[size_t(t)] = d * s.scale;
          mx = std::max(mx, scores[size_t(t)]);
        }
        float sum = 0.f;
        for (int32_t t = first; t <= pos; t++) {
          scores[size_t(t)] = std::exp(scores[size_t(t)] - mx);
          sum += scores[size_t(t)];
        }
        float* o = out + size_t(sq.row_offset + r) * q_stride + size_t(h) * s.head_dim;
        for (int32_t j = 0; j < s.head_dim; j++) o[j] = 0.f;
        for (int32_t t = first; t <= pos; t++) {
          const float p = scores[size_t(t)] / sum;
          const float* vv = sq.v + size_t(t) * kv_stride + size_t(kvh) * s.head_dim;
          for (int32_t j = 0; j < s.head_dim; j++) o[j] += p * vv[j];
        }
      }
    });
  }

  void swiglu(const float* gate, const float* up, size_t n, float* out) override {
    for (size_t i = 0; i < n; i++) {
      const float g = gate[i];
      out[i] = (g / (1.0f + std::exp(-g))) * up[i];
    }
  }

  void add(float* x, const float* y, size_t n) override {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
  }

  void steer(float* x, int32_t hidden, const SteerSlice* slices, int32_t n_slices) override {
    for (int32_t s = 0; s < n_slices; s++) {
      const SteerSlice& sl = slices[s];
      for (int32_t r = 0; r < sl.rows; r++) steer_row(x + size_t(sl.row_offset + r) * hidden, hidden, sl.vectors, sl.alphas, sl.n);
    }
  }
};

}  // namespace

engine::DeviceOps* cpu_engine_ops() {
  static CpuOps ops;
  return &ops;
}

}  // namespace sa
