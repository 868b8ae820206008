#include "hdr/hdr_job.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include "backend/registry.h"
#include "common/hdr_math.h"
#include "common/large_array.h"
#include "common/thread_pool.h"
#include "hdr/band.h"
#include "io/async_writer.h"
#include "io/file_io.h"
#include "io/harm_vector_writer.h"
#include "io/json_text.h"

namespace sa {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

const char* dtype_name(DType t) { return t == DType::F32 ? "F32" : t == DType::BF16 ? "BF16" : t == DType::F16 ? "F16" : "a non-float dtype"; }

// " (N among elements A to B of its TOTAL)": where a count of bad elements was found.
std::string where_in(uint64_t n, uint64_t start, uint64_t count, uint64_t total) {
  return " (" + std::to_string(n) + " among elements " + std::to_string(start) + " to " + std::to_string(start + count - 1) + " of its " +
         std::to_string(total) + ")";
}

// Refuses a computed tensor whose input holds NaN or infinity, naming the file and the tensor.
void refuse_nonfinite_input(uint64_t n, const std::string& file, const std::string& tensor, const char* role, uint64_t start,
                            uint64_t count, uint64_t total) {
  if (n == 0) return;
  throw Error(ErrorCode::SA_BAD_CHECKPOINT,
              file + ": tensor \"" + tensor + "\" of the " + role + " checkpoint holds NaN or infinite values" + where_in(n, start, count, total) +
                  "; HDR needs finite weights: repair or re-download this checkpoint",
              {file, tensor});
}

// Refuses a result that does not fit the target dtype: target - lambda * tau overflowed.
void refuse_overflow(uint64_t n, const std::string& tensor, DType dtype, float lambda, uint64_t start, uint64_t count, uint64_t total) {
  if (n == 0) return;
  char lam[32];
  std::snprintf(lam, sizeof lam, "%.9g", double(lambda));
  throw Error(ErrorCode::SA_INVALID_ARGUMENT,
              "tensor \"" + tensor + "\": target - lambda * tau is not finite" + where_in(n, start, count, total) + ": the result overflows the range of " +
                  dtype_name(dtype) + " with lambda = " + lam + "; use a smaller lambda",
              {"", tensor, "lambda"});
}

uint64_t count_nonfinite(const void* p, DType t, uint64_t n) {
  uint64_t bad = 0;
  for (uint64_t i = 0; i < n; i++) bad += nonfinite(load_f32(p, t, i));
  return bad;
}

// Where the threshold of a given rank lies in a 65536-bucket histogram.
struct ThresholdSearch {
  uint64_t rank;    // 1-based rank (ascending)
  uint32_t bucket;  // bucket holding it
  uint64_t below;   // elements in lower buckets
};

// The single pass cannot give today's result: the three passes run instead, for the reason given.
struct BandMiss {
  std::string reason;
};

// A run of band entries from one chunk.
struct BandSegment {
  int tensor;
  uint64_t start;         // the chunk's first element in its tensor
  uint64_t first, count;  // entries[first, first + count)
  uint32_t provisional;   // the chunk's elements with bits(|tau|) >= this were written as kept
};

struct Chunk {
  int tensor;
  uint64_t start, count;
  bool read_base, read_harmful, read_target;
};

// Staging memory for one chunk, from the backend's allocator (pinned memory for CUDA).
struct Slot {
  void* base = nullptr;
  void* harmful = nullptr;
  void* target = nullptr;
  void* out = nullptr;
  uint8_t* mask = nullptr;
};

class SlotPool {
 public:
  SlotPool(const sa_backend_table* b, int slots, uint64_t elems, bool with_mask) : backend_(b), slots_(slots) {
    for (auto& s : slots_) {
      s.base = alloc(elems * 4);
      s.harmful = alloc(elems * 4);
      s.target = alloc(elems * 4);
      s.out = alloc(elems * 4);
      if (with_mask) s.mask = static_cast<uint8_t*>(alloc(elems));
    }
  }
  ~SlotPool() {
    for (void* p : owned_) backend_->host_free(p);
  }
  Slot& operator[](size_t i) { return slots_[i % slots_.size()]; }
  int index_of(const Slot& s) const { return int(&s - slots_.data()); }
  size_t size() const { return slots_.size(); }

 private:
  void* alloc(uint64_t bytes) {
    void* p = nullptr;
    sa_error err{};
    if (backend_->host_alloc(bytes, &p, &err) != SA_BACKEND_OK)
      throw std::runtime_error(std::string("cannot allocate ") + std::to_string(bytes) + " bytes of staging memory (" + backend_->name +
                               "): " + err.message + "; lower the buffer size");
    owned_.push_back(p);
    return p;
  }
  const sa_backend_table* backend_;
  std::vector<Slot> slots_;
  std::vector<void*> owned_;
};

class Job {
 public:
  Job(const HdrJobSpec& spec, const std::function<void(const HdrProgress&)>& progress, const std::atomic<bool>& cancel)
      : spec_(spec), progress_(progress), cancel_(cancel) {}

  HdrResult run();

