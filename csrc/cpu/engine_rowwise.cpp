// CPU engine ops other than matmul (see engine_rowwise.h). Each loop body is the serial reference
// loop restricted to a range of rows or elements; only the split of the work changes with the
// thread count.
#include "cpu/engine_rowwise.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/dtype.h"
#include "common/thread_pool.h"
#include "cpu/steer_math.h"

namespace sa::cpu {
namespace {

using engine::AttnSeq;
using engine::AttnShape;
using engine::SteerSlice;

// Loops over fewer elements than this run on the calling thread: waking the pool costs more.
constexpr int64_t kParallelMin = 32768;
// Elements per task, roughly, in split loops.
constexpr int64_t kTaskElements = 8192;

// Calls fn(begin, end) over ranges covering [0, n), in parallel when n units of unit_cost elements
// are worth it.
template <class Fn>
void for_ranges(int64_t n, int64_t unit_cost, Fn&& fn) {
  if (n <= 0) return;
  unit_cost = std::max<int64_t>(unit_cost, 1);
  if (n == 1 || n * unit_cost < kParallelMin || ThreadPool::shared().size() == 1) {
    fn(int64_t(0), n);
    return;
  }
  const int64_t per = std::max<int64_t>(1, kTaskElements / unit_cost);
  const int64_t tasks = (n + per - 1) / per;
  ThreadPool::shared().parallel_for(tasks, [&](int64_t t) { fn(t * per, std::min(n, (t + 1) * per)); }, 1);
}

// ---------------------------------------------------------------- attention

// Element i of a cache of dtype dt.
inline const void* cache_at(const void* cache, DType dt, size_t i) { return static_cast<const char*>(cache) + i * size_t(dtype_size(dt)); }

// Scores of n_q query heads (from qv on, one after another) that share one kv head, over positions
// [t0, t1): head g's score of position t goes to scores[g * (t1 - t0) + t - t0].
inline void score_positions(const gemm::Kernel& kernel, const float* qv, int32_t n_q, const AttnSeq& seq, size_t kv_stride,
                            int32_t kv_head, const AttnShape& s, int32_t t0, int32_t t1, float* scores) {
  const DType dt = DType(seq.kv_dtype);
  kernel.scores(qv, n_q, cache_at(seq.k, dt, size_t(t0) * kv_stride + size_t(kv_head) * s.head_dim), kv_stride, dt, t1 - t0, s.head_dim, s.scale, scores);
}

// o[j] for j in [j0, j1): the probability-weighted sum of v over [first, last], in position order,
// position first + i weighing p[i] / sum.
inline void weigh_values(const gemm::Kernel& kernel, const float* p, float sum, const AttnSeq& seq, size_t kv_stride,
                         int32_t kv_head, const AttnShape& s, int32_t first, int32_t last, int32_t j0, int32_t j1, float* o) {
  const DType dt = DType(seq.kv_dtype);
  kernel.weigh(p, sum, cache_at(seq.v, dt, size_t(first) * kv_stride + size_t(kv_head) * s.head_dim + size_t(j0)),
               kv_stride, dt, last - first + 1, j1 - j0, o + j0);
}

// One query row and one head of one sequence.
struct AttnUnit {
  const AttnSeq* seq;
  int32_t row, head, first, last;  // attends to positions [first, last]
};

// Few (row, head) units over a long context (decode of one or two sequences): splits each unit's
// positions (scores) and head dimensions (weighted sum) over the pool. Same arithmetic, same order.
constexpr int32_t kSplitMinPositions = 256;
constexpr int32_t kScoreBlock = 128;  // positions per scoring task
constexpr int32_t kDimBlock = 16;     // head dimensions per weighted-sum task

}  // namespace

void attention(const gemm::Kernel& kernel, const float* q, const AttnSeq* seqs, int32_t n_seqs, const AttnShape& s, float* out) {
  const int32_t group = s.n_heads / s.n_kv_heads;
  const size_t q_stride = size_t(s.n_heads) * s.head_dim, kv_stride = size_t(s.n_kv_heads) * s.head_dim;
  std::vector<AttnUnit> units;
  int32_t longest = 0;
  for (int32_t i = 0; i < n_seqs; i++)
    for (int32_t r = 0; r < seqs[i].n_new; r++) {
      const int32_t pos = seqs[i].start_pos + r;
      const int32_t first = s.sliding_window > 0 ? std::max(0, pos - s.sliding_window + 1) : 0;
      longest = std::max(longest, pos - first + 1);
      for (int32_t h = 0; h < s.n_heads; h++) units.push_back({&seqs[i], r, h, first, pos});
    }
  const int64_t n_units = int64_t(units.size());
  ThreadPool& pool = ThreadPool::shared();
  auto q_of = [&](const AttnUnit& u) { return q + size_t(u.seq->row_offset + u.row) * q_stride + size_t(u.head) * s.head_dim; };
  auto out_of = [&](const AttnUnit& u) { return out + size_t(u.seq->row_offset + u.row) * q_stride + size_t(u.head) * s.head_dim; };

  int64_t work = 0;  // multiply-adds over all units (scores and weighted sums)
  for (const AttnUnit& u : units) work += int64_t(u.last - u.first + 1) * 2 * s.head_dim;
  if (pool.size() == 1 || n_units >= 2 * int64_t(pool.size()) || longest < kSplitMinPositions) {
    // One task per (row, kv head): the group's query heads (consecutive units) read each key once.
    // Little work stays on the calling thread (one chunk): waking a worker costs more.
    const int64_t tasks = n_units / group;
    pool.parallel_for(tasks, [&](int64_t task) {
      const AttnUnit& u = units[size_t(task * group)];
      const int32_t span = u.last - u.first + 1, kvh = u.head / group;
      thread_local std::vector<float> scores;
      if (scores.size() < size_t(group) * size_t(span)) scores.resize(size_t(group) * size_t(span));
      score_positions(kernel, q_of(u), group, *u.seq, kv_stride, kvh, s, u.first, u.last + 1, scores.data());
      for (int32_t g = 0; g < group; g++) {
        float* head_scores = scores.data() + size_t(g) * size_t(span);
        const float sum = kernel.softmax(head_scores, span);
        weigh_values(kernel, head_scores, sum, *u.seq, kv_stride, kvh, s, u.first, u.last, 0, s.head_dim, out_of(units[size_t(task * group + g)]));
      }
    }, work < kParallelMin * 2 ? tasks : 0);
    return;
  }

  // Unit w's scores of positions first, first + 1, ... live from offsets[w] on in one buffer.
  std::vector<size_t> offsets(size_t(n_units) + 1, 0);
  for (int64_t w = 0; w < n_units; w++) offsets[size_t(w) + 1] = offsets[size_t(w)] + size_t(units[size_t(w)].last - units[size_t(w)].first + 1);
  std::vector<float> buffer(offsets.back());
  auto scores_of = [&](int64_t w) { return buffer.data() + offsets[size_t(w)]; };
  std::vector<std::pair<int32_t, int32_t>> blocks;  // (unit, first position of the block)
  for (int64_t w = 0; w < n_units; w++)
    for (int32_t t = units[size_t(w)].first; t <= units[size_t(w)].last; t += kScoreBlock) blocks.emplace_back(int32_t(w), t);
  pool.parallel_for(int64_t(blocks.size()), [&](int64_t b) {
    const int32_t w = blocks[size_t(b)].first, t0 = blocks[size_t(b)].second;
    const AttnUnit& u = units[size_t(w)];
    score_positions(kernel, q_of(u), 1, *u.seq, kv_stride, u.head / group, s, t0, std::min(u.last + 1, t0 + kScoreBlock), scores_of(w) + (t0 - u.first));
  });
  std::vector<float> sums(static_cast<size_t>(n_units));
  pool.parallel_for(n_units, [&](int64_t w) {
    sums[size_t(w)] = kernel.softmax(scores_of(w), units[size_t(w)].last - units[size_t(w)].first + 1);
  }, 1);
  const int32_t dim_blocks = (s.head_dim + kDimBlock - 1) / kDimBlock;
  pool.parallel_for(n_units * dim_blocks, [&](int64_t task) {
    const int64_t w = task / dim_blocks;
    const int32_t j0 = int32_t(task % dim_blocks) * kDimBlock, j1 = std::min(s.head_dim, j0 + kDimBlock);
    const AttnUnit& u = units[size_t(w)];
    weigh_values(kernel, scores_of(w), sums[size_t(w)], *u.seq, kv_stride, u.head / group, s, u.first, u.last, j0, j1, out_of(u));
  }, 1);
}

// ---------------------------------------------------------------- per row

void embed(const int32_t* ids, int32_t rows, const void* table, DType dt, int32_t hidden, float* out) {
  with_dtype(dt, [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    for_ranges(rows, hidden, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++)
        for (int32_t j = 0; j < hidden; j++) out[size_t(r) * hidden + j] = load_as<T>(table, uint64_t(ids[r]) * hidden + j);
    });
  });
}

