// The CUDA backend's engine ops: members of its table (engine_ops.cuh), over one process-wide
// instance of CudaOps on the device of device.cuh.
//
// All work goes to one non-blocking stream, in the order of the calls. Small host arrays that ops
// take (token ids, positions, rotary frequencies, the attention and steering work lists) are copied
// into a pinned ring buffer and from there, asynchronously, into a device ring buffer of the same
// size; when the ring is full the stream is drained first, so a region is never overwritten while a
// queued kernel may still read it. Every CUDA call is checked and every error names the op.
//
// Errors of queued kernels surface at the next synchronizing call. To learn which op failed, set
// SAFETY_ARITHMETIC_CUDA_SYNC=1: each op then waits for its own work and reports its own failure.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/guard.h"
#include "cuda/attention.cuh"
#include "cuda/common.cuh"
#include "cuda/device.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/engine_ops.cuh"
#include "cuda/gemm.cuh"
#include "cuda/norm_rope.cuh"
#include "cuda/steer.cuh"
#include "engine/ops.h"

namespace sa::cuda {
namespace {

using backend::Failure;
using engine::AttnSeq;
using engine::AttnShape;
using engine::SteerSlice;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

[[noreturn]] void invalid(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("cuda ") + op + ": " + what);
}

// Every op throws: Failure with its code, or std::invalid_argument for arguments it cannot serve.
class CudaOps {
 public:
  explicit CudaOps(int device) : device_(device) {
    const char* env = std::getenv("SAFETY_ARITHMETIC_CUDA_SYNC");
    sync_each_op_ = env && *env && std::strcmp(env, "0") != 0;
    check(cudaSetDevice(device_), "start", "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "start", "cudaStreamCreateWithFlags");
  }

  void* alloc(size_t bytes) {
    Serial g(*this);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // an allocation failure must not be reported again by the next op
      size_t free_bytes = 0, total_bytes = 0;
      (void)cudaMemGetInfo(&free_bytes, &total_bytes);
      (void)cudaGetLastError();
      throw Failure(SA_BACKEND_OUT_OF_MEMORY, "cuda alloc: cannot allocate " + std::to_string(bytes) +
                                                  " bytes of device memory (" + std::to_string(free_bytes >> 20) +
                                                  " MiB free of " + std::to_string(total_bytes >> 20) + " MiB): " + error_text(e));
    }
    return p;
  }

  // Never throws (it runs in destructors). Waits for queued work first, which may still use p.
  void release(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    (void)cudaSetDevice(device_);
    (void)cudaStreamSynchronize(stream_);
    (void)cudaFree(p);
    // A failure here is a device error that the next checked call reports.
  }

  void upload(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    Serial g(*this);
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "upload", "cudaMemcpyAsync");
    // The caller may reuse src at once.
    check(cudaStreamSynchronize(stream_), "upload", "waiting for the copy");
    last_op_ = "upload";
  }

  // The CUDA attention reads a float32 cache only.
  static bool kv_dtype_supported(DType dt) { return dt == DType::F32; }
  void store_kv(void* dst, DType dt, const float* src, size_t n) {
    if (dt != DType::F32) throw Failure(SA_BACKEND_UNSUPPORTED, "cuda store_kv: the CUDA backend keeps the KV cache in float32");
    copy(dst, src, n * 4);
  }

  // The CUDA matmul reads W row-major, as stored.
  static bool packs_matrices() { return false; }
  // Empty when matmul runs at precision p here, else why not.
  static std::string matmul_precision_unsupported(engine::MatmulPrecision p) {
    return p == engine::MatmulPrecision::F32 ? "" : "the CUDA backend multiplies in float32 only";
  }
  void* upload_matrix(const void* src, DType dt, int32_t n, int32_t k, engine::MatmulPrecision p) {
    if (p != engine::MatmulPrecision::F32) throw Failure(SA_BACKEND_UNSUPPORTED, "cuda upload_matrix: " + matmul_precision_unsupported(p));
    const size_t bytes = size_t(n) * size_t(k) * size_t(dtype_size(dt));
    void* d = alloc(bytes);
    try {
      upload(d, src, bytes);
    } catch (...) {
      release(d);
      throw;
    }
    return d;
  }

