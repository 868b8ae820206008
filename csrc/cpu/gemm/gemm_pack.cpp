// Packing of weight matrices into the panels of gemm.h (once, at load).
#include <cstring>

#include "common/thread_pool.h"
#include "cpu/gemm/gemm.h"

namespace sa::gemm {
namespace {

template <typename T>
void pack_panel(const T* src, int32_t n, int32_t k, int32_t panel, T* dst) {
  T* out = dst + size_t(panel) * kPanelColumns * size_t(k);
  const int32_t c0 = panel * kPanelColumns;
  const int32_t cols = n - c0 < kPanelColumns ? n - c0 : kPanelColumns;
  if (cols < kPanelColumns) std::memset(out, 0, sizeof(T) * kPanelColumns * size_t(k));
  for (int32_t c = 0; c < cols; c++) {
    const T* row = src + size_t(c0 + c) * size_t(k);
    for (int32_t j = 0; j < k; j++) out[size_t(j) * kPanelColumns + size_t(c)] = row[j];
  }
}

}  // namespace

void pack_matrix(const void* src, DType dt, int32_t n, int32_t k, void* dst) {
  const int64_t panels = (n + kPanelColumns - 1) / kPanelColumns;
  ThreadPool::shared().parallel_for(panels, [&](int64_t p) {
    if (dt == DType::F32) pack_panel(static_cast<const float*>(src), n, k, int32_t(p), static_cast<float*>(dst));
    else pack_panel(static_cast<const uint16_t*>(src), n, k, int32_t(p), static_cast<uint16_t*>(dst));
  });
}

void pack_matrix_pairs(const uint16_t* src, int32_t n, int32_t k, uint32_t* dst) {
  const int64_t panels = (n + kPanelColumns - 1) / kPanelColumns;
  const int32_t pairs = (k + 1) / 2;
  ThreadPool::shared().parallel_for(panels, [&](int64_t p) {
    uint32_t* out = dst + size_t(p) * kPanelColumns * size_t(pairs);
    const int32_t c0 = int32_t(p) * kPanelColumns;
    const int32_t cols = n - c0 < kPanelColumns ? n - c0 : kPanelColumns;
    if (cols < kPanelColumns) std::memset(out, 0, sizeof(uint32_t) * kPanelColumns * size_t(pairs));
    for (int32_t c = 0; c < cols; c++) {
      const uint16_t* row = src + size_t(c0 + c) * size_t(k);
      for (int32_t i = 0; i < pairs; i++) {
        const uint32_t second = 2 * i + 1 < k ? row[2 * i + 1] : 0u;
        out[size_t(i) * kPanelColumns + size_t(c)] = uint32_t(row[2 * i]) | second << 16;
      }
    }
  });
}

}  // namespace sa::gemm
