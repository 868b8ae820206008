// The CUDA library's table (backend/backend_api.h) and its one entry point, which the addon finds
// with dlsym. Built with a static CUDA runtime, so the library needs only the driver at run time.
#include "backend/guard.h"
#include "cuda/device.cuh"
#include "cuda/engine_ops.cuh"
#include "cuda/hdr_ops.cuh"

namespace sa::cuda {
namespace {

namespace e = engine_ops;

constexpr sa_backend_table kTable = {
    SA_BACKEND_ABI_MAJOR, SA_BACKEND_ABI_MINOR, sizeof(sa_backend_table), "cuda", "default",
    describe,
    host_alloc, host_free, hdr_histogram, hdr_apply, hdr_apply_band,
    e::alloc, e::release, e::upload, e::download, e::copy, e::synchronize,
    e::upload_matrix, e::packs_matrices, e::check_matmul_precision, e::kv_dtype_supported, e::store_kv,
    e::embed, e::rmsnorm, e::matmul, e::rope, e::attention, e::swiglu, e::add, e::steer,
};

constexpr bool same_name(const char* a, const char* b) { return *a == *b && (*a == '\0' || same_name(a + 1, b + 1)); }
static_assert(same_name(SA_BACKEND_ENTRY_SYMBOL, "sa_backend_entry_v1"), "the entry point is defined below under this name");

}  // namespace
}  // namespace sa::cuda

extern "C" __attribute__((visibility("default"))) int sa_backend_entry_v1(const sa_backend_table** table, sa_error* err) {
  const sa::cuda::Device& d = sa::cuda::device();
  if (d.index < 0) return sa::backend::fail(err, SA_BACKEND_NO_DEVICE, d.why.c_str());
  *table = &sa::cuda::kTable;
  return SA_BACKEND_OK;
}