 private:
  bool runs_on_host() const { return std::string(backend_->name) == "cpu"; }
  // Whether the target decides which of t's elements are in the region (an edit mask on a tensor
  // that is not wholly in it).
  bool region_needs_target(const HdrTensor& t) const { return spec_.edit_mask && !t.whole_region; }
  int slot_count() const;
  uint64_t chunk_elems() const;  // a slot's capacity
  uint64_t write_chunk_elems(bool any_order) const;
  std::vector<Chunk> make_chunks(bool histogram_pass, uint64_t step) const;
  // Calls consume(chunk, slot, worker) for every chunk with the chunk's inputs read into the slot.
  // With any_order, chunks in any order on a worker per slot at once (consume then locks tally_mu_
  // around shared state); otherwise in order on this thread, the next chunk read meanwhile.
  using Consume = std::function<void(const Chunk&, Slot&, int)>;
  void stream(const std::vector<Chunk>& chunks, const char* phase, bool any_order, const Consume& consume);
  void stream_in_order(const std::vector<Chunk>& chunks, const char* phase, const Consume& consume);
  void stream_in_parallel(const std::vector<Chunk>& chunks, const char* phase, const Consume& consume);
  void read_chunk(const Chunk& c, Slot& s);
  void account_read(const Chunk& c, const char* phase);
  void read_source(const TensorSource& src, uint64_t start, uint64_t count, void* dst);
  sa_hdr_chunk make_chunk(const HdrTensor& t, const Chunk& c, const Slot& s, bool with_target) const;
  void check_backend(int rc, const sa_error& err, const char* op, const HdrTensor& t) const;
  void check_counts(const sa_hdr_counts& counts, const HdrTensor& t, const Chunk& c) const;
  template <class Source>
  const std::string& path_of(const Source& src) const { return inputs_[size_t(src.file)]->path(); }
  void histogram_pass(int level, uint32_t prefix, std::vector<uint64_t>& hist, const char* phase);
  void three_pass_threshold();
  using Compute = std::function<const void*(const Chunk&, Slot&, const HdrTensor&, int)>;
  void write_pass(bool any_order, const Compute& compute);
  void apply_pass();
  bool copy_through(const HdrTensor& t, Slot& s, OutputFile& out);
  std::string single_pass_refusal() const;
  RegionSample sample_region();
  void single_pass();
  void patch_band(const sa_hdr_band_entry* entries, const std::vector<BandSegment>& segments, uint32_t threshold);
  void io_floor_pass();
  uint64_t band_capacity() const;
  void apply_sparse(const HdrTensor& t, Slot& s, OutputFile& out);
  void validate_sources();
  void report(const char* phase, uint64_t bytes);
  uint64_t pair_bytes(const HdrTensor& t) const;
  uint64_t three_pass_bytes() const;

  const HdrJobSpec& spec_;
  const std::function<void(const HdrProgress&)>& progress_;
  const std::atomic<bool>& cancel_;
  const sa_backend_table* backend_ = nullptr;
  std::vector<std::unique_ptr<InputFile>> inputs_;
  std::vector<std::unique_ptr<OutputFile>> outputs_;
  std::unique_ptr<SlotPool> slots_;
  std::unique_ptr<HarmVectorWriter> harm_writer_;
  HdrResult result_;
  uint64_t total_bytes_ = 0, done_bytes_ = 0;
  std::mutex tally_mu_;  // result_, progress and a pass's shared state while chunks run in parallel
};

void Job::report(const char* phase, uint64_t bytes) {
  done_bytes_ += bytes;
  if (progress_) progress_(HdrProgress{phase, done_bytes_, total_bytes_});
}

// Bytes of base and harmful that one pass over a region tensor reads.
uint64_t Job::pair_bytes(const HdrTensor& t) const {
  const bool in_region = t.compute && (t.whole_region || spec_.edit_mask) && !spec_.from_harm_vector;
  return in_region ? t.numel * uint64_t(dtype_size(t.base.dtype) + dtype_size(t.harmful.dtype)) : 0;
}

// Bytes that the two histogram passes read.
uint64_t Job::three_pass_bytes() const {
  uint64_t total = 0;
  for (const auto& t : spec_.tensors)
    if (pair_bytes(t) > 0) total += 2 * (pair_bytes(t) + (region_needs_target(t) ? t.nbytes : 0));
  return total;
}

// A slot per worker of a parallel pass (each reads, computes and writes its own chunks): every
// pool thread on the host; on a device as many as it runs ops at once (cuda/hdr_ops.cu's lanes),
// each worker's copies overlapping the others' kernels. At least two for a pass in order (one
// chunk read ahead while the other is computed and written).
int Job::slot_count() const {
  constexpr int kDeviceWorkers = 4;
  const int threads = ThreadPool::shared().size();
  return std::max(2, runs_on_host() ? threads : std::min(threads, kDeviceWorkers));
}

uint64_t Job::chunk_elems() const {
  // Each slot holds up to four float32 arrays and a mask byte per element.
  uint64_t elems = spec_.buffer_bytes / (uint64_t(slot_count()) * 17);
  if (elems < (1u << 16)) elems = 1u << 16;
  if (elems > (1ull << 30)) elems = 1ull << 30;
  constexpr uint64_t kHostChunk = 1u << 18;
  if (runs_on_host()) elems = std::min(elems, kHostChunk);
  return elems;
}

// Chunks of a pass that writes. In parallel on the host a chunk's inputs fit the core's own cache,
// so the computation reads them from there right after the read put them there, and the write
// takes the result from there.
uint64_t Job::write_chunk_elems(bool any_order) const {
  constexpr uint64_t kHostParallelChunk = 1u << 16;
  return any_order && runs_on_host() ? std::min(chunk_elems(), kHostParallelChunk) : chunk_elems();
}

void Job::validate_sources() {
  auto check = [&](const TensorSource& s, const HdrTensor& t, const char* role) {
    if (s.file < 0) return;
    if (size_t(s.file) >= inputs_.size()) throw std::runtime_error("internal error: bad file index for " + t.name);
    const uint64_t bytes = t.compute ? t.numel * uint64_t(dtype_size(s.dtype)) : t.nbytes;
    const InputFile& f = *inputs_[size_t(s.file)];
    if (s.offset + bytes > f.size())
      throw IoError(f.path() + ": tensor \"" + t.name + "\" (" + role + ") ends at byte " + std::to_string(s.offset + bytes) +
                    " but the file has " + std::to_string(f.size()) + " bytes; the file is truncated: download it again",
                    {f.path(), t.name});
  };
  for (const auto& t : spec_.tensors) {
    check(t.target, t, "target");
    if (t.compute && !spec_.from_harm_vector) {
      check(t.base, t, "base");
      check(t.harmful, t, "harmful");
    }
  }
}

std::vector<Chunk> Job::make_chunks(bool histogram_pass, uint64_t step) const {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < spec_.tensors.size(); i++) {
    const HdrTensor& t = spec_.tensors[i];
    const bool in_region = t.compute && (t.whole_region || spec_.edit_mask);
    if (histogram_pass && !in_region) continue;
    if (!histogram_pass && (!t.compute || spec_.from_harm_vector || !in_region)) {
      // copied through, or patched from sparse entries: one work item for the whole tensor
      chunks.push_back(Chunk{int(i), 0, t.numel, false, false, false});
      continue;
    }
    const bool need_target = !histogram_pass || region_needs_target(t);
    for (uint64_t s = 0; s < t.numel; s += step) {
      const uint64_t n = std::min(step, t.numel - s);
      chunks.push_back(Chunk{int(i), s, n, true, true, need_target});
    }
  }
  return chunks;
}