  void download(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    Serial g(*this);
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "download", "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream_), "download", "waiting for the copy");
    last_op_ = "download";
  }

  void copy(void* dst, const void* src, size_t bytes) {
    if (bytes == 0 || dst == src) return;
    Serial g(*this);
    const char* d = static_cast<const char*>(dst);
    const char* s = static_cast<const char*>(src);
    if (d < s + bytes && s < d + bytes) {
      // Overlapping ranges (memmove semantics, as the CPU backend): go through a temporary buffer.
      void* tmp = nullptr;
      check(cudaMalloc(&tmp, bytes), "copy", "cudaMalloc (temporary for overlapping ranges)");
      cudaError_t e = cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, stream_);
      if (e == cudaSuccess) e = cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, stream_);
      if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
      (void)cudaFree(tmp);
      check(e, "copy", "cudaMemcpyAsync");
    } else {
      check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "copy", "cudaMemcpyAsync");
    }
    done("copy");
  }

  void synchronize() {
    Serial g(*this);
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess)
      throw Failure(SA_BACKEND_DEVICE, std::string("cuda synchronize: queued device work failed (the last op queued was ") +
                                           last_op_ + "; set SAFETY_ARITHMETIC_CUDA_SYNC=1 to make each op report its own failure): " +
                                           error_text(e));
  }

  void embed(const int32_t* ids, int32_t rows, const void* table, DType dt, int32_t hidden, float* out) {
    if (rows < 0 || hidden < 0) invalid("embed", "negative size");
    if (rows == 0 || hidden == 0) return;
    Serial g(*this);
    reserve_staging(span_of(size_t(rows) * 4), "embed");
    const int32_t* d_ids = stage(ids, size_t(rows), "embed");
    check(launch_embed(d_ids, rows, table, dt, hidden, out, stream_), "embed", "kernel launch");
    done("embed");
  }

  void rmsnorm(const float* x, const void* w, DType dt, int32_t rows, int32_t hidden, float eps, float* out) {
    if (rows < 0 || hidden < 0) invalid("rmsnorm", "negative size");
    Serial g(*this);
    check(launch_rmsnorm(x, w, dt, rows, hidden, eps, out, stream_), "rmsnorm", "kernel launch");
    done("rmsnorm");
  }

  void matmul(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t n, const void* bias,
              DType bias_dt, float* out, engine::MatmulPrecision p) {
    if (p != engine::MatmulPrecision::F32) throw Failure(SA_BACKEND_UNSUPPORTED, "cuda matmul: " + matmul_precision_unsupported(p));
    if (rows < 0 || k < 0 || n < 0) invalid("matmul", "negative size");
    Serial g(*this);
    check(launch_matmul(x, rows, k, w, dt, n, bias, bias_dt, out, stream_), "matmul", "kernel launch");
    done("matmul");
  }

  void rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions, const float* inv_freq,
            float attention_scaling) {
    if (rows < 0 || heads < 0 || head_dim < 0) invalid("rope", "negative size");
    if (rows == 0 || heads == 0 || head_dim < 2) return;
    Serial g(*this);
    reserve_staging(span_of(size_t(rows) * 4) + span_of(size_t(head_dim / 2) * 4), "rope");
    const int32_t* d_pos = stage(positions, size_t(rows), "rope");
    const float* d_freq = stage(inv_freq, size_t(head_dim / 2), "rope");
    check(launch_rope(x, rows, heads, head_dim, d_pos, d_freq, attention_scaling, stream_), "rope", "kernel launch");
    done("rope");
  }

  void attention(const float* q, const AttnSeq* seqs, int32_t n_seqs, const AttnShape& shape, float* out) {
    if (n_seqs < 0) invalid("attention", "negative number of sequences");
    if (n_seqs == 0) return;
    if (shape.n_heads <= 0 || shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0)
      invalid("attention", "n_heads (" + std::to_string(shape.n_heads) + ") must be a positive multiple of n_kv_heads (" +
                               std::to_string(shape.n_kv_heads) + ")");
    if (shape.head_dim <= 0 || shape.head_dim > kAttnMaxHeadDim)
      invalid("attention", "head_dim " + std::to_string(shape.head_dim) + " is outside 1.." +
                               std::to_string(kAttnMaxHeadDim) + ", the sizes this kernel supports");
    Serial g(*this);
    items_.clear();
    bool vec = shape.head_dim % 4 == 0;
    for (int32_t i = 0; i < n_seqs; i++) {
      const AttnSeq& s = seqs[i];
      if (s.n_new < 0 || s.start_pos < 0 || s.row_offset < 0) invalid("attention", "negative row offset, length or position");
      if (s.n_new == 0) continue;
      if (!s.k || !s.v) invalid("attention", "a sequence has no KV cache");
      if (!kv_dtype_supported(DType(s.kv_dtype))) invalid("attention", "a sequence's KV cache is not float32, the only cache this backend reads");
      vec = vec && aligned16(s.k) && aligned16(s.v);
      for (int32_t r = 0; r < s.n_new; r++) items_.push_back(AttnItem{i, r});
    }
    if (items_.empty()) return;
    if (items_.size() > 0x7fffffffu) invalid("attention", "too many query rows");
    reserve_staging(span_of(size_t(n_seqs) * sizeof(AttnSeq)) + span_of(items_.size() * sizeof(AttnItem)), "attention");
    const AttnSeq* d_seqs = stage(seqs, size_t(n_seqs), "attention");
    const AttnItem* d_items = stage(items_.data(), items_.size(), "attention");
    check(launch_attention(q, d_seqs, d_items, int(items_.size()), shape, vec, out, stream_), "attention",
          "kernel launch");
    done("attention");
  }

  void swiglu(const float* gate, const float* up, size_t n, float* out) {
    Serial g(*this);
    check(launch_swiglu(gate, up, n, out, stream_), "swiglu", "kernel launch");
    done("swiglu");
  }

  void add(float* x, const float* y, size_t n) {
    Serial g(*this);
    check(launch_add(x, y, n, stream_), "add", "kernel launch");
    done("add");
  }

  void steer(float* x, int32_t hidden, const SteerSlice* slices, int32_t n_slices) {
    if (hidden < 0 || n_slices < 0) invalid("steer", "negative size");
    if (hidden == 0 || n_slices == 0) return;
    Serial g(*this);
    steer_items_.clear();
    for (int32_t s = 0; s < n_slices; s++) {
      const SteerSlice& sl = slices[s];
      if (sl.n < 0 || sl.n > engine::kMaxSteerVectors)
        invalid("steer", "a slice has " + std::to_string(sl.n) + " vectors; 0.." + std::to_string(engine::kMaxSteerVectors) +
                             " are allowed");
      if (sl.rows < 0 || sl.row_offset < 0) invalid("steer", "negative row offset or row count");
      if (sl.n == 0) continue;
      for (int32_t i = 0; i < sl.n; i++)
        if (!sl.vectors[i]) invalid("steer", "a steering vector is null");
      for (int32_t r = 0; r < sl.rows; r++) steer_items_.push_back(SteerItem{s, r});
    }
    if (steer_items_.empty()) return;
    if (steer_items_.size() > 0x7fffffffu) invalid("steer", "too many rows");
    reserve_staging(span_of(size_t(n_slices) * sizeof(SteerSlice)) + span_of(steer_items_.size() * sizeof(SteerItem)),
                    "steer");
    const SteerSlice* d_slices = stage(slices, size_t(n_slices), "steer");
    const SteerItem* d_items = stage(steer_items_.data(), steer_items_.size(), "steer");
    check(launch_steer(x, hidden, d_slices, d_items, int(steer_items_.size()), stream_), "steer", "kernel launch");
    done("steer");
  }

 private:
  // Serializes the calls of all threads, and makes the op's device current on the calling thread.
  class Serial {
   public:
    explicit Serial(CudaOps& ops) : lock_(ops.mu_) {
      const cudaError_t e = cudaSetDevice(ops.device_);
      if (e != cudaSuccess)
        throw Failure(SA_BACKEND_DEVICE, "cuda: cannot select device " + std::to_string(ops.device_) + ": " + error_text(e));
    }

   private:
    std::lock_guard<std::mutex> lock_;
  };

  void check(cudaError_t e, const char* op, const char* what) const {
    if (e == cudaSuccess) return;
    throw Failure(e == cudaErrorMemoryAllocation ? SA_BACKEND_OUT_OF_MEMORY : SA_BACKEND_DEVICE,
                  std::string("cuda ") + op + ": " + what + " failed: " + error_text(e) +
                      " (an error of earlier queued work also shows here; the op before was " + last_op_ +
                      ", and SAFETY_ARITHMETIC_CUDA_SYNC=1 makes each op report its own failure)");
  }

  // After an op is queued: with SAFETY_ARITHMETIC_CUDA_SYNC=1, wait for it and report its failure.
  void done(const char* op) {
    last_op_ = op;
    if (!sync_each_op_) return;
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) throw Failure(SA_BACKEND_DEVICE, std::string("cuda ") + op + ": the kernel failed: " + error_text(e));
  }

  static size_t span_of(size_t bytes) { return (bytes + 255) & ~size_t(255); }

  // Makes room in the staging ring for one op's arrays (their span_of sizes summed), so that the
  // stage() calls of that op never wrap the ring under an array staged before them. Wrapping or
  // growing drains the stream first: no queued kernel still reads the ring then.
  void reserve_staging(size_t total, const char* op) {
    if (ring_used_ + total <= ring_cap_) return;
    check(cudaStreamSynchronize(stream_), op, "waiting for the staging buffer");
    ring_used_ = 0;
    if (total <= ring_cap_) return;
    size_t cap = ring_cap_ * 2;
    if (cap < (size_t(1) << 20)) cap = size_t(1) << 20;
    if (cap < total) cap = total;
    (void)cudaFreeHost(ring_host_);
    (void)cudaFree(ring_dev_);
    ring_host_ = nullptr;
    ring_dev_ = nullptr;
    ring_cap_ = 0;
    check(cudaMallocHost(reinterpret_cast<void**>(&ring_host_), cap), op, "cudaMallocHost (staging buffer)");
    check(cudaMalloc(reinterpret_cast<void**>(&ring_dev_), cap), op, "cudaMalloc (staging buffer)");
    ring_cap_ = cap;
  }

  // Copies count elements from host memory into room made by reserve_staging; returns their device
  // address, valid for the work queued by this op.
  template <typename T>
  const T* stage(const T* src, size_t count, const char* op) {
    const size_t bytes = count * sizeof(T);
    if (bytes == 0) return nullptr;
    const size_t span = span_of(bytes);
    if (ring_used_ + span > ring_cap_) throw std::logic_error(std::string("cuda ") + op + ": staging space was not reserved");
    char* h = ring_host_ + ring_used_;
    char* d = ring_dev_ + ring_used_;
    std::memcpy(h, src, bytes);
    check(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, stream_), op, "cudaMemcpyAsync (arguments)");
    ring_used_ += span;
    return reinterpret_cast<const T*>(d);
  }

  int device_;
  cudaStream_t stream_ = nullptr;
  std::mutex mu_;
  const char* last_op_ = "none";
  bool sync_each_op_ = false;
  char* ring_host_ = nullptr;
  char* ring_dev_ = nullptr;
  size_t ring_cap_ = 0, ring_used_ = 0;
  std::vector<AttnItem> items_;
  std::vector<SteerItem> steer_items_;
};

