// The CPU backend's tables: the same HDR and engine ops in each, with matmul, attention, SwiGLU, the
// KV-cache narrowing and the single-pass HDR scan on the kernels of the table's variant. Every member runs behind
// backend/guard.h; the variant's kernels are fetched at the first op, so a table is safe to hold
// on any CPU and its ops run only where cpu/cpu_dispatch.cpp has chosen it.
#include "cpu/cpu_backend.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backend/guard.h"
#include "common/thread_pool.h"
#include "cpu/cpu_dispatch.h"
#include "cpu/engine_ops.h"
#include "cpu/engine_rowwise.h"
#include "cpu/hdr_ops.h"

namespace sa {
namespace {

using backend::Failure;
using backend::guarded;

int describe(char* buf, size_t cap, sa_error* err) {
  return guarded(err, [&] {
    std::snprintf(buf, cap, "{\"name\":\"cpu\",\"threads\":%d,%s}", ThreadPool::shared().size(), cpu_dispatch_json_members().c_str());
  });
}

int host_alloc(size_t bytes, void** out, sa_error* err) {
  return guarded(err, [&] {
    if (posix_memalign(out, 4096, bytes ? bytes : 1) != 0)
      throw Failure(SA_BACKEND_OUT_OF_MEMORY, "out of host memory allocating " + std::to_string(bytes) + " bytes");
  });
}

void host_free(void* p) { std::free(p); }

// The HDR ops return 0 or throw (cpu/hdr_ops.h).
int hdr_histogram(const sa_hdr_chunk* c, int32_t level, uint32_t prefix, uint64_t* hist, sa_hdr_counts* counts, sa_error* err) {
  return guarded(err, [&] { cpu::hdr_ops().histogram(c, level, prefix, hist, counts); });
}

int hdr_apply(const sa_hdr_chunk* c, int32_t trim, uint32_t threshold_bits, float lambda, void* out, uint8_t* kept_mask,
              sa_hdr_counts* counts, sa_error* err) {
  return guarded(err, [&] { cpu::hdr_ops().apply(c, trim, threshold_bits, lambda, out, kept_mask, counts); });
}

// The backend's buffers are host memory.
int alloc(size_t bytes, void** out, sa_error* err) {
  return guarded(err, [&] { *out = cpu::alloc(bytes); });
}

void release(void* p) { std::free(p); }

// upload and download.
int host_copy(void* dst, const void* src, size_t bytes, sa_error*) {
  std::memcpy(dst, src, bytes);
  return SA_BACKEND_OK;
}

int copy(void* dst, const void* src, size_t bytes, sa_error*) {
  std::memmove(dst, src, bytes);
  return SA_BACKEND_OK;
}

int synchronize(sa_error*) { return SA_BACKEND_OK; }

int upload_matrix(const void* src, int32_t dtype, int32_t n, int32_t k, int32_t precision, void** out, sa_error* err) {
  return guarded(err, [&] { *out = cpu::upload_matrix(src, DType(dtype), n, k, engine::MatmulPrecision(precision)); });
}

int32_t packs_matrices() { return 1; }

int check_matmul_precision(int32_t precision, sa_error* err) {
  return guarded(err, [&] {
    const std::string why = cpu::matmul_precision_unsupported(engine::MatmulPrecision(precision));
    if (!why.empty()) throw Failure(SA_BACKEND_UNSUPPORTED, why);
  });
}

int32_t kv_dtype_supported(int32_t dtype) { return cpu::kv_dtype_supported(DType(dtype)) ? 1 : 0; }

int embed(const int32_t* ids, int32_t rows, const void* table, int32_t dtype, int32_t hidden, float* out, sa_error* err) {
  return guarded(err, [&] { cpu::embed(ids, rows, table, DType(dtype), hidden, out); });
}

int rmsnorm(const float* x, const void* w, int32_t dtype, int32_t rows, int32_t hidden, float eps, float* out, sa_error* err) {
  return guarded(err, [&] { cpu::rmsnorm(x, w, DType(dtype), rows, hidden, eps, out); });
}

int rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions, const float* inv_freq,
         float attention_scaling, sa_error* err) {
  return guarded(err, [&] { cpu::rope(x, rows, heads, head_dim, positions, inv_freq, attention_scaling); });
}

int add(float* x, const float* y, size_t n, sa_error* err) {
  return guarded(err, [&] { cpu::add(x, y, n); });
}

int steer(float* x, int32_t hidden, const sa_steer_slice* slices, int32_t n_slices, sa_error* err) {
  return guarded(err, [&] { cpu::steer(x, hidden, slices, n_slices); });
}

// The ops that run on the variant's kernels.
template <gemm::Kernel (*Make)()>
struct Variant {
  static const gemm::Kernel& kernel() {
    static const gemm::Kernel k = Make();
    return k;
  }
  static int matmul(const float* x, int32_t rows, int32_t k, const void* w, int32_t dtype, int32_t n, const void* bias,
                    int32_t bias_dtype, float* out, int32_t precision, sa_error* err) {
    return guarded(err, [&] {
      cpu::matmul(kernel(), x, rows, k, w, DType(dtype), n, bias, DType(bias_dtype), out, engine::MatmulPrecision(precision));
    });
  }
  static int store_kv(void* dst, int32_t dtype, const float* src, size_t n, sa_error* err) {
    return guarded(err, [&] { cpu::store_kv(kernel(), dst, DType(dtype), src, n); });
  }
  static int attention(const float* q, const sa_attn_seq* seqs, int32_t n_seqs, const sa_attn_shape* shape, float* out,
                       sa_error* err) {
    return guarded(err, [&] { cpu::attention(kernel(), q, seqs, n_seqs, *shape, out); });
  }
  static int swiglu(const float* gate, const float* up, size_t n, float* out, sa_error* err) {
    return guarded(err, [&] { cpu::swiglu(kernel(), gate, up, n, out); });
  }
  static int hdr_apply_band(const sa_hdr_chunk* c, const sa_hdr_band* band, float lambda, void* out, sa_hdr_band_entry* entries,
                            uint64_t cap, sa_hdr_band_counts* counts, sa_error* err) {
    return guarded(err, [&] { cpu::hdr_ops().apply_band(&kernel(), c, band, lambda, out, entries, cap, counts); });
  }
};

template <gemm::Kernel (*Make)()>
constexpr sa_backend_table table_of(const char* variant) {
  using V = Variant<Make>;
  return sa_backend_table{
      SA_BACKEND_ABI_MAJOR, SA_BACKEND_ABI_MINOR, sizeof(sa_backend_table), "cpu", variant,
      describe,
      host_alloc, host_free, hdr_histogram, hdr_apply, V::hdr_apply_band,
      alloc, release, host_copy, host_copy, copy, synchronize,
      upload_matrix, packs_matrices, check_matmul_precision, kv_dtype_supported, V::store_kv,
      embed, rmsnorm, V::matmul, rope, V::attention, V::swiglu, add, steer,
  };
}

// Named as the kernels name themselves (gemm::Kernel::name).
constexpr sa_backend_table kTables[] = {
    table_of<&gemm::baseline_kernel>("baseline"),
#if defined(__x86_64__) || defined(__i386__)
    table_of<&gemm::avx2_kernel>("avx2"),
    table_of<&gemm::avx512_kernel>("avx512"),
#endif
};

}  // namespace

const sa_backend_table* cpu_backend(std::string* error) {
  const gemm::Kernel* chosen = cpu_gemm_kernel(error);
  if (!chosen) return nullptr;
  for (const sa_backend_table& t : kTables)
    if (std::strcmp(t.variant, chosen->name) == 0) return &t;
  *error = std::string("the CPU backend has no table for the kernel variant ") + chosen->name;
  return nullptr;
}

const sa_backend_table* cpu_baseline_backend() { return &kTables[0]; }

}  // namespace sa