void Job::read_source(const TensorSource& src, uint64_t start, uint64_t count, void* dst) {
  const uint64_t es = uint64_t(dtype_size(src.dtype));
  inputs_[size_t(src.file)]->read(dst, count * es, src.offset + start * es);
}

void Job::read_chunk(const Chunk& c, Slot& s) {
  const HdrTensor& t = spec_.tensors[size_t(c.tensor)];
  if (c.read_base) read_source(t.base, c.start, c.count, s.base);
  if (c.read_harmful) read_source(t.harmful, c.start, c.count, s.harmful);
  if (c.read_target) read_source(t.target, c.start, c.count, s.target);
}

// Counts a consumed chunk's bytes (those a whole-tensor item moved itself included) and reports progress.
void Job::account_read(const Chunk& c, const char* phase) {
  uint64_t bytes = 0;
  const HdrTensor& t = spec_.tensors[size_t(c.tensor)];
  if (c.read_base) bytes += c.count * uint64_t(dtype_size(t.base.dtype));
  if (c.read_harmful) bytes += c.count * uint64_t(dtype_size(t.harmful.dtype));
  if (c.read_target) bytes += c.count * uint64_t(dtype_size(t.target.dtype));
  else if (!c.read_base && !c.read_harmful) bytes += t.nbytes;  // copied through or patched whole
  result_.bytes_read += bytes;
  report(phase, bytes);
}

void Job::stream(const std::vector<Chunk>& chunks, const char* phase, bool any_order, const Consume& consume) {
  if (any_order) stream_in_parallel(chunks, phase, consume);
  else stream_in_order(chunks, phase, consume);
}

// A worker per slot takes the next chunk, reads it into its slot, consumes it and takes another.
// The workers are threads of the pass's own, not the shared pool's: a pass lasts seconds to
// minutes, and the pool's parallel loops (an engine generating in the same process) must not wait
// for it. After a failure no chunk is started, and the error of the first failed chunk in stream
// order is the one thrown (every chunk before it was taken earlier and is finished): the same as in
// order.
void Job::stream_in_parallel(const std::vector<Chunk>& chunks, const char* phase, const Consume& consume) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  size_t error_at = chunks.size();
  std::exception_ptr error;
  const auto work = [&](int w) {
    Slot& s = (*slots_)[size_t(w)];
    for (size_t i = next++; i < chunks.size() && !failed.load() && !cancel_.load(); i = next++) {
      try {
        read_chunk(chunks[i], s);
        consume(chunks[i], s, w);
        std::lock_guard<std::mutex> lock(tally_mu_);
        account_read(chunks[i], phase);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (i < error_at) {
          error_at = i;
          error = std::current_exception();
        }
        failed = true;
      }
    }
  };
  const int workers = std::min<int>(ThreadPool::shared().size(), int(slots_->size()));
  std::vector<std::thread> helpers;
  try {
    for (int w = 1; w < workers; w++) helpers.emplace_back(work, w);
  } catch (const std::system_error&) {
    // No more threads to be had: the pass runs on those that started.
  }
  work(0);
  for (std::thread& h : helpers) h.join();
  if (error) std::rethrow_exception(error);
  if (cancel_.load()) throw Cancelled();
}

// Reads chunk i+1 on a second thread while chunk i is consumed.
void Job::stream_in_order(const std::vector<Chunk>& chunks, const char* phase, const Consume& consume) {
  std::mutex mu;
  std::condition_variable cv;
  size_t ready = 0, consumed = 0;
  bool stop = false;
  std::exception_ptr read_error;
  std::thread reader([&] {
    try {
      for (size_t i = 0; i < chunks.size(); i++) {
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait(lock, [&] { return stop || i < consumed + slots_->size(); });
          if (stop) return;
        }
        read_chunk(chunks[i], (*slots_)[i]);
        std::lock_guard<std::mutex> lock(mu);
        ready = i + 1;
        cv.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      read_error = std::current_exception();
      cv.notify_all();
    }
  });
  auto finish_reader = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    reader.join();
  };
  try {
    for (size_t i = 0; i < chunks.size(); i++) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return ready > i || read_error; });
        if (ready <= i && read_error) std::rethrow_exception(read_error);
      }
      if (cancel_.load()) throw Cancelled();
      consume(chunks[i], (*slots_)[i], 0);
      {
        std::lock_guard<std::mutex> lock(tally_mu_);
        account_read(chunks[i], phase);
      }
      std::lock_guard<std::mutex> lock(mu);
      consumed = i + 1;
      cv.notify_all();
    }
  } catch (...) {
    finish_reader();
    throw;
  }
  finish_reader();
}

sa_hdr_chunk Job::make_chunk(const HdrTensor& t, const Chunk& c, const Slot& s, bool with_target) const {
  sa_hdr_chunk h{};
  h.base = s.base;
  h.harmful = s.harmful;
  h.target = with_target ? s.target : nullptr;
  h.base_dtype = int32_t(t.base.dtype);
  h.harmful_dtype = int32_t(t.harmful.dtype);
  h.target_dtype = int32_t(t.target.dtype);
  h.n = c.count;
  h.whole_region = t.whole_region ? 1 : 0;
  h.edit_mask = spec_.edit_mask ? 1 : 0;
  return h;
}

void Job::check_backend(int rc, const sa_error& err, const char* op, const HdrTensor& t) const {
  if (rc != SA_BACKEND_OK) throw std::runtime_error(std::string(backend_->name) + " backend failed in " + op + " on tensor \"" + t.name + "\": " + err.message);
}

