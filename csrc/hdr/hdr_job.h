#pragma once
// Harm Direction Removal over whole checkpoints, streamed in chunks:
//   pass 1 (trimming only): radix histogram of the top 16 bits of |tau| over the region;
//   pass 2 (trimming only): histogram of the low 16 bits inside the boundary bucket -> exact threshold;
//   pass 3: out = target - lambda * tau_kept, written at the output layout's offsets.
// Or, from a stored harm vector: out = target - lambda * values at indices.
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
