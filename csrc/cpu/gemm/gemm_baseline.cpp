// The portable kernel variant: plain C++ that the compiler vectorises for the target's baseline
// (SSE2 on x86-64). The order of gemm.h with a multiply and an add in place of the fused
// multiply-add (the build forbids contraction), so its results differ from the others' in the
// last bits but never depend on the batch.
#include "cpu/gemm/gemm.h"

#include <cmath>

#include "cpu/gemm/gemm_tile.h"

namespace sa::gemm {
namespace {

struct Portable {
  struct Vec {
    float v[16];
  };
  using Bcast = float;
  static constexpr int kMR = 4, kNV = 1, kGemvNV = 2;

  static Vec zero() { return Vec{}; }
  static Bcast bcast(float f) { return f; }
  static Vec fma(Bcast b, const Vec& w, Vec acc) {
    for (int l = 0; l < 16; l++) acc.v[l] = acc.v[l] + b * w.v[l];
    return acc;
  }
  static Vec fma_lanes(const Vec& a, const Vec& b, Vec acc) {
    for (int l = 0; l < 16; l++) acc.v[l] = acc.v[l] + a.v[l] * b.v[l];
    return acc;
  }
  template <class Op>
  static Vec each(const Vec& a, const Vec& b, Op op) {
    Vec r;
    for (int l = 0; l < 16; l++) r.v[l] = op(a.v[l], b.v[l]);
    return r;
  }
  static Vec splat(float f) {
    Vec r;
    for (int l = 0; l < 16; l++) r.v[l] = f;
    return r;
  }
  static Vec add(const Vec& a, const Vec& b) { return each(a, b, [](float x, float y) { return x + y; }); }
  static Vec sub(const Vec& a, const Vec& b) { return each(a, b, [](float x, float y) { return x - y; }); }
  static Vec mul(const Vec& a, const Vec& b) { return each(a, b, [](float x, float y) { return x * y; }); }
  static Vec div(const Vec& a, const Vec& b) { return each(a, b, [](float x, float y) { return x / y; }); }
  static Vec min(const Vec& a, const Vec& b) { return each(a, b, [](float x, float y) { return y < x ? y : x; }); }
  static Vec max(const Vec& a, const Vec& b) { return each(a, b, [](float x, float y) { return y > x ? y : x; }); }
  static Vec round(const Vec& a) { return each(a, a, [](float x, float) { return std::nearbyint(x); }); }
  static constexpr bool kF16Stores = false;
  static void store_f16(uint16_t*, const Vec&) {}
  static Vec pow2(const Vec& n) {
    return each(n, n, [](float x, float) { return bits_f32(uint32_t(int32_t(x) + 127) << 23); });
  }
  static float sum(Vec a) {
    for (int width = 8; width > 0; width /= 2)
      for (int l = 0; l < width; l++) a.v[l] = a.v[l] + a.v[l + width];
    return a.v[0];
  }
  static void store(float* p, const Vec& a) {
    for (int l = 0; l < 16; l++) p[l] = a.v[l];
  }
  static void store_n(float* p, const Vec& a, int n) {
    for (int l = 0; l < n; l++) p[l] = a.v[l];
  }
  static Vec load_n(const float* p, int n) {
    Vec a{};
    for (int l = 0; l < n; l++) a.v[l] = p[l];
    return a;
  }

  template <DType D>
  static Vec load(const void* p, size_t i) {
    Vec a;
    for (int l = 0; l < 16; l++) a.v[l] = load_f32(p, D, i + size_t(l));
    return a;
  }
};

void block_portable(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t c0, int32_t c1, float* out,
                    size_t ldo) {
  tiles::block_any<Portable>(x, rows, k, w, dt, c0, c1, out, ldo);
}

}  // namespace

Kernel baseline_kernel() { return {"baseline", &block_portable, &tiles::scores_any<Portable>, &tiles::weigh_any<Portable>,
                                  &tiles::swiglu<Portable>, &tiles::softmax<Portable>, &tiles::narrow<Portable>, nullptr}; }

}  // namespace sa::gemm