// Non-finite inputs first (naming the file), then a result that overflows the target dtype.
void Job::check_counts(const sa_hdr_counts& counts, const HdrTensor& t, const Chunk& c) const {
  auto check_input = [&](uint64_t n, const TensorSource& src, const char* role) {
    if (n > 0) refuse_nonfinite_input(n, path_of(src), t.name, role, c.start, c.count, t.numel);
  };
  check_input(counts.nonfinite_base, t.base, "base");
  check_input(counts.nonfinite_harmful, t.harmful, "harmful");
  check_input(counts.nonfinite_target, t.target, "target");
  // With finite inputs, harmful - base cannot be NaN.
  if (counts.nan > 0) throw std::runtime_error("internal error: tensor \"" + t.name + "\": harmful - base is NaN although its inputs are finite");
  refuse_overflow(counts.nonfinite_out, t.name, t.target.dtype, spec_.lambda, c.start, c.count, t.numel);
}

void Job::histogram_pass(int level, uint32_t prefix, std::vector<uint64_t>& hist, const char* phase) {
  std::vector<std::vector<uint64_t>> worker_hist(slots_->size(), std::vector<uint64_t>(SA_HIST_BUCKETS, 0));
  std::vector<uint64_t> worker_region(slots_->size(), 0);
  // The host's histogram op adds a whole histogram per chunk: the longest chunks keep that small.
  stream(make_chunks(true, chunk_elems()), phase, true, [&](const Chunk& c, Slot& s, int w) {
    const HdrTensor& t = spec_.tensors[size_t(c.tensor)];
    const sa_hdr_chunk h = make_chunk(t, c, s, c.read_target);
    sa_hdr_counts counts{};
    sa_error err{};
    check_backend(backend_->hdr_histogram(&h, level, prefix, worker_hist[size_t(w)].data(), &counts, &err), err, "histogram", t);
    check_counts(counts, t, c);
    worker_region[size_t(w)] += counts.region;
  });
  hist.assign(SA_HIST_BUCKETS, 0);
  uint64_t region = 0;
  for (size_t w = 0; w < worker_hist.size(); w++) {
    region += worker_region[w];
    for (size_t b = 0; b < SA_HIST_BUCKETS; b++) hist[b] += worker_hist[w][b];
  }
  if (level == 0) result_.region_elements = region;
}

ThresholdSearch find_boundary_bucket(const std::vector<uint64_t>& hist, uint64_t rank) {
  uint64_t below = 0;
  for (uint32_t b = 0; b < hist.size(); b++) {
    if (below + hist[b] >= rank) return ThresholdSearch{rank, b, below};
    below += hist[b];
  }
  throw std::runtime_error("internal error: threshold rank beyond the histogram");
}

// Streams a stored harm vector's (index, value) entries in index order.
class SparseCursor {
 public:
  SparseCursor(const InputFile& f, const SparseSource& sp, const HdrTensor& t) : f_(f), sp_(sp), t_(t) {}

  // out holds target elements [start, end); applies every entry below end. Returns entries applied.
  // Refuses a NaN or infinite value, and a result that overflows the target dtype.
  uint64_t apply_until(uint64_t start, uint64_t end, void* out, float lambda) {
    uint64_t applied = 0;
    for (;;) {
      if (pos_ == filled_) {
        if (next_ >= sp_.count) return applied;
        fill();
      }
      const uint64_t index = index_at(pos_);
      if (index >= end) return applied;
      if (index < start || index >= t_.numel || (have_last_ && index <= last_))
        throw IoError(f_.path() + ": harm vector tensor \"" + t_.name + "\" has index " + std::to_string(index) +
                      " out of order or outside the tensor's " + std::to_string(t_.numel) + " elements; the file is damaged or does not fit this target: make it again",
                    {f_.path(), t_.name});
      const float value = values_[pos_];
      if (nonfinite(value))
        throw Error(ErrorCode::SA_BAD_CHECKPOINT,
                    f_.path() + ": harm vector tensor \"" + t_.name + "::values\" holds a NaN or infinite value at entry " + std::to_string(entry()) +
                        " (index " + std::to_string(index) + "); the file is damaged: make the harm vector again",
                    {f_.path(), t_.name});
      last_ = index;
      have_last_ = true;
      const uint64_t i = index - start;
      store_f32(out, t_.target.dtype, i, hdr_patch(load_f32(out, t_.target.dtype, i), lambda, value));
      refuse_overflow(nonfinite(load_f32(out, t_.target.dtype, i)), t_.name, t_.target.dtype, lambda, index, 1, t_.numel);
      pos_++;
      applied++;
    }
  }
  uint64_t bytes_read() const { return next_ * (uint64_t(sp_.index_bytes) + 4); }
  uint64_t entry() const { return next_ - filled_ + pos_; }  // index of the current entry in the file

 private:
  static constexpr uint64_t kBlock = 1 << 20;
  void fill() {
    const uint64_t n = std::min(kBlock, sp_.count - next_);
    indices_.resize(n * size_t(sp_.index_bytes));
    values_.resize(n);
    f_.read(indices_.data(), n * uint64_t(sp_.index_bytes), sp_.indices_offset + next_ * uint64_t(sp_.index_bytes));
    f_.read(values_.data(), n * 4, sp_.values_offset + next_ * 4);
    next_ += n;
    filled_ = n;
    pos_ = 0;
  }
  uint64_t index_at(uint64_t j) const {
    if (sp_.index_bytes == 8) { int64_t v; std::memcpy(&v, indices_.data() + j * 8, 8); return uint64_t(v); }
    int32_t v; std::memcpy(&v, indices_.data() + j * 4, 4); return uint64_t(uint32_t(v));
  }

  const InputFile& f_;
  const SparseSource& sp_;
  const HdrTensor& t_;
  std::vector<char> indices_;
  std::vector<float> values_;
  uint64_t next_ = 0, filled_ = 0, pos_ = 0, last_ = 0;
  bool have_last_ = false;
};

