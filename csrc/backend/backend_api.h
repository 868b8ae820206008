#pragma once
/*
 * The backend table: the one C ABI between the addon and its backends. The CPU backend fills one
 * table per kernel variant (cpu/cpu_backend.cpp: baseline, avx2, avx512); the CUDA backend, a
 * shared library loaded at run time, fills one and hands it out through its only entry point,
 * SA_BACKEND_ENTRY_SYMBOL. backend/registry.cpp finds them; backend/table_ops.h gives the engine
 * its C++ interface (engine::DeviceOps) over any table.
 *
 * Versions. abi_major must equal the caller's SA_BACKEND_ABI_MAJOR exactly: it changes whenever a
 * member or a meaning changes. A newer library may add members at the end and raise abi_minor;
 * struct_size says how much of the table the library filled, so a caller checks
 * SA_BACKEND_HAS(table, member) before it uses a member added after minor 0.
 *
 * Errors. A function that can fail returns SA_BACKEND_OK (0) or one of the SA_BACKEND_* codes, and
 * then fills the caller's sa_error (code, message, and the option it concerns, when one does).
 * Nothing is kept per thread and no C++ exception crosses the table: backend/guard.h turns those
 * of an implementation into codes. release, host_free, packs_matrices and kv_dtype_supported
 * cannot fail and return no code.
 *
 * Memory. HDR ops work on host buffers (host_alloc: staging memory, pinned where that helps); a
 * backend that computes elsewhere moves the data itself. Engine ops work on the backend's own
 * buffers (alloc); pointers and sizes noted "host" are host memory. Activations are float32;
 * a dtype is an sa::DType value (common/dtype.h): 0 F32, 1 F16, 2 BF16. Engine work may be queued:
 * synchronize waits for it and reports a failure of queued work.
 */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SA_BACKEND_ABI_MAJOR 4
#define SA_BACKEND_ABI_MINOR 0
#define SA_HIST_BUCKETS 65536
#define SA_MAX_STEER_VECTORS 8

// How matmul multiplies a BF16 weight matrix (other dtypes are always multiplied in float32):
// SA_MATMUL_F32 widens the weights and keeps the activations in float32 (cpu/gemm/gemm.h's order);
// SA_MATMUL_BF16 rounds the activations to bf16 and takes the products in pairs with a bf16
// dot-product instruction (gemm.h's pair layout), as llama.cpp does for bf16 weights.
enum { SA_MATMUL_F32 = 0, SA_MATMUL_BF16 = 1 };

enum {
  SA_BACKEND_OK = 0,
  SA_BACKEND_INVALID_ARGUMENT = 1,  // the op cannot serve these arguments
  SA_BACKEND_UNSUPPORTED = 2,       // this backend does not do what was asked (a dtype, a size)
  SA_BACKEND_OUT_OF_MEMORY = 3,     // host or device memory
  SA_BACKEND_DEVICE = 4,            // the device, its driver or queued device work failed
  SA_BACKEND_NO_DEVICE = 5,         // the entry point found no usable device
  SA_BACKEND_INTERNAL = 6,          // anything else: a bug
};

typedef struct sa_error {
  int32_t code;       // an SA_BACKEND_* code
  char message[512];  // what went wrong, for a person
  char field[64];     // the option concerned, or empty
} sa_error;

/* ---- HDR ---- */

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

/* ---- the engine ---- */

// One sequence's slice of a ragged batch, for attention.
typedef struct sa_attn_seq {
  int32_t row_offset;  // first row of this sequence's new tokens in q / out
  int32_t n_new;       // new tokens
  int32_t start_pos;   // position of the first new token (= tokens already in the cache)
  const void* k;       // cache [start_pos + n_new, n_kv_heads, head_dim] of kv_dtype
  const void* v;
  int32_t kv_dtype;    // sa::DType
} sa_attn_seq;

typedef struct sa_attn_shape {
  int32_t n_heads, n_kv_heads, head_dim;
  int32_t sliding_window;  // 0: none; else attend to the last sliding_window positions
  float scale;
} sa_attn_shape;

// Steering of one sequence's rows at one layer: n vectors of `hidden` floats (backend buffers) and
// their alphas.
typedef struct sa_steer_slice {
  int32_t row_offset, rows, n;
  const float* vectors[SA_MAX_STEER_VECTORS];
  float alphas[SA_MAX_STEER_VECTORS];
} sa_steer_slice;

