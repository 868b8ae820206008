#pragma once
// The C ABI shared by the CPU backend (linked into the addon) and the CUDA backend (a shared library
// loaded at run time). Every op works on host buffers; a backend that computes elsewhere moves the
// data itself. Functions return 0 on success, otherwise last_error() says what went wrong.
#include <cstddef>
#include <cstdint>

extern "C" {

#define SA_BACKEND_ABI_VERSION 3
#define SA_HIST_BUCKETS 65536

// One chunk of one tensor, seen in the three checkpoints.
typedef struct sa_hdr_chunk {
  const void* base;      // may be null when edit_mask is 0 and tau is given directly
  const void* harmful;
  const void* target;    // may be null when edit_mask is 0 (histogram passes)
  int32_t base_dtype, harmful_dtype, target_dtype;  // sa::DType
  uint64_t n;            // elements
  int32_t whole_region;  // 1: every element is in the region
  int32_t edit_mask;     // 1: elements where target != base are in the region too
} sa_hdr_chunk;

typedef struct sa_hdr_counts {
  uint64_t region;  // elements in the region
  uint64_t nan;     // region elements whose tau is NaN
  uint64_t kept;    // region elements with |tau| >= threshold (apply only)
  uint64_t ties;    // kept elements with |tau| == threshold (apply only, trimming on)
  // Elements of the chunk (all n, in the region or not) whose value is NaN or +-Inf, in each input
  // the op was given (target: only when the chunk has one).
  uint64_t nonfinite_base, nonfinite_harmful, nonfinite_target;
  uint64_t nonfinite_out;  // kept elements whose result, rounded to the target dtype, is NaN or +-Inf (apply only)
} sa_hdr_counts;

// The band of |tau| bit patterns that holds the threshold (single pass): [lo_bits, hi_bits).
// Elements at or above provisional_bits (lo_bits <= provisional_bits < hi_bits) are written as kept.
typedef struct sa_hdr_band {
  uint32_t lo_bits, hi_bits, provisional_bits;
} sa_hdr_band;

// A region element inside the band: what patching its output element needs, once the threshold is known.
typedef struct sa_hdr_band_entry {
  uint32_t index;       // element index within the chunk
  float tau;            // harmful - base
  uint32_t target_raw;  // the target element's stored bits (low 16 for BF16 and F16)
} sa_hdr_band_entry;

typedef struct sa_hdr_band_counts {
  sa_hdr_counts counts;  // kept and ties as written (provisional); nonfinite_out among kept elements above the band
  uint64_t above;        // region elements with bits(|tau|) >= hi_bits
  uint64_t below;        // region elements with bits(|tau|) < lo_bits
  uint64_t band;         // region elements in the band (all of them, also past cap)
} sa_hdr_band_counts;

typedef struct sa_backend {
  int32_t abi_version;
  const char* name;
  // JSON object describing the backend and its device.
  int (*describe)(char* buf, size_t cap);
  // Host memory for staging (pinned where the backend benefits from it).
  void* (*host_alloc)(size_t bytes);
  void (*host_free)(void* p);
  // Adds region elements of the chunk to hist. level 0: bucket = bits(|tau|) >> 16.
  // level 1: only elements with bits(|tau|) >> 16 == prefix, bucket = bits(|tau|) & 0xffff.
  int (*hdr_histogram)(const sa_hdr_chunk* c, int32_t level, uint32_t prefix, uint64_t* hist,
                       sa_hdr_counts* counts);
  // out = target - lambda * tau where the element is in the region and (trim == 0 or
  // bits(|tau|) >= threshold_bits), else target; computed in float32 and rounded once to the
  // target dtype. kept_mask (nullable) receives 1 for each kept element.
  int (*hdr_apply)(const sa_hdr_chunk* c, int32_t trim, uint32_t threshold_bits, float lambda,
                   void* out, uint8_t* kept_mask, sa_hdr_counts* counts);
  const char* (*last_error)(void);
  // The single-pass HDR op (null where a backend has none: the job then runs the three passes).
  // Like hdr_apply with trim on and threshold_bits = band->provisional_bits, and in addition every
  // region element with band->lo_bits <= bits(|tau|) < band->hi_bits is appended to entries (in
  // index order, up to cap; counts->band says how many there were, which may exceed cap). out may
  // be the chunk's target buffer: the op then patches it in place.
  int (*hdr_apply_band)(const sa_hdr_chunk* c, const sa_hdr_band* band, float lambda, void* out,
                        sa_hdr_band_entry* entries, uint64_t cap, sa_hdr_band_counts* counts);
} sa_backend;

// Exported by the CUDA backend library. Returns null when no usable device is present and writes
// the reason into why.
typedef const sa_backend* (*sa_cuda_backend_entry)(char* why, size_t cap);
#define SA_CUDA_ENTRY_SYMBOL "sa_cuda_backend_v1"
}