void Job::apply_sparse(const HdrTensor& t, Slot& s, OutputFile& out) {
  SparseCursor cursor(*inputs_[size_t(t.sparse.file)], t.sparse, t);
  const uint64_t step = chunk_elems();
  const uint64_t es = uint64_t(dtype_size(t.target.dtype));
  uint64_t applied = 0;
  for (uint64_t st = 0; st < t.numel; st += step) {
    if (cancel_.load()) throw Cancelled();
    const uint64_t n = std::min(step, t.numel - st);
    inputs_[size_t(t.target.file)]->read(s.out, n * es, t.target.offset + st * es);
    refuse_nonfinite_input(count_nonfinite(s.out, t.target.dtype, n), path_of(t.target), t.name, "target", st, n, t.numel);
    applied += cursor.apply_until(st, st + n, s.out, spec_.lambda);
    out.write(s.out, n * es, t.out_offset + st * es);
  }
  if (applied != t.sparse.count)
    throw IoError(path_of(t.sparse) + ": harm vector tensor \"" + t.name + "\" has entries beyond the tensor; the file does not fit this target: make it for this model",
                  {path_of(t.sparse), t.name});
  std::lock_guard<std::mutex> lock(tally_mu_);
  result_.kept += applied;
  result_.region_elements += applied;
  result_.bytes_read += cursor.bytes_read() + t.nbytes;
  result_.bytes_written += t.nbytes;
}

// Writes a tensor that is outside the region (copied) or patched from a harm vector; false for a
// region tensor, which the caller computes chunk by chunk.
bool Job::copy_through(const HdrTensor& t, Slot& s, OutputFile& out) {
  const bool in_region = t.compute && (t.whole_region || spec_.edit_mask);
  if (t.compute && in_region && !spec_.from_harm_vector) return false;
  const bool patch = t.compute && spec_.from_harm_vector && t.sparse.file >= 0 && t.sparse.count > 0;
  if (patch) {
    apply_sparse(t, s, out);
    return true;
  }
  out.copy_from(*inputs_[size_t(t.target.file)], t.target.offset, t.nbytes, t.out_offset);
  std::lock_guard<std::mutex> lock(tally_mu_);
  result_.bytes_written += t.nbytes;
  return true;
}

void Job::three_pass_threshold() {
  auto t0 = Clock::now();
  std::vector<uint64_t> hist;
  histogram_pass(0, 0, hist, "histogram");
  result_.seconds_histogram = seconds_since(t0);
  const uint64_t d = result_.region_elements;
  result_.keep_target = keep_count(d, spec_.top_k);
  if (d > 0 && result_.keep_target < d) {
    const uint64_t rank = d - result_.keep_target;  // 1-based rank of the threshold, ascending
    const ThresholdSearch coarse = find_boundary_bucket(hist, rank);
    t0 = Clock::now();
    std::vector<uint64_t> fine;
    histogram_pass(1, coarse.bucket, fine, "threshold");
    result_.seconds_refine = seconds_since(t0);
    const ThresholdSearch exact = find_boundary_bucket(fine, rank - coarse.below);
    result_.threshold_bits = (coarse.bucket << 16) | exact.bucket;
    result_.has_threshold = true;
  } else {
    result_.threshold_bits = 0;  // keep everything in the region (or there is nothing to keep)
    result_.has_threshold = d > 0;
  }
}

// One pass that writes the whole output: tensors outside the region copied (or patched from a
// harm vector); each region chunk made by `compute` into a slot buffer that it returns (out, or
// target patched in place). With any_order, each worker writes its own chunks; otherwise in
// order, written in the background while the next chunk is computed.
void Job::write_pass(bool any_order, const Compute& compute) {
  std::unique_ptr<AsyncWriter> writer = any_order ? nullptr : std::make_unique<AsyncWriter>(int(slots_->size()));
  stream(make_chunks(false, write_chunk_elems(any_order)), "apply", any_order, [&](const Chunk& c, Slot& s, int w) {
    if (writer) writer->wait(slots_->index_of(s));
    const HdrTensor& t = spec_.tensors[size_t(c.tensor)];
    OutputFile& out = *outputs_[size_t(t.out_file)];
    if (copy_through(t, s, out)) return;
    const void* data = compute(c, s, t, w);
    const uint64_t es = uint64_t(dtype_size(t.target.dtype));
    if (!writer) {
      out.write(data, c.count * es, t.out_offset + c.start * es);
    } else {
      writer->submit(slots_->index_of(s), &out, data, c.count * es, t.out_offset + c.start * es);
      // The reader refills the slot's target before this write may be done: it gets the out buffer
      // instead, whose last write was waited for above.
      if (data == s.target) std::swap(s.target, s.out);
    }
    std::lock_guard<std::mutex> lock(tally_mu_);
    result_.bytes_written += c.count * es;
  });
  if (writer) writer->finish();
}

void Job::apply_pass() {
  const bool save = !spec_.save_harm_vector.empty();
  int current_tensor = -1;
  // A saved harm vector is written in index order.
  write_pass(!save, [&](const Chunk& c, Slot& s, const HdrTensor& t, int) -> const void* {
    if (save && current_tensor != c.tensor) {
      if (current_tensor >= 0) harm_writer_->end_tensor();
      harm_writer_->begin_tensor(t.name, t.numel);
      current_tensor = c.tensor;
    }
    const sa_hdr_chunk h = make_chunk(t, c, s, true);
    sa_hdr_counts counts{};
    sa_error err{};
    check_backend(backend_->hdr_apply(&h, spec_.trim ? 1 : 0, result_.threshold_bits, spec_.lambda, s.out,
                                      save ? s.mask : nullptr, &counts, &err), err, "apply", t);
    check_counts(counts, t, c);
    if (save) {
      for (uint64_t i = 0; i < c.count; i++)
        if (s.mask[i]) harm_writer_->add(c.start + i, load_f32(s.harmful, t.harmful.dtype, i) - load_f32(s.base, t.base.dtype, i));
    }
    std::lock_guard<std::mutex> lock(tally_mu_);
    result_.kept += counts.kept;
    result_.ties += counts.ties;
    if (!spec_.trim) result_.region_elements += counts.region;
    return s.out;
  });
  if (save && current_tensor >= 0) harm_writer_->end_tensor();
}

std::string test_band_override() {
  const char* v = std::getenv("SAFETY_ARITHMETIC_TEST_HDR_BAND");
  return v ? v : "";
}