void rmsnorm(const float* x, const void* w, DType dt, int32_t rows, int32_t hidden, float eps, float* out) {
  with_dtype(dt, [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    for_ranges(rows, hidden, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        const float* xr = x + size_t(r) * hidden;
        double ss = 0;
        for (int32_t j = 0; j < hidden; j++) ss += double(xr[j]) * xr[j];
        const float inv = 1.0f / std::sqrt(float(ss / hidden) + eps);
        for (int32_t j = 0; j < hidden; j++) out[size_t(r) * hidden + j] = load_as<T>(w, uint64_t(j)) * (xr[j] * inv);
      }
    });
  });
}

void rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions, const float* inv_freq, float scaling) {
  const int32_t half = head_dim / 2;
  for_ranges(rows, int64_t(heads) * head_dim, [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> cs, sn;
    cs.resize(size_t(half));
    sn.resize(size_t(half));
    for (int64_t r = r0; r < r1; r++) {
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
  });
}

void steer(float* x, int32_t hidden, const SteerSlice* slices, int32_t n_slices) {
  std::vector<std::pair<int32_t, int32_t>> rows;  // (slice, row within it)
  int64_t work = 0;
  for (int32_t i = 0; i < n_slices; i++)
    if (slices[i].n > 0)
      for (int32_t r = 0; r < slices[i].rows; r++) {
        rows.emplace_back(i, r);
        work += int64_t(hidden) * (slices[i].n + 3);
      }
  const int64_t n = int64_t(rows.size());
  for_ranges(n, n > 0 ? work / n : 1, [&](int64_t a, int64_t b) {
    for (int64_t k = a; k < b; k++) {
      const SteerSlice& sl = slices[rows[size_t(k)].first];
      steer_row(x + size_t(sl.row_offset + rows[size_t(k)].second) * hidden, hidden, sl.vectors, sl.alphas, sl.n);
    }
  });
}

// ---------------------------------------------------------------- element-wise

void swiglu(const gemm::Kernel& kernel, const float* gate, const float* up, size_t n, float* out) {
  for_ranges(int64_t(n), 1, [&](int64_t a, int64_t b) { kernel.swiglu(gate + a, up + a, size_t(b - a), out + a); });
}

void add(float* x, const float* y, size_t n) {
  for_ranges(int64_t(n), 1, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; i++) x[i] += y[i];
  });
}

}  // namespace sa::cpu
