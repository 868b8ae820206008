// The portable kernel variant: plain C++ that the compiler vectorises for the target's baseline
// (SSE2 on x86-64). Same lanes and lane sum as the others, with a multiply and an add in place of
// the fused multiply-add (the build forbids contraction), so its results differ from theirs in
// the last bits but never depend on the batch.
#include "cpu/gemm/gemm.h"

#include "cpu/gemm/gemm_tile.h"

namespace sa::gemm {
namespace {

struct Portable {
  struct Acc {
    float v[16];
  };
  static constexpr int kMR = 2, kNR = 2, kGemvNR = 4;

  static Acc zero() { return Acc{}; }
  static Acc fma(const Acc& a, const Acc& b, Acc acc) {
    for (int l = 0; l < 16; l++) acc.v[l] = acc.v[l] + a.v[l] * b.v[l];
    return acc;
  }
  static void store(float* p, const Acc& a) {
    for (int l = 0; l < 16; l++) p[l] = a.v[l];
  }

  template <DType D>
  static Acc load(const void* p, size_t i) {
    Acc a;
    for (int l = 0; l < 16; l++) a.v[l] = load_f32(p, D, i + size_t(l));
    return a;
  }
  template <DType D>
  static Acc load_tail(const void* p, size_t i, int n) {
    Acc a{};
    for (int l = 0; l < n; l++) a.v[l] = load_f32(p, D, i + size_t(l));
    return a;
  }

  static float sum(const Acc& a) {
    float s8[8], s4[4];
    for (int l = 0; l < 8; l++) s8[l] = a.v[l] + a.v[l + 8];
    for (int l = 0; l < 4; l++) s4[l] = s8[l] + s8[l + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
  }
};

void block_portable(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t c0, int32_t c1, float* out,
                    size_t ldo, float* scratch) {
  tiles::block_any<Portable>(x, rows, k, w, dt, c0, c1, out, ldo, scratch);
}

}  // namespace

Kernel baseline_kernel() { return {"baseline", &block_portable}; }

}  // namespace sa::gemm
