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
#include "cpu/hdr_ops.h"

namespace sa {
namespace {

// Elements per parallel task: the histogram's tasks each fill a histogram of their own; the apply
// ops' blocks are shorter, so that a chunk of a few hundred thousand elements spreads over the cores.
constexpr uint64_t kBlock = 1 << 18;
constexpr uint64_t kApplyBlock = 1 << 16;

int64_t block_count(uint64_t n, uint64_t block = kBlock) { return int64_t((n + block - 1) / block); }

int cpu_histogram(const sa_hdr_chunk* c, int32_t level, uint32_t prefix, uint64_t* hist,
                  sa_hdr_counts* counts) {
  const int64_t blocks = block_count(c->n);
  ThreadPool& pool = ThreadPool::shared();
  const int64_t tasks = std::min<int64_t>(pool.size(), blocks);
  std::vector<std::vector<uint32_t>> local(tasks);
  std::vector<sa_hdr_counts> task_counts(tasks, sa_hdr_counts{});
  with_dtypes(*c, [&](auto bt, auto ht, auto tt) {
    constexpr DType B = decltype(bt)::value, H = decltype(ht)::value, T = decltype(tt)::value;
    pool.parallel_for(tasks, [&](int64_t s) {
      local[s].assign(SA_HIST_BUCKETS, 0);
      uint32_t* h = local[s].data();
      uint64_t in_region = 0, nan = 0, bad_base = 0, bad_harmful = 0, bad_target = 0;
      const bool whole = c->whole_region, edit = c->edit_mask, has_target = c->target != nullptr;
      for (int64_t b = s; b < blocks; b += tasks) {
        const uint64_t begin = uint64_t(b) * kBlock, end = std::min(c->n, begin + kBlock);
        for (uint64_t i = begin; i < end; i++) {
          const float base = load_as<B>(c->base, i), harmful = load_as<H>(c->harmful, i);
          bad_base += nonfinite(base);
          bad_harmful += nonfinite(harmful);
          float target = 0.f;
          if (has_target) {
            target = load_as<T>(c->target, i);
            bad_target += nonfinite(target);
          }
          if (!whole && !(edit && target != base)) continue;
          in_region++;
          const uint32_t a = abs_bits(harmful - base);
          if (is_nan_bits(a)) { nan++; continue; }
          if (level == 0) h[a >> 16]++;
          else if ((a >> 16) == prefix) h[a & 0xffffu]++;
        }
      }
      sa_hdr_counts& tc = task_counts[s];
      tc.region = in_region;
      tc.nan = nan;
      tc.nonfinite_base = bad_base;
      tc.nonfinite_harmful = bad_harmful;
      tc.nonfinite_target = bad_target;
    });
  });
  for (int64_t s = 0; s < tasks; s++) {
    add_counts(counts, task_counts[s]);
    for (int k = 0; k < SA_HIST_BUCKETS; k++) hist[k] += local[s][k];
  }
  return 0;
}

// The per-element start of the apply ops: loads the three inputs, counts the non-finite ones and
// the region; true for a region element whose tau is not NaN (then tau and its magnitude's bits are set).
struct ApplyScan {
  uint64_t region = 0, nan = 0, bad_base = 0, bad_harmful = 0, bad_target = 0;
  template <DType B, DType H, DType T>
  bool region_tau(const sa_hdr_chunk& c, uint64_t i, float& target, float& tau, uint32_t& a) {
    const float base = load_as<B>(c.base, i), harmful = load_as<H>(c.harmful, i);
    target = load_as<T>(c.target, i);
    bad_target += nonfinite(target);
    bad_base += nonfinite(base);
    bad_harmful += nonfinite(harmful);
    if (!c.whole_region && !(c.edit_mask && target != base)) return false;
    region++;
    tau = harmful - base;
    a = abs_bits(tau);
    if (is_nan_bits(a)) { nan++; return false; }
    return true;
  }
  sa_hdr_counts counts(uint64_t kept, uint64_t ties, uint64_t bad_out) const {
    return sa_hdr_counts{region, nan, kept, ties, bad_base, bad_harmful, bad_target, bad_out};
  }
};

int cpu_apply(const sa_hdr_chunk* c, int32_t trim, uint32_t threshold_bits, float lambda, void* out,
              uint8_t* kept_mask, sa_hdr_counts* counts) {
  const int64_t blocks = block_count(c->n, kApplyBlock);
  std::vector<sa_hdr_counts> block_counts(blocks, sa_hdr_counts{});
  const size_t es = size_t(dtype_size(DType(c->target_dtype)));
  with_dtypes(*c, [&](auto bt, auto ht, auto tt) {
    constexpr DType B = decltype(bt)::value, H = decltype(ht)::value, T = decltype(tt)::value;
    ThreadPool::shared().parallel_for(blocks, [&](int64_t b) {
      const uint64_t begin = uint64_t(b) * kApplyBlock, end = std::min(c->n, begin + kApplyBlock);
      uint64_t k = 0, t = 0, bad_out = 0;
      ApplyScan scan;
      std::memcpy(static_cast<char*>(out) + begin * es, static_cast<const char*>(c->target) + begin * es,
                  (end - begin) * es);
      if (kept_mask) std::memset(kept_mask + begin, 0, end - begin);
      for (uint64_t i = begin; i < end; i++) {
        float target, tau;
        uint32_t a;
        if (!scan.region_tau<B, H, T>(*c, i, target, tau, a)) continue;
        if (trim && a < threshold_bits) continue;
        k++;
        if (trim && a == threshold_bits) t++;
        bad_out += store_checked<T>(out, i, hdr_patch(target, lambda, tau));
        if (kept_mask) kept_mask[i] = 1;
      }
      block_counts[b] = scan.counts(k, t, bad_out);
    });
  });
  for (int64_t b = 0; b < blocks; b++) add_counts(counts, block_counts[b]);
  return 0;
}

// One block of cpu_apply_band through the variant's vectorised scan, in runs whose band entries
// fit a buffer on the stack.
void scan_bf16_block(const sa_hdr_chunk& c, uint64_t begin, uint64_t end, const HdrScanBand& band, HdrScanBf16Fn scan_fn,
                     void* out, std::vector<sa_hdr_band_entry>& mine, ApplyScan& scan, sa_hdr_band_counts& result) {
  constexpr uint64_t kRun = 2048;
  sa_hdr_band_entry run_entries[kRun];
  HdrScanCounts k{};
  const auto* base = static_cast<const uint16_t*>(c.base);
  const auto* harmful = static_cast<const uint16_t*>(c.harmful);
  const auto* target = static_cast<const uint16_t*>(c.target);
  auto* written = static_cast<uint16_t*>(out);
  for (uint64_t i = begin; i < end; i += kRun) {
    const uint64_t n = std::min(kRun, end - i);
    const uint64_t found = scan_fn(base + i, harmful + i, target + i, written + i, n, uint32_t(i), band, run_entries, k);
    mine.insert(mine.end(), run_entries, run_entries + found);
  }
  scan.region += end - begin;
  scan.nan += k.nan;
  scan.bad_base += k.bad_base;
  scan.bad_harmful += k.bad_harmful;
  scan.bad_target += k.bad_target;
  result = sa_hdr_band_counts{scan.counts(k.kept, k.ties, k.bad_out), k.above, k.below, mine.size()};
}

// One parallel loop: the fused apply at the provisional threshold, the counts around the band, and
// the band's elements gathered per block, then joined in index order.
int cpu_apply_band(const gemm::Kernel* kernel, const sa_hdr_chunk* c, const sa_hdr_band* band, float lambda, void* out,
                   sa_hdr_band_entry* entries, uint64_t cap, sa_hdr_band_counts* counts) {
  const int64_t blocks = block_count(c->n, kApplyBlock);
  const bool all_bf16 = DType(c->base_dtype) == DType::BF16 && DType(c->harmful_dtype) == DType::BF16 && DType(c->target_dtype) == DType::BF16;
  if (blocks == 1 && cap >= c->n && all_bf16 && c->whole_region && kernel->hdr_scan_bf16) {
    // One block with room for every element in the band (the job's host chunks): scanned straight
    // into the caller's entries.
    if (out != c->target) std::memcpy(out, c->target, c->n * 2);
    HdrScanCounts k{};
    const uint64_t found = kernel->hdr_scan_bf16(static_cast<const uint16_t*>(c->base), static_cast<const uint16_t*>(c->harmful),
                                                 static_cast<const uint16_t*>(c->target), static_cast<uint16_t*>(out), c->n, 0,
                                                 HdrScanBand{band->lo_bits, band->hi_bits, band->provisional_bits, lambda}, entries, k);
    add_counts(&counts->counts, sa_hdr_counts{c->n, k.nan, k.kept, k.ties, k.bad_base, k.bad_harmful, k.bad_target, k.bad_out});
    counts->above += k.above;
    counts->below += k.below;
    counts->band += found;
    return 0;
  }
  std::vector<sa_hdr_band_counts> block_counts(blocks, sa_hdr_band_counts{});
  std::vector<std::vector<sa_hdr_band_entry>> found(blocks);
  const size_t es = size_t(dtype_size(DType(c->target_dtype)));
  const uint32_t lo = band->lo_bits, hi = band->hi_bits, provisional = band->provisional_bits;
  with_dtypes(*c, [&](auto bt, auto ht, auto tt) {
    constexpr DType B = decltype(bt)::value, H = decltype(ht)::value, T = decltype(tt)::value;
    ThreadPool::shared().parallel_for(blocks, [&](int64_t b) {
      const uint64_t begin = uint64_t(b) * kApplyBlock, end = std::min(c->n, begin + kApplyBlock);
      uint64_t k = 0, t = 0, bad_out = 0, above = 0, below = 0;
      ApplyScan scan;
      std::vector<sa_hdr_band_entry>& mine = found[b];
      if (out != c->target)
        std::memcpy(static_cast<char*>(out) + begin * es, static_cast<const char*>(c->target) + begin * es, (end - begin) * es);
      // An element with bits(|tau|) >= lo: counted above the band or kept in it, and written if kept.
      const auto place = [&](uint64_t i, float target, float tau, uint32_t a) {
        if (a >= hi) above++;
        else mine.push_back(sa_hdr_band_entry{uint32_t(i), tau, raw_bits<T>(c->target, i)});
        if (a < provisional) return;
        k++;
        if (a == provisional) t++;
        const uint32_t overflowed = store_checked<T>(out, i, hdr_patch(target, lambda, tau));
        if (a >= hi) bad_out += overflowed;
      };
      constexpr bool all_bf16 = B == DType::BF16 && H == DType::BF16 && T == DType::BF16;
      if (all_bf16 && c->whole_region && kernel->hdr_scan_bf16) {
        scan_bf16_block(*c, begin, end, HdrScanBand{lo, hi, provisional, lambda}, kernel->hdr_scan_bf16, out, mine, scan,
                        block_counts[b]);
        return;
      }
      if (!c->whole_region) {
        for (uint64_t i = begin; i < end; i++) {
          float target, tau;
          uint32_t a;
          if (!scan.region_tau<B, H, T>(*c, i, target, tau, a)) continue;
          if (a < lo) below++;
          else place(i, target, tau, a);
        }
      } else {
        // Every element is in the region: the magnitudes of a group first, in a loop without
        // branches that the compiler vectorises, then only the few at or above the band's bottom.
        constexpr uint64_t kGroup = 256;
        uint32_t mag[kGroup];
        float taus[kGroup];
        for (uint64_t g = begin; g < end; g += kGroup) {
          const uint64_t n = std::min(kGroup, end - g);
          uint64_t bad_b = 0, bad_h = 0, bad_t = 0;
          for (uint64_t j = 0; j < n; j++) {
            const float base = load_as<B>(c->base, g + j), harmful = load_as<H>(c->harmful, g + j);
            bad_b += nonfinite(base);
            bad_h += nonfinite(harmful);
            bad_t += nonfinite(load_as<T>(c->target, g + j));
            taus[j] = harmful - base;
            mag[j] = abs_bits(taus[j]);
          }
          scan.bad_base += bad_b;
          scan.bad_harmful += bad_h;
          scan.bad_target += bad_t;
          scan.region += n;
          for (uint64_t j = 0; j < n; j++) {
            const uint32_t a = mag[j];
            if (a < lo) below++;
            else if (is_nan_bits(a)) scan.nan++;
            else place(g + j, load_as<T>(c->target, g + j), taus[j], a);
          }
        }
      }
      block_counts[b] = sa_hdr_band_counts{scan.counts(k, t, bad_out), above, below, mine.size()};
    });
  });
  uint64_t filled = 0;
  for (int64_t b = 0; b < blocks; b++) {
    const sa_hdr_band_counts& bc = block_counts[b];
    add_counts(&counts->counts, bc.counts);
    counts->above += bc.above;
    counts->below += bc.below;
    counts->band += bc.band;
    const uint64_t n = std::min<uint64_t>(found[b].size(), cap - filled);
    std::memcpy(entries + filled, found[b].data(), n * sizeof(sa_hdr_band_entry));
    filled += n;
  }
  return 0;
}

}  // namespace

const cpu::HdrOps& cpu::hdr_ops() {
  static const HdrOps ops{cpu_histogram, cpu_apply, cpu_apply_band};
  return ops;
}

}  // namespace sa