// Why the single pass cannot run; empty when it can.
std::string Job::single_pass_refusal() const {
  if (spec_.passes == "3") return "three passes were requested";
  if (!spec_.save_harm_vector.empty()) return "saving a harm vector: it is written in index order during the apply pass, which needs the threshold first";
  if (!backend_->hdr_apply_band) return std::string("the ") + backend_->name + " backend has no single-pass op";
  return "";
}

// Band entries the run may hold: max(buffer size, 16 MiB) of memory.
uint64_t Job::band_capacity() const {
  if (test_band_override() == "full") return 1;
  return std::max<uint64_t>(spec_.buffer_bytes, 16ull << 20) / sizeof(sa_hdr_band_entry);
}

// Blocks of 256 consecutive elements spread evenly over the tensors that may be in the region
// (about 1/256 of them, 2^16 to 2^22 elements; all of them when that is close to everything), read
// on the pool's threads.
RegionSample Job::sample_region() {
  constexpr uint64_t kLen = 256;
  struct Block {
    int tensor;
    uint64_t start, count;
  };
  std::vector<int> candidates;
  std::vector<uint64_t> first(spec_.tensors.size(), 0);  // a candidate tensor's first element, in stream order
  RegionSample sample;
  for (size_t i = 0; i < spec_.tensors.size(); i++) {
    const HdrTensor& t = spec_.tensors[i];
    if (pair_bytes(t) == 0 || t.numel == 0) continue;
    candidates.push_back(int(i));
    first[i] = sample.candidates;
    sample.candidates += t.numel;
  }
  std::vector<Block> blocks;
  const uint64_t wanted = std::min<uint64_t>(std::max<uint64_t>(sample.candidates / 256, 1u << 16), 1u << 22);
  const uint64_t count = (wanted + kLen - 1) / kLen;
  if (count * kLen * 2 >= sample.candidates) {
    for (int i : candidates)
      for (uint64_t st = 0; st < spec_.tensors[size_t(i)].numel; st += kLen)
        blocks.push_back(Block{i, st, std::min(kLen, spec_.tensors[size_t(i)].numel - st)});
  } else {
    size_t k = 0;
    uint64_t tensor_start = 0;  // global position of candidates[k]'s first element
    for (uint64_t j = 0; j < count; j++) {
      const uint64_t g = uint64_t((double(j) + 0.5) * double(sample.candidates) / double(count));
      while (g >= tensor_start + spec_.tensors[size_t(candidates[k])].numel) tensor_start += spec_.tensors[size_t(candidates[k++])].numel;
      const uint64_t numel = spec_.tensors[size_t(candidates[k])].numel, len = std::min(kLen, numel);
      const uint64_t st = std::min(g - tensor_start > kLen / 2 ? g - tensor_start - kLen / 2 : 0, numel - len);
      if (!blocks.empty() && blocks.back().tensor == candidates[k] && blocks.back().start + blocks.back().count > st) continue;
      blocks.push_back(Block{candidates[k], st, len});
    }
  }
  // Scattered reads: read-ahead would bring in (from a disk) far more than the blocks themselves.
  for (const auto& f : inputs_) f->expect(InputFile::Access::scattered);
  // Block j's bits go to bits[j * kLen ...], found[j] of them; then moved together in block order.
  LargeArray<uint32_t> bits(blocks.size() * kLen);
  std::vector<uint32_t> found(blocks.size(), 0);
  // Samples block j; with cached_only, only if its inputs are all in the page cache (else false).
  const auto sample_block = [&](size_t j, bool cached_only) {
    const Block& b = blocks[j];
    const HdrTensor& t = spec_.tensors[size_t(b.tensor)];
    const bool need_target = region_needs_target(t);
    alignas(64) unsigned char base[kLen * 4], harmful[kLen * 4], target[kLen * 4];
    const auto read = [&](const TensorSource& src, void* dst) {
      const uint64_t es = uint64_t(dtype_size(src.dtype));
      const InputFile& f = *inputs_[size_t(src.file)];
      if (cached_only) return f.read_cached(dst, b.count * es, src.offset + b.start * es);
      f.read(dst, b.count * es, src.offset + b.start * es);
      return true;
    };
    if (!read(t.base, base) || !read(t.harmful, harmful) || (need_target && !read(t.target, target))) return false;
    uint32_t* out = bits.data() + j * kLen;
    uint32_t n = 0;
    with_dtype(t.base.dtype, [&](auto bt) {
      with_dtype(t.harmful.dtype, [&](auto ht) {
        constexpr DType B = decltype(bt)::value, H = decltype(ht)::value;
        for (uint64_t i = 0; i < b.count; i++) {
          const float bv = load_as<B>(base, i);
          if (need_target && !(load_f32(target, t.target.dtype, i) != bv)) continue;
          const uint32_t a = abs_bits(load_as<H>(harmful, i) - bv);
          out[n] = a;
          n += !is_nan_bits(a);
        }
      });
    });
    found[j] = n;
    return true;
  };
  std::vector<uint8_t> done(blocks.size(), 0);
  if (test_band_override() != "uncached")
    ThreadPool::shared().parallel_for(int64_t(blocks.size()), [&](int64_t j) { done[size_t(j)] = sample_block(size_t(j), true); });
  // The blocks not in the page cache: their reads all start at once, so that a disk serves many
  // together, and are then taken as they arrive.
  std::vector<size_t> missing;
  for (size_t j = 0; j < blocks.size(); j++)
    if (!done[j]) missing.push_back(j);
  for (size_t j : missing) {
    const HdrTensor& t = spec_.tensors[size_t(blocks[j].tensor)];
    const auto prefetch = [&](const TensorSource& src) {
      const uint64_t es = uint64_t(dtype_size(src.dtype));
      inputs_[size_t(src.file)]->prefetch(blocks[j].count * es, src.offset + blocks[j].start * es);
    };
    prefetch(t.base);
    prefetch(t.harmful);
    if (region_needs_target(t)) prefetch(t.target);
  }
  ThreadPool::shared().parallel_for(int64_t(missing.size()), [&](int64_t k) { sample_block(missing[size_t(k)], false); });
  uint64_t joined = 0;
  for (size_t j = 0; j < blocks.size(); j++) {
    const HdrTensor& t = spec_.tensors[size_t(blocks[j].tensor)];
    sample.read += blocks[j].count;
    sample.block_at.push_back(first[size_t(blocks[j].tensor)] + blocks[j].start);
    sample.block_len.push_back(blocks[j].count);
    result_.bytes_read += blocks[j].count * uint64_t(dtype_size(t.base.dtype) + dtype_size(t.harmful.dtype) +
                                                    (region_needs_target(t) ? dtype_size(t.target.dtype) : 0));
    std::memmove(bits.data() + joined, bits.data() + j * kLen, found[j] * sizeof(uint32_t));
    joined += found[j];
    sample.block_ends.push_back(joined);
  }
  for (const auto& f : inputs_) f->expect(InputFile::Access::sequential);
  bits.shrink(joined);
  sample.bits = std::move(bits);
  return sample;
}

