#pragma once
// Single-pass TIES trimming: a band of |tau| bit patterns planned from a sample so that it holds
// the threshold, and the exact threshold found afterwards from the counts around the band and the
// band's own elements. Nothing here assumes the plan was right: resolve() says when it was not.
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend_api.h"
#include "common/large_array.h"

namespace sa {

// keep = floor(d * top_k) in IEEE double, capped at d (docs/semantics.md, "TIES trimming").
uint64_t keep_count(uint64_t region, double top_k);

// Bits of |tau| of the sampled region elements, grouped in blocks of consecutive elements.
struct RegionSample {
  LargeArray<uint32_t> bits;
  std::vector<uint64_t> block_ends;  // bits[block_ends[j-1] .. block_ends[j]) is block j
  std::vector<uint64_t> block_at;    // where block j starts, counted in candidate elements in stream order
  std::vector<uint64_t> block_len;   // candidate elements block j read
  uint64_t candidates = 0;           // elements of the tensors that may be in the region
  uint64_t read = 0;                 // of those, elements the sample read
  bool complete() const { return read == candidates; }
};

struct BandPlan {
  bool usable = false;
  std::string why_not;  // when not usable: why the three passes run instead
  sa_hdr_band band{0, 0, 0};
  uint64_t expected_entries = 0;  // band elements the sample predicts over the whole region
};

// capacity: the most band elements the run may hold. test_override: SAFETY_ARITHMETIC_TEST_HDR_BAND's value.
BandPlan plan_band(const RegionSample& sample, double top_k, uint64_t capacity, const std::string& test_override);

// The provisional threshold for the next chunk, from the exact counts of the chunks streamed so far
// and the sample's blocks not streamed yet; it moves towards the threshold as the pass goes, so that
// few elements need rewriting at the end. Always inside the band.
class ProvisionalEstimate {
 public:
  ProvisionalEstimate(const RegionSample& sample, const sa_hdr_band& band, double top_k);
  // The chunks so far covered the first `candidates_done` candidate elements; `entries` are the
  // last chunk's band elements.
  void streamed(uint64_t candidates_done, uint64_t region, uint64_t below, const sa_hdr_band_entry* entries, uint64_t n);
  uint32_t next() const { return next_; }

 private:
  size_t bucket(uint32_t bits) const { return size_t((bits - band_.lo_bits) >> shift_); }
  void estimate();

  const RegionSample& sample_;
  sa_hdr_band band_;
  double top_k_;
  bool active_ = false;
  int shift_ = 0;  // a bucket spans 2^shift_ bit patterns
  size_t next_block_ = 0;
  uint64_t done_ = 0;                          // candidate elements streamed
  uint64_t region_ = 0, below_ = 0;            // streamed: exact
  std::vector<uint64_t> hist_;                 // streamed band elements per bucket
  uint64_t rest_bits_ = 0, rest_below_ = 0, rest_read_ = 0;  // sample blocks not streamed yet
  std::vector<uint64_t> rest_hist_;
  // The bucket of the last estimate, and the sums of both histograms below it: the next estimate
  // walks from there, a few buckets at most.
  size_t at_ = 0;
  uint64_t hist_before_ = 0, rest_before_ = 0;
  uint32_t next_;
};

// The threshold from the full counts and the band's elements (entries[0, n)).
struct BandResolution {
  bool hit = false;
  std::string miss;  // when not hit: where the threshold lay
  uint64_t keep = 0;
  bool has_threshold = false;
  uint32_t threshold_bits = 0;
  uint64_t band_kept = 0, band_ties = 0;  // band elements at or above the threshold, and equal to it
};
BandResolution resolve_band(uint64_t region, uint64_t below, uint64_t above, const sa_hdr_band_entry* entries, uint64_t n,
                            const sa_hdr_band& band, double top_k);

}  // namespace sa