typedef struct sa_backend_table {
  uint32_t abi_major, abi_minor;
  uint32_t struct_size;  // sizeof(sa_backend_table) where the table was filled
  const char* name;      // "cpu" or "cuda"
  const char* variant;   // the code it runs: the CPU kernel variant ("baseline", "avx2", "avx512"), "default" for CUDA

  // JSON object describing the backend and its device, into buf (cap bytes, NUL-terminated).
  int (*describe)(char* buf, size_t cap, sa_error* err);

  // Host memory for HDR's staging buffers (pinned where the backend benefits from it).
  int (*host_alloc)(size_t bytes, void** out, sa_error* err);
  void (*host_free)(void* p);
  // Adds region elements of the chunk to hist. level 0: bucket = bits(|tau|) >> 16.
  // level 1: only elements with bits(|tau|) >> 16 == prefix, bucket = bits(|tau|) & 0xffff.
  int (*hdr_histogram)(const sa_hdr_chunk* c, int32_t level, uint32_t prefix, uint64_t* hist,
                       sa_hdr_counts* counts, sa_error* err);
  // out = target - lambda * tau where the element is in the region and (trim == 0 or
  // bits(|tau|) >= threshold_bits), else target; computed in float32 and rounded once to the
  // target dtype. kept_mask (nullable) receives 1 for each kept element.
  int (*hdr_apply)(const sa_hdr_chunk* c, int32_t trim, uint32_t threshold_bits, float lambda,
                   void* out, uint8_t* kept_mask, sa_hdr_counts* counts, sa_error* err);
  // The single-pass HDR op (null where a backend has none: the job then runs the three passes).
  // Like hdr_apply with trim on and threshold_bits = band->provisional_bits, and in addition every
  // region element with band->lo_bits <= bits(|tau|) < band->hi_bits is appended to entries (in
  // index order, up to cap; counts->band says how many there were, which may exceed cap). out may
  // be the chunk's target buffer: the op then patches it in place.
  int (*hdr_apply_band)(const sa_hdr_chunk* c, const sa_hdr_band* band, float lambda, void* out,
                        sa_hdr_band_entry* entries, uint64_t cap, sa_hdr_band_counts* counts, sa_error* err);

  // Engine buffers. release waits for queued work that may still use p; it never fails (a device
  // error surfaces at the next call).
  int (*alloc)(size_t bytes, void** out, sa_error* err);
  void (*release)(void* p);
  int (*upload)(void* dst, const void* host_src, size_t bytes, sa_error* err);  // host_src reusable on return
  int (*download)(void* host_dst, const void* src, size_t bytes, sa_error* err);
  int (*copy)(void* dst, const void* src, size_t bytes, sa_error* err);  // ranges may overlap (memmove)
  int (*synchronize)(sa_error* err);
  // A weight matrix W [n, k] (host) in a new buffer, in the layout that matmul takes at precision
  // (SA_MATMUL_*); packs_matrices() is 1 when the SA_MATMUL_F32 layout differs from row-major.
  int (*upload_matrix)(const void* host_src, int32_t dtype, int32_t n, int32_t k, int32_t precision, void** out,
                       sa_error* err);
  int32_t (*packs_matrices)(void);
  // SA_BACKEND_OK when matmul runs at precision here, else SA_BACKEND_UNSUPPORTED and why.
  int (*check_matmul_precision)(int32_t precision, sa_error* err);
  // 1 when attention reads a KV cache of this dtype.
  int32_t (*kv_dtype_supported)(int32_t dtype);
  // dst[i] = src[i] as dtype (rounded to nearest even) for i < n: keys and values entering the cache.
  int (*store_kv)(void* dst, int32_t dtype, const float* src, size_t n, sa_error* err);
  // out[r, :] = table[ids[r], :] (ids on the host)
  int (*embed)(const int32_t* host_ids, int32_t rows, const void* table, int32_t dtype, int32_t hidden, float* out,
               sa_error* err);
  // out = x / sqrt(mean(x^2) + eps) * w, per row
  int (*rmsnorm)(const float* x, const void* w, int32_t dtype, int32_t rows, int32_t hidden, float eps, float* out,
                 sa_error* err);
  // out[rows, n] = x[rows, k] . W[n, k]^T (+ bias[n]; bias may be null), W from upload_matrix at
  // the same precision
  int (*matmul)(const float* x, int32_t rows, int32_t k, const void* w, int32_t dtype, int32_t n, const void* bias,
                int32_t bias_dtype, float* out, int32_t precision, sa_error* err);
  // Rotary embedding, rotate-half convention, in place on x[rows, heads, head_dim]; positions and
  // inv_freq (head_dim / 2) on the host.
  int (*rope)(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* host_positions,
              const float* host_inv_freq, float attention_scaling, sa_error* err);
  // Causal attention of each sequence's new queries over its cache. q [rows, n_heads*head_dim];
  // seqs and shape on the host.
  int (*attention)(const float* q, const sa_attn_seq* host_seqs, int32_t n_seqs, const sa_attn_shape* host_shape,
                   float* out, sa_error* err);
  // out = silu(gate) * up
  int (*swiglu)(const float* gate, const float* up, size_t n, float* out, sa_error* err);
  // x += y
  int (*add)(float* x, const float* y, size_t n, sa_error* err);
  // The Safety Alignment transform on rows of x [rows, hidden], in place (docs/semantics.md,
  // "Steering"); slices on the host.
  int (*steer)(float* x, int32_t hidden, const sa_steer_slice* host_slices, int32_t n_slices, sa_error* err);
  // ABI 4.0 ends here; members added later go below, each noted with the minor that added it.
} sa_backend_table;

// Whether the table holds member (filled by a library of the minor that added it, or later).
#define SA_BACKEND_HAS(table, member) \
  (offsetof(sa_backend_table, member) + sizeof(((sa_backend_table*)0)->member) <= (table)->struct_size)

// The CUDA library's entry point (its name and signature never change; the table carries the
// version). Fills *table and returns SA_BACKEND_OK, or returns SA_BACKEND_NO_DEVICE (or another
// code) with the reason in err.
typedef int (*sa_backend_entry)(const sa_backend_table** table, sa_error* err);
#define SA_BACKEND_ENTRY_SYMBOL "sa_backend_entry_v1"
int sa_backend_entry_v1(const sa_backend_table** table, sa_error* err);

#ifdef __cplusplus
}
#endif