void Job::single_pass() {
  result_.band_tried = true;
  auto t0 = Clock::now();
  RegionSample sample = sample_region();
  const uint64_t capacity = band_capacity();
  result_.band_capacity_bytes = capacity * sizeof(sa_hdr_band_entry);
  result_.sample_elements = sample.bits.size();
  const BandPlan plan = plan_band(sample, spec_.top_k, capacity, test_band_override());
  result_.band_lo_bits = plan.band.lo_bits;
  result_.band_hi_bits = plan.band.hi_bits;
  result_.provisional_bits = plan.band.provisional_bits;
  result_.seconds_sample = seconds_since(t0);
  if (!plan.usable) throw BandMiss{plan.why_not};

  t0 = Clock::now();
  // Not initialised: only the entries written are ever touched (and made resident).
  LargeArray<sa_hdr_band_entry> entries(capacity);
  uint64_t entry_count = 0;
  std::vector<BandSegment> segments;
  uint64_t region = 0, below = 0, above = 0, kept = 0, ties = 0, candidates_done = 0;
  ProvisionalEstimate estimate(sample, plan.band, spec_.top_k);
  const bool small_room = test_band_override() == "room";
  // Each worker's band entries of its current chunk (not initialised: only what is written is
  // touched), joined to `entries` when the chunk is done; segments are in the order chunks finished.
  const uint64_t chunk_cap = write_chunk_elems(true);
  std::vector<std::unique_ptr<sa_hdr_band_entry[]>> chunk_entries(slots_->size());
  write_pass(true, [&](const Chunk& c, Slot& s, const HdrTensor& t, int w) -> const void* {
    std::unique_ptr<sa_hdr_band_entry[]>& mine = chunk_entries[size_t(w)];
    if (!mine) mine.reset(new sa_hdr_band_entry[chunk_cap]);
    const sa_hdr_chunk h = make_chunk(t, c, s, true);
    uint64_t room = small_room ? 1 : c.count;
    sa_hdr_band band = plan.band;
    {
      std::lock_guard<std::mutex> lock(tally_mu_);
      band.provisional_bits = estimate.next();
    }
    sa_hdr_band_counts counts{};
    for (;;) {
      counts = sa_hdr_band_counts{};
      sa_error err{};
      check_backend(backend_->hdr_apply_band(&h, &band, spec_.lambda, s.target, mine.get(), room, &counts, &err), err, "apply", t);
      if (counts.band <= room) break;
      room = counts.band;  // this chunk again, with room for all of its band, from the target as read
      read_source(t.target, c.start, c.count, s.target);
      std::lock_guard<std::mutex> lock(tally_mu_);
      result_.bytes_read += c.count * uint64_t(dtype_size(t.target.dtype));
    }
    const sa_hdr_counts& k = counts.counts;
    if (k.nonfinite_base || k.nonfinite_harmful || k.nonfinite_target || k.nan || k.nonfinite_out)
      throw BandMiss{"tensor \"" + t.name + "\" holds a non-finite input or an overflowing result, which the three passes report"};
    std::lock_guard<std::mutex> lock(tally_mu_);
    if (entry_count + counts.band > capacity)
      throw BandMiss{"the band is full: more than " + std::to_string(capacity) + " region elements lie in it (many equal magnitudes near the threshold)"};
    std::memcpy(entries.data() + entry_count, mine.get(), counts.band * sizeof(sa_hdr_band_entry));
    segments.push_back(BandSegment{c.tensor, c.start, entry_count, counts.band, band.provisional_bits});
    entry_count += counts.band;
    // Chunks finish nearly in stream order; the estimate only steers how much is patched at the end.
    candidates_done += c.count;
    estimate.streamed(candidates_done, k.region, counts.below, mine.get(), counts.band);
    region += k.region;
    below += counts.below;
    above += counts.above;
    kept += k.kept;
    ties += k.ties;
    return s.target;
  });
  result_.seconds_apply = seconds_since(t0);

  t0 = Clock::now();
  result_.band_entries = entry_count;
  const BandResolution res = resolve_band(region, below, above, entries.data(), entry_count, plan.band, spec_.top_k);
  if (!res.hit) throw BandMiss{res.miss};
  result_.region_elements = region;
  result_.keep_target = res.keep;
  result_.has_threshold = res.has_threshold;
  result_.threshold_bits = res.threshold_bits;
  if (res.keep == region) {
    result_.kept = kept;  // everything kept, threshold 0: written so (the band is empty, provisional 0)
    result_.ties = ties;
  } else {  // the threshold lies inside the band, and so do all elements equal to it
    result_.kept = above + res.band_kept;
    result_.ties = res.band_ties;
  }
  if (region > 0) patch_band(entries.data(), segments, res.threshold_bits);
  result_.seconds_patch = seconds_since(t0);
  result_.passes = 1;
  result_.passes_reason = spec_.passes == "1" ? "one pass was requested, and the sampled band held the threshold"
                                              : "the sampled band held the threshold";
}

