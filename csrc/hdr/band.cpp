#include "hdr/band.h"

#include <algorithm>
#include <cmath>

#include "common/hdr_math.h"

namespace sa {
namespace {

constexpr uint32_t kAllBits = 0xffffffffu;
// Standard errors of the sampled proportion between the band's edges and the threshold.
constexpr double kSigmas = 7.0;

// Standard error of the proportion of sampled elements below `bits`. The blocks lie in order
// through the checkpoint (a systematic sample), so the spread comes from differences between
// neighbouring blocks, which cancel the differences between tensors; never below the binomial one.
double proportion_error(const RegionSample& s, uint32_t bits) {
  const double m = double(s.bits.size());
  const size_t blocks = s.block_ends.size();
  std::vector<double> below(blocks, 0), size(blocks, 0);
  double below_total = 0;
  uint64_t start = 0;
  for (size_t j = 0; j < blocks; j++) {
    for (uint64_t i = start; i < s.block_ends[j]; i++) below[j] += s.bits[i] < bits;
    size[j] = double(s.block_ends[j] - start);
    below_total += below[j];
    start = s.block_ends[j];
  }
  const double q = below_total / m;
  double var = q * (1 - q) / m;
  if (blocks > 1) {
    double ss = 0;
    for (size_t j = 1; j < blocks; j++) {
      const double diff = (below[j] - q * size[j]) - (below[j - 1] - q * size[j - 1]);
      ss += diff * diff;
    }
    var = std::max(var, ss / (2.0 * double(blocks - 1)) * double(blocks) / (m * m));
  }
  return std::sqrt(var);
}

// The shift that maps a range of bit patterns (offsets 0 to range - 1) onto fewer than `buckets` buckets.
int bucket_shift(uint64_t range, uint64_t buckets) {
  int shift = 0;
  while ((range >> shift) >= buckets) shift++;
  return shift;
}

// Values of chosen ranks among fixed bit patterns: one histogram of their top 16 bits, then for a
// rank only the elements of the bucket that holds it, gathered and sorted (a small fraction).
class RankFinder {
 public:
  explicit RankFinder(const LargeArray<uint32_t>& bits) : bits_(bits), start_(kBuckets + 1, 0) {
    for (uint32_t b : bits) start_[(b >> 16) + 1]++;
    for (size_t i = 1; i <= kBuckets; i++) start_[i] += start_[i - 1];
  }
  // The value of rank `rank` (0-based, ascending; rank < size).
  uint32_t at(size_t rank) {
    const size_t bucket = size_t(std::upper_bound(start_.begin(), start_.end(), uint64_t(rank)) - start_.begin()) - 1;
    if (bucket != gathered_) {
      values_.clear();
      for (uint32_t b : bits_)
        if ((b >> 16) == bucket) values_.push_back(b);
      std::sort(values_.begin(), values_.end());
      gathered_ = bucket;
    }
    return values_[rank - start_[bucket]];
  }