// The process-wide instance, made at the first engine op. Never deleted: the CUDA runtime may be
// torn down before static destructors run.
CudaOps& instance() {
  static CudaOps* ops = [] {
    const Device& d = device();
    if (d.index < 0) throw Failure(SA_BACKEND_NO_DEVICE, d.why);
    return new CudaOps(d.index);
  }();
  return *ops;
}

}  // namespace

namespace engine_ops {

using backend::guarded;

int alloc(size_t bytes, void** out, sa_error* err) {
  return guarded(err, [&] { *out = instance().alloc(bytes); });
}
void release(void* p) {
  if (p) guarded(nullptr, [&] { instance().release(p); });
}
int upload(void* dst, const void* src, size_t bytes, sa_error* err) {
  return guarded(err, [&] { instance().upload(dst, src, bytes); });
}
int download(void* dst, const void* src, size_t bytes, sa_error* err) {
  return guarded(err, [&] { instance().download(dst, src, bytes); });
}
int copy(void* dst, const void* src, size_t bytes, sa_error* err) {
  return guarded(err, [&] { instance().copy(dst, src, bytes); });
}
int synchronize(sa_error* err) {
  return guarded(err, [&] { instance().synchronize(); });
}
int upload_matrix(const void* src, int32_t dtype, int32_t n, int32_t k, int32_t precision, void** out, sa_error* err) {
  return guarded(err, [&] { *out = instance().upload_matrix(src, DType(dtype), n, k, engine::MatmulPrecision(precision)); });
}
int32_t packs_matrices() { return CudaOps::packs_matrices() ? 1 : 0; }
int check_matmul_precision(int32_t precision, sa_error* err) {
  return guarded(err, [&] {
    const std::string why = CudaOps::matmul_precision_unsupported(engine::MatmulPrecision(precision));
    if (!why.empty()) throw Failure(SA_BACKEND_UNSUPPORTED, why);
  });
}
int32_t kv_dtype_supported(int32_t dtype) { return CudaOps::kv_dtype_supported(DType(dtype)) ? 1 : 0; }
int store_kv(void* dst, int32_t dtype, const float* src, size_t n, sa_error* err) {
  return guarded(err, [&] { instance().store_kv(dst, DType(dtype), src, n); });
}
int embed(const int32_t* ids, int32_t rows, const void* table, int32_t dtype, int32_t hidden, float* out, sa_error* err) {
  return guarded(err, [&] { instance().embed(ids, rows, table, DType(dtype), hidden, out); });
}
int rmsnorm(const float* x, const void* w, int32_t dtype, int32_t rows, int32_t hidden, float eps, float* out, sa_error* err) {
  return guarded(err, [&] { instance().rmsnorm(x, w, DType(dtype), rows, hidden, eps, out); });
}
int matmul(const float* x, int32_t rows, int32_t k, const void* w, int32_t dtype, int32_t n, const void* bias,
           int32_t bias_dtype, float* out, int32_t precision, sa_error* err) {
  return guarded(err, [&] {
    instance().matmul(x, rows, k, w, DType(dtype), n, bias, DType(bias_dtype), out, engine::MatmulPrecision(precision));
  });
}
int rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions, const float* inv_freq,
         float attention_scaling, sa_error* err) {
  return guarded(err, [&] { instance().rope(x, rows, heads, head_dim, positions, inv_freq, attention_scaling); });
}
int attention(const float* q, const sa_attn_seq* seqs, int32_t n_seqs, const sa_attn_shape* shape, float* out, sa_error* err) {
  return guarded(err, [&] { instance().attention(q, seqs, n_seqs, *shape, out); });
}
int swiglu(const float* gate, const float* up, size_t n, float* out, sa_error* err) {
  return guarded(err, [&] { instance().swiglu(gate, up, n, out); });
}
int add(float* x, const float* y, size_t n, sa_error* err) {
  return guarded(err, [&] { instance().add(x, y, n); });
}
int steer(float* x, int32_t hidden, const sa_steer_slice* slices, int32_t n_slices, sa_error* err) {
  return guarded(err, [&] { instance().steer(x, hidden, slices, n_slices); });
}

}  // namespace engine_ops
}  // namespace sa::cuda
