// CPU implementation of the HDR ops: the histogram passes over |tau| and the fused apply pass.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/hdr_math.h"
#include "common/thread_pool.h"
#include "cpu/cpu_backend.h"

namespace sa {
namespace {

thread_local std::string cpu_error;
constexpr uint64_t kBlock = 1 << 18;  // elements per parallel task

int64_t block_count(uint64_t n) { return int64_t((n + kBlock - 1) / kBlock); }

int cpu_describe(char* buf, size_t cap) {
  std::snprintf(buf, cap, "{\"name\":\"cpu\",\"threads\":%d}", ThreadPool::shared().size());
  return 0;
}

void* cpu_host_alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 4096, bytes ? bytes : 1) != 0) return nullptr;
  return p;
}

void cpu_host_free(void* p) { std::free(p); }

int cpu_histogram(const sa_hdr_chunk* c, int32_t level, uint32_t prefix, uint64_t* hist,
                  sa_hdr_counts* counts) {
  const int64_t blocks = block_count(c->n);
  ThreadPool& pool = ThreadPool::shared();
  const int64_t tasks = std::min<int64_t>(pool.size(), blocks);
  std::vector<std::vector<uint32_t>> local(tasks);
  std::vector<uint64_t> region(tasks, 0), nans(tasks, 0);
  with_dtypes(*c, [&](auto bt, auto ht, auto tt) {
    constexpr DType B = decltype(bt)::value, H = decltype(ht)::value, T = decltype(tt)::value;
    pool.parallel_for(tasks, [&](int64_t s) {
      local[s].assign(SA_HIST_BUCKETS, 0);
      uint32_t* h = local[s].data();
      uint64_t in_region = 0, nan = 0;
      const bool whole = c->whole_region, edit = c->edit_mask;
      for (int64_t b = s; b < blocks; b += tasks) {
        const uint64_t begin = uint64_t(b) * kBlock, end = std::min(c->n, begin + kBlock);
        for (uint64_t i = begin; i < end; i++) {
          if (!whole && !(edit && load_as<T>(c->target, i) != load_as<B>(c->base, i))) continue;
          in_region++;
          const uint32_t a = abs_bits(load_as<H>(c->harmful, i) - load_as<B>(c->base, i));
          if (is_nan_bits(a)) { nan++; continue; }
          if (level == 0) h[a >> 16]++;
          else if ((a >> 16) == prefix) h[a & 0xffffu]++;
        }
      }
      region[s] = in_region;
      nans[s] = nan;
    });
  });
  for (int64_t s = 0; s < tasks; s++) {
    counts->region += region[s];
    counts->nan += nans[s];
    for (int k = 0; k < SA_HIST_BUCKETS; k++) hist[k] += local[s][k];
  }
  return 0;
}

int cpu_apply(const sa_hdr_chunk* c, int32_t trim, uint32_t threshold_bits, float lambda, void* out,
              uint8_t* kept_mask, sa_hdr_counts* counts) {
  const int64_t blocks = block_count(c->n);
  std::vector<uint64_t> region(blocks), kept(blocks), ties(blocks), nans(blocks);
  const size_t es = size_t(dtype_size(DType(c->target_dtype)));
  with_dtypes(*c, [&](auto bt, auto ht, auto tt) {
    constexpr DType B = decltype(bt)::value, H = decltype(ht)::value, T = decltype(tt)::value;
    ThreadPool::shared().parallel_for(blocks, [&](int64_t b) {
      const uint64_t begin = uint64_t(b) * kBlock, end = std::min(c->n, begin + kBlock);
      uint64_t r = 0, k = 0, t = 0, nan = 0;
      std::memcpy(static_cast<char*>(out) + begin * es, static_cast<const char*>(c->target) + begin * es,
                  (end - begin) * es);
      if (kept_mask) std::memset(kept_mask + begin, 0, end - begin);
      const bool whole = c->whole_region, edit = c->edit_mask;
      for (uint64_t i = begin; i < end; i++) {
        const float target = load_as<T>(c->target, i);
        if (!whole && !(edit && target != load_as<B>(c->base, i))) continue;
        r++;
        const float tau = load_as<H>(c->harmful, i) - load_as<B>(c->base, i);
        const uint32_t a = abs_bits(tau);
        if (is_nan_bits(a)) { nan++; continue; }
        if (trim && a < threshold_bits) continue;
        k++;
        if (trim && a == threshold_bits) t++;
        store_as<T>(out, i, hdr_patch(target, lambda, tau));
        if (kept_mask) kept_mask[i] = 1;
      }
      region[b] = r; kept[b] = k; ties[b] = t; nans[b] = nan;
    });
  });
  for (int64_t b = 0; b < blocks; b++) {
    counts->region += region[b];
    counts->kept += kept[b];
    counts->ties += ties[b];
    counts->nan += nans[b];
  }
  return 0;
}

const char* cpu_last_error() { return cpu_error.c_str(); }

const sa_backend kCpuBackend = {
    SA_BACKEND_ABI_VERSION, "cpu", cpu_describe, cpu_host_alloc, cpu_host_free,
    cpu_histogram, cpu_apply, cpu_last_error,
};

}  // namespace

const sa_backend* cpu_backend() { return &kCpuBackend; }

}  // namespace sa