 private:
  static constexpr size_t kBuckets = 1 << 16;
  const LargeArray<uint32_t>& bits_;
  std::vector<uint64_t> start_;  // elements in the buckets below each bucket
  std::vector<uint32_t> values_;
  size_t gathered_ = kBuckets;
};

}  // namespace

uint64_t keep_count(uint64_t region, double top_k) {
  const uint64_t keep = uint64_t(std::floor(double(region) * top_k));
  return keep > region ? region : keep;
}

BandPlan plan_band(const RegionSample& sample, double top_k, uint64_t capacity, const std::string& test_override) {
  BandPlan plan;
  plan.usable = true;
  const LargeArray<uint32_t>& bits = sample.bits;
  const size_t m = bits.size();
  if (sample.candidates == 0 || top_k >= 1) return plan;  // nothing to trim: every element is above the empty band at 0
  if (m == 0) {  // the sample met no region element (edit mask): every region element goes in the band
    plan.band = sa_hdr_band{0, kAllBits, kAllBits - 1};
    return plan;
  }
  const double scale = double(sample.candidates) / double(sample.read);
  RankFinder ranks(bits);
  const size_t center = m - 1 - std::min<size_t>(m - 1, size_t(keep_count(m, top_k)));
  const uint32_t provisional = ranks.at(center);
  if (test_override == "above" || test_override == "below") {
    const uint32_t top = *std::max_element(bits.begin(), bits.end()), bottom = *std::min_element(bits.begin(), bits.end());
    plan.band = test_override == "above" ? sa_hdr_band{top + 1, kAllBits, top + 1} : sa_hdr_band{0, bottom, 0};
    return plan;
  }
  const bool check_capacity = test_override != "full";
  double width = sample.complete() ? 2.0 : kSigmas * proportion_error(sample, provisional) * double(m) + 2.0;
  for (int attempt = 0; attempt < 12; attempt++, width *= 0.7) {
    const double lo_index = std::floor(double(center) - width), hi_index = std::ceil(double(center) + width);
    const uint32_t lo = lo_index <= 0 ? 0 : ranks.at(size_t(lo_index));
    const uint32_t hi = hi_index >= double(m - 1) ? kAllBits : ranks.at(size_t(hi_index)) + 1;
    uint64_t inside = 0;
    for (uint32_t b : bits) inside += b >= lo && b < hi;
    plan.band = sa_hdr_band{lo, hi, provisional};
    plan.expected_entries = uint64_t(double(inside) * scale);
    if (!check_capacity || plan.expected_entries <= capacity / 2) return plan;
  }
  plan.usable = false;
  plan.why_not = "about " + std::to_string(plan.expected_entries) + " region elements lie near the threshold (many equal magnitudes), more than the band's " +
                 std::to_string(capacity) + " entries can hold";
  return plan;
}

ProvisionalEstimate::ProvisionalEstimate(const RegionSample& sample, const sa_hdr_band& band, double top_k)
    : sample_(sample), band_(band), top_k_(top_k), next_(band.provisional_bits) {
  active_ = band.hi_bits > band.lo_bits + 1 && !sample.bits.empty() && !sample.complete();
  if (!active_) return;
  // Few enough buckets for the cache (streamed() adds every band element to one), many enough that
  // the estimate's rounding down to a bucket's edge is far below its error.
  constexpr uint64_t kBuckets = 1 << 12;
  const uint64_t range = uint64_t(band.hi_bits) - band.lo_bits;
  shift_ = bucket_shift(range, kBuckets);
  hist_.assign(size_t(((range - 1) >> shift_) + 1), 0);
  rest_hist_ = hist_;
  for (uint32_t b : sample.bits) {
    if (b < band.lo_bits) rest_below_++;
    else if (b < band.hi_bits) rest_hist_[bucket(b)]++;
  }
  rest_bits_ = sample.bits.size();
  for (uint64_t len : sample.block_len) rest_read_ += len;
}

void ProvisionalEstimate::streamed(uint64_t candidates_done, uint64_t region, uint64_t below, const sa_hdr_band_entry* entries, uint64_t n) {
  if (!active_) return;
  done_ = candidates_done;
  region_ += region;
  below_ += below;
  uint64_t* hist = hist_.data();
  uint64_t added_before = 0;
  for (uint64_t i = 0; i < n; i++) {
    const size_t k = bucket(abs_bits(entries[i].tau));
    hist[k]++;
    added_before += k < at_;
  }
  hist_before_ += added_before;
  // Blocks that start inside the streamed part leave the estimate of the rest.
  for (; next_block_ < sample_.block_ends.size() && sample_.block_at[next_block_] < done_; next_block_++) {
    const uint64_t begin = next_block_ ? sample_.block_ends[next_block_ - 1] : 0;
    for (uint64_t i = begin; i < sample_.block_ends[next_block_]; i++) {
      const uint32_t b = sample_.bits[i];
      if (b < band_.lo_bits) {
        rest_below_--;
      } else if (b < band_.hi_bits) {
        const size_t k = bucket(b);
        rest_hist_[k]--;
        rest_before_ -= k < at_;
      }
    }
    rest_bits_ -= sample_.block_ends[next_block_] - begin;
    rest_read_ -= sample_.block_len[next_block_];
  }
  estimate();
}

// The first bucket where the estimated count of elements up to and including it reaches the rank.
void ProvisionalEstimate::estimate() {
  const double scale = rest_read_ ? double(sample_.candidates - std::min(done_, sample_.candidates)) / double(rest_read_) : 0.0;
  const double region = double(region_) + scale * double(rest_bits_);
  const double rank = region - std::floor(region * top_k_);
  const double below = double(below_) + scale * double(rest_below_);
  const auto before = [&] { return below + double(hist_before_) + scale * double(rest_before_); };
  const auto count = [&](size_t b) { return double(hist_[b]) + scale * double(rest_hist_[b]); };
  while (at_ < hist_.size() && before() + count(at_) < rank) {
    hist_before_ += hist_[at_];
    rest_before_ += rest_hist_[at_];
    at_++;
  }
  while (at_ > 0 && before() >= rank) {
    at_--;
    hist_before_ -= hist_[at_];
    rest_before_ -= rest_hist_[at_];
  }
  next_ = at_ >= hist_.size() ? band_.hi_bits - 1 : uint32_t(band_.lo_bits + (uint64_t(at_) << shift_));
}

namespace {

// The value of 1-based rank `rank` among the band elements' bits, with the counts of band elements
// at or above it and equal to it: a count per bucket of bit patterns (a table that stays in the
// cache), then only the bucket that holds the rank, gathered and selected from.
void band_rank(const sa_hdr_band_entry* entries, uint64_t n, const sa_hdr_band& band, uint64_t rank, BandResolution& r) {
  constexpr uint64_t kBuckets = 1 << 14;
  const uint64_t range = uint64_t(band.hi_bits) - band.lo_bits;
  const int shift = bucket_shift(range, kBuckets);
  std::vector<uint64_t> count(size_t(((range - 1) >> shift) + 1), 0);
  for (uint64_t i = 0; i < n; i++) count[(abs_bits(entries[i].tau) - band.lo_bits) >> shift]++;
  uint64_t below = 0;
  size_t b = 0;
  while (below + count[b] < rank) below += count[b++];
  std::vector<uint32_t> bucket;
  bucket.reserve(size_t(count[b]));
  for (uint64_t i = 0; i < n; i++) {
    const uint32_t a = abs_bits(entries[i].tau);
    if (((a - band.lo_bits) >> shift) == b) bucket.push_back(a);
  }
  std::nth_element(bucket.begin(), bucket.begin() + ptrdiff_t(rank - below - 1), bucket.end());
  r.threshold_bits = bucket[size_t(rank - below - 1)];
  r.band_kept = n - below;
  for (uint32_t a : bucket) {
    r.band_kept -= a < r.threshold_bits;
    r.band_ties += a == r.threshold_bits;
  }
}

}  // namespace

BandResolution resolve_band(uint64_t region, uint64_t below, uint64_t above, const sa_hdr_band_entry* entries, uint64_t n,
                            const sa_hdr_band& band, double top_k) {
  BandResolution r;
  r.keep = keep_count(region, top_k);
  if (region == 0) {
    r.hit = true;
    return r;
  }
  r.has_threshold = true;
  const uint64_t rank = region - r.keep;  // 1-based, ascending; 0: everything is kept, threshold 0
  const auto describe = [&](const char* where) {
    return std::string("the threshold (rank ") + std::to_string(rank) + " of " + std::to_string(region) + ") lies " + where + " the band [" +
           std::to_string(band.lo_bits) + ", " + std::to_string(band.hi_bits) + ") of |tau| bits: " + std::to_string(below) + " elements below it, " +
           std::to_string(n) + " in it, " + std::to_string(above) + " above it";
  };
  if (rank == 0) {
    r.hit = below == 0;
    if (!r.hit) r.miss = describe("below");
    return r;
  }
  if (rank <= below) {
    r.miss = describe("below");
    return r;
  }
  if (rank > below + n) {
    r.miss = describe("above");
    return r;
  }
  band_rank(entries, n, band, rank - below, r);
  r.hit = true;
  return r;
}

}  // namespace sa