// Rewrites the output elements on the wrong side of the provisional threshold; refuses (through
// the three passes) a kept band element whose result overflows the target dtype.
void Job::patch_band(const sa_hdr_band_entry* entries, const std::vector<BandSegment>& segments, uint32_t threshold) {
  struct Patch {
    int out_file;
    uint64_t offset;
    uint32_t raw;
    int bytes;
  };
  std::vector<Patch> patches;
  for (const BandSegment& seg : segments) {
    const HdrTensor& t = spec_.tensors[size_t(seg.tensor)];
    with_dtype(t.target.dtype, [&](auto tag) {
      constexpr DType T = decltype(tag)::value;
      using E = typename Storage<T>::type;
      for (uint64_t i = seg.first; i < seg.first + seg.count; i++) {
        const sa_hdr_band_entry& e = entries[i];
        const uint32_t a = abs_bits(e.tau);
        if (a < threshold) {
          if (a >= seg.provisional) patches.push_back(Patch{t.out_file, t.out_offset + (seg.start + e.index) * sizeof(E), e.target_raw, int(sizeof(E))});
          continue;
        }
        E stored;
        std::memcpy(&stored, &e.target_raw, sizeof stored);
        E result;
        if (store_checked<T>(&result, 0, hdr_patch(widen<T>(stored), spec_.lambda, e.tau)))
          throw BandMiss{"tensor \"" + t.name + "\" has a kept element whose result overflows its dtype, which the three passes report"};
        if (a >= seg.provisional) continue;
        uint32_t raw = 0;
        std::memcpy(&raw, &result, sizeof result);
        patches.push_back(Patch{t.out_file, t.out_offset + (seg.start + e.index) * sizeof(E), raw, int(sizeof(E))});
      }
    });
  }
  // In file order, each thread a contiguous share: writes to one file wait for each other in the
  // kernel, and threads that start in different places rarely meet in the same file.
  std::sort(patches.begin(), patches.end(),
            [](const Patch& a, const Patch& b) { return a.out_file != b.out_file ? a.out_file < b.out_file : a.offset < b.offset; });
  const int64_t shares = std::min<int64_t>(ThreadPool::shared().size(), int64_t(patches.size() / 64) + 1);
  ThreadPool::shared().parallel_for(
      shares,
      [&](int64_t w) {
        const size_t begin = patches.size() * size_t(w) / size_t(shares), end = patches.size() * size_t(w + 1) / size_t(shares);
        for (size_t i = begin; i < end; i++) outputs_[size_t(patches[i].out_file)]->write(&patches[i].raw, uint64_t(patches[i].bytes), patches[i].offset);
      },
      1);
  result_.patched = patches.size();
}

// The benchmark's floor: the single pass's reads and writes through the same files, threads and
// staging, with the target written unchanged.
void Job::io_floor_pass() {
  const auto t0 = Clock::now();
  write_pass(true, [](const Chunk&, Slot& s, const HdrTensor&, int) -> const void* { return s.target; });
  result_.seconds_apply = seconds_since(t0);
  result_.passes = 1;
  result_.passes_reason = "I/O floor: inputs read and the target written, nothing computed";
}

HdrResult Job::run() {
  std::string error;
  backend_ = select_backend(spec_.device, &error);
  if (!backend_) throw std::runtime_error(error);
  result_.backend = backend_->name;
  for (const auto& f : spec_.files) inputs_.push_back(std::make_unique<InputFile>(f));
  validate_sources();

  const bool save = !spec_.save_harm_vector.empty();
  slots_ = std::make_unique<SlotPool>(backend_, slot_count(), chunk_elems(), save);

  // Total bytes moved by the apply pass, for progress (the threshold passes add theirs when they run).
  for (const auto& t : spec_.tensors) total_bytes_ += pair_bytes(t) + t.nbytes;

  for (const auto& o : spec_.outputs) {
    outputs_.push_back(std::make_unique<OutputFile>(o.path, o.size));
    outputs_.back()->write(o.header.data(), o.header.size(), 0);
  }
  if (save) {
    std::vector<HarmVectorWriter::TensorInfo> infos;
    for (const auto& t : spec_.tensors)
      if (t.compute) infos.push_back({t.name, t.numel});
    harm_writer_ = std::make_unique<HarmVectorWriter>(spec_.save_harm_vector, infos, spec_.harm_vector_metadata);
  }

  if (spec_.io_only) {
    io_floor_pass();
  } else if (spec_.trim && !spec_.from_harm_vector) {
    std::string why_three = single_pass_refusal();
    if (why_three.empty()) {
      try {
        single_pass();
      } catch (const BandMiss& miss) {
        why_three = "the single pass fell back: " + miss.reason;
        result_.region_elements = result_.kept = result_.ties = result_.bytes_written = result_.patched = 0;
        result_.has_threshold = false;
      }
    }
    if (!why_three.empty()) {
      total_bytes_ += three_pass_bytes();
      three_pass_threshold();
      const auto t_apply = Clock::now();
      apply_pass();
      result_.seconds_apply = seconds_since(t_apply);
      result_.passes = 3;
      result_.passes_reason = why_three;
    }
  } else {
    const auto t_apply = Clock::now();
    apply_pass();
    result_.seconds_apply = seconds_since(t_apply);
    result_.passes = 1;
    result_.passes_reason = spec_.trim ? "a stored harm vector: no threshold to find" : "task-vector mode: no threshold to find";
  }
  for (auto& o : outputs_) o->finish(spec_.durable);
  if (save) {
    std::string dyn = "\"region_elements\":\"" + std::to_string(result_.region_elements) + "\",\"kept\":\"" +
                      std::to_string(result_.kept) + "\",\"ties\":\"" + std::to_string(result_.ties) + "\"";
    if (result_.has_threshold) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.9g", double(bits_f32(result_.threshold_bits)));
      dyn += ",\"threshold\":\"" + std::string(buf) + "\",\"threshold_bits\":\"" + std::to_string(result_.threshold_bits) + "\"";
    }
    harm_writer_->finish(dyn, spec_.durable);
  }
  return result_;
}

}  // namespace


HdrResult run_hdr_job(const HdrJobSpec& spec, const std::function<void(const HdrProgress&)>& progress,
                      const std::atomic<bool>& cancel) {
  Job job(spec, progress, cancel);
  return job.run();
}

}  // namespace sa
