#pragma once
// Harm Direction Removal over whole checkpoints, streamed in chunks. With trimming, one of:
//   single pass: a sample of |tau| places a band around the threshold (hdr/band.h); one pass writes
//     out = target - lambda * tau where |tau| >= the sample's estimate, counts the region elements
//     below and above the band and keeps the band's elements (at most band_capacity_bytes); the
//     exact threshold then comes from the counts and those elements, and the few output elements
//     it changes are rewritten in place. If the band missed the threshold, was full, or a chunk
//     held a non-finite input or an overflowing result, the three passes run instead.
//   three passes: radix histogram of the top 16 bits of |tau| over the region; histogram of the
//     low 16 bits inside the boundary bucket -> exact threshold; then the apply pass.
// Without trimming: the apply pass only. From a stored harm vector: out = target - lambda * values
// at indices. Each pass runs on several workers that read, compute and write chunks of their own
// (every pool thread on the CPU; up to four device lanes on CUDA), but the apply pass that saves a
// harm vector, which goes in index order. Test only: SAFETY_ARITHMETIC_TEST_HDR_BAND=above|below places the band off the threshold, =full
// gives it room for one element, so that the fallback runs; =room starts each chunk with room for
// one band element, so that chunks run again with more; =uncached reads every block of the sample
// as if it were not in the page cache (prefetched, then read).
#include <atomic>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"

namespace sa {

struct TensorSource {
  int file = -1;        // index into HdrJobSpec::files; -1 when absent
  uint64_t offset = 0;  // absolute byte offset of the tensor's data in the file
  DType dtype = DType::OTHER;
};

struct SparseSource {  // a tensor of a stored harm vector
  int file = -1;
  uint64_t indices_offset = 0;
  int index_bytes = 4;  // 4 (I32) or 8 (I64)
  uint64_t values_offset = 0;  // F32 values
  uint64_t count = 0;
};

struct HdrTensor {
  std::string name;
  std::vector<uint64_t> shape;
  uint64_t numel = 0;
  uint64_t nbytes = 0;        // bytes of the tensor in the target (and output)
  bool compute = false;       // a float tensor that HDR may change; otherwise copied through
  bool whole_region = false;  // every element is in the region
  TensorSource base, harmful, target;
  SparseSource sparse;
  int out_file = 0;
  uint64_t out_offset = 0;  // absolute byte offset in the output file
};

struct HdrOutput {
  std::string path;
  std::string header;  // the 8-byte length prefix and the JSON header, written at offset 0
  uint64_t size = 0;
};

struct HdrJobSpec {
  std::vector<std::string> files;
  std::vector<HdrTensor> tensors;
  std::vector<HdrOutput> outputs;
  bool from_harm_vector = false;
  bool trim = true;
  double top_k = 0.1;  // fraction of region elements to keep
  float lambda = 3.0f;
  bool edit_mask = false;
  std::string save_harm_vector;           // path of a harm vector file to write; empty for none
  std::string harm_vector_metadata;       // JSON members ("k":"v",...) to put in its __metadata__
  std::string device = "auto";
  uint64_t buffer_bytes = 256ull << 20;
  bool durable = false;
  std::string passes = "auto";  // auto, 1 or 3 (trimming only)
  bool io_only = false;         // the benchmark's floor: read the inputs and write the target, nothing computed
};

struct HdrResult {
  std::string backend;
  uint64_t region_elements = 0;
  uint64_t keep_target = 0;  // floor(region * top_k)
  uint64_t kept = 0;
  uint64_t ties = 0;
  uint32_t threshold_bits = 0;
  bool has_threshold = false;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  double seconds_histogram = 0, seconds_refine = 0, seconds_apply = 0;
  int passes = 1;             // passes over the inputs that produced the output
  std::string passes_reason;  // why that many
  // Single pass (also when it fell back): the sample and the band.
  bool band_tried = false;
  uint64_t sample_elements = 0;
  uint32_t band_lo_bits = 0, band_hi_bits = 0, provisional_bits = 0;
  uint64_t band_entries = 0, band_capacity_bytes = 0, patched = 0;
  double seconds_sample = 0, seconds_patch = 0;
};

struct HdrProgress {
  const char* phase;
  uint64_t done_bytes;
  uint64_t total_bytes;
};

struct Cancelled : Error {
  Cancelled() : Error(ErrorCode::ABORT_ERR, "the operation was aborted") {}
};

HdrResult run_hdr_job(const HdrJobSpec& spec, const std::function<void(const HdrProgress&)>& progress,
                      const std::atomic<bool>& cancel);

}  // namespace sa
