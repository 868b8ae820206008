// CPU engine ops. Rows are independent and each reduction runs in a fixed order, so a sequence
// gets the same result alone or inside any batch.
#include "cpu/engine_ops.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "backend/guard.h"
#include "common/thread_pool.h"
#include "cpu/cpu_dispatch.h"

namespace sa::cpu {
namespace {

// Every element of a matmul is computed in the kernels' fixed order, so the split over threads and
// the number of rows do not change it; the bias is added after the sum.
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

bool bf16_products(engine::MatmulPrecision precision, DType dt) {
  return precision == engine::MatmulPrecision::Bf16 && dt == DType::BF16;
}

}  // namespace

void* alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0)
    throw backend::Failure(SA_BACKEND_OUT_OF_MEMORY, "out of host memory allocating " + std::to_string(bytes) + " bytes");
  return p;
}

void* upload_matrix(const void* src, DType dt, int32_t n, int32_t k, engine::MatmulPrecision precision) {
  if (bf16_products(precision, dt)) {
    void* p = alloc(gemm::packed_pair_words(n, k) * sizeof(uint32_t));
    gemm::pack_matrix_pairs(static_cast<const uint16_t*>(src), n, k, static_cast<uint32_t*>(p));
    return p;
  }
  void* p = alloc(gemm::packed_matrix_elements(n, k) * size_t(dtype_size(dt)));
  gemm::pack_matrix(src, dt, n, k, p);
  return p;
}

std::string matmul_precision_unsupported(engine::MatmulPrecision precision) {
  if (precision == engine::MatmulPrecision::F32) return "";
  std::string why;
  return cpu_pair_kernel(&why) ? "" : why;
}

void matmul(const gemm::Kernel& kernel, const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t n,
            const void* bias, DType bias_dt, float* out, engine::MatmulPrecision precision) {
  if (bf16_products(precision, dt)) {
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
  column_blocks(rows, k, n, bias, bias_dt, out, [&](int32_t c0, int32_t c1) { kernel.block(x, rows, k, w, dt, c0, c1, out + c0, size_t(n)); });
}

bool kv_dtype_supported(DType dt) { return dt == DType::F32 || dt == DType::BF16 || dt == DType::F16; }

void store_kv(const gemm::Kernel& kernel, void* dst, DType dt, const float* src, size_t n) {
  if (dt == DType::F32) std::memcpy(dst, src, n * 4);
  else kernel.narrow(src, dt, dst, n);
}

}  // namespace sa::cpu
