// CPU engine ops. Rows are independent and each reduction runs in a fixed order, so a sequence
// gets the same result alone or inside any batch.
#include "cpu/engine_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.h"
#include "cpu/cpu_dispatch.h"
#include "cpu/engine_rowwise.h"

namespace sa {
namespace {

using engine::AttnSeq;
using engine::AttnShape;
using engine::SteerSlice;

// out[rows, n] = x . W^T (+ bias) through the chosen kernel variant, W packed (cpu/gemm/gemm.h),
// parallel over blocks of output columns. Every element is computed in the kernels' fixed order, so
// the split over threads and the number of rows do not change it; the bias is added after the sum.
constexpr int64_t kMinParallelMacs = int64_t(1) << 19;

// Runs block(c0, c1) over blocks of the n output columns, in parallel, then adds the bias.
template <class Block>
void column_blocks(int32_t rows, int32_t k, int32_t n, const void* bias, DType bias_dt, float* out, const Block& block) {
  // One row streams the weights: wider blocks keep more panels in flight.
  const int32_t cols_per_task = (rows == 1 ? 8 : 4) * gemm::kPanelColumns;
  const int64_t tasks = (n + cols_per_task - 1) / cols_per_task;
  // Work this small costs less on the calling thread than waking a worker (which may not even be
  // scheduled on a loaded machine); one chunk keeps it there. The results do not depend on the split.
  const bool tiny = int64_t(rows) * int64_t(n) * int64_t(k) < kMinParallelMacs;
  ThreadPool::shared().parallel_for(tasks, [&](int64_t t) {
    const int32_t c0 = int32_t(t) * cols_per_task, c1 = std::min(n, c0 + cols_per_task);
    block(c0, c1);
    if (!bias) return;
    for (int32_t r = 0; r < rows; r++)
      for (int32_t c = c0; c < c1; c++) out[size_t(r) * size_t(n) + size_t(c)] += load_f32(bias, bias_dt, size_t(c));
  }, tiny ? tasks : 0);
}

void matmul_t(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t n, const void* bias, DType bias_dt,
              float* out, engine::MatmulPrecision precision) {
  if (precision == engine::MatmulPrecision::Bf16 && dt == DType::BF16) {
    std::string why;
    const gemm::PairKernel* pairs = cpu_pair_kernel(&why);
    if (!pairs) throw std::runtime_error("bf16 products cannot run: " + why);
    const int32_t words = (k + 1) / 2;
    const std::unique_ptr<uint32_t[]> xp(new uint32_t[size_t(rows) * size_t(words)]);
    pairs->to_pairs(x, size_t(rows), k, xp.get());
    column_blocks(rows, k, n, bias, bias_dt, out, [&](int32_t c0, int32_t c1) {
      pairs->block(xp.get(), rows, words, static_cast<const uint32_t*>(w), c0, c1, out + c0, size_t(n));
    });
    return;
  }
  const gemm::Kernel& kernel = cpu_gemm();
  column_blocks(rows, k, n, bias, bias_dt, out, [&](int32_t c0, int32_t c1) { kernel.block(x, rows, k, w, dt, c0, c1, out + c0, size_t(n)); });
}

void* host_alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) throw std::runtime_error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  return p;
}

class CpuOps final : public engine::DeviceOps {
 public:
  const char* name() const override { return "cpu"; }
  void* alloc(size_t bytes) override { return host_alloc(bytes); }
  void release(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); }
  void synchronize() override {}

  bool packs_matrices() const override { return true; }
  bool kv_dtype_supported(DType dt) const override { return dt == DType::F32 || dt == DType::BF16 || dt == DType::F16; }
  void store_kv(void* dst, DType dt, const float* src, size_t n) override {
    if (dt == DType::F32) {
      std::memcpy(dst, src, n * 4);
      return;
    }
    cpu_gemm().narrow(src, dt, dst, n);
  }
  void* upload_matrix(const void* src, DType dt, int32_t n, int32_t k, engine::MatmulPrecision precision) override {
    if (precision == engine::MatmulPrecision::Bf16 && dt == DType::BF16) {
      void* p = host_alloc(gemm::packed_pair_words(n, k) * sizeof(uint32_t));
      gemm::pack_matrix_pairs(static_cast<const uint16_t*>(src), n, k, static_cast<uint32_t*>(p));
      return p;
    }
    void* p = host_alloc(gemm::packed_matrix_elements(n, k) * size_t(dtype_size(dt)));
    gemm::pack_matrix(src, dt, n, k, p);
    return p;
  }

  std::string matmul_precision_unsupported(engine::MatmulPrecision precision) const override {
    if (precision == engine::MatmulPrecision::F32) return "";
    std::string why;
    return cpu_pair_kernel(&why) ? "" : why;
  }

  void embed(const int32_t* ids, int32_t rows, const void* table, DType dt, int32_t hidden, float* out) override {
    cpu::embed(ids, rows, table, dt, hidden, out);
  }

  void rmsnorm(const float* x, const void* w, DType dt, int32_t rows, int32_t hidden, float eps, float* out) override {
    cpu::rmsnorm(x, w, dt, rows, hidden, eps, out);
  }

  void matmul(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t n, const void* bias, DType bias_dt, float* out,
              engine::MatmulPrecision precision) override {
    matmul_t(x, rows, k, w, dt, n, bias, bias_dt, out, precision);
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
