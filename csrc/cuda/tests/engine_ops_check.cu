// Checks the CUDA backend's table: its version, its HDR ops against the CPU's (bit for bit), and
// every engine op against the CPU ops (the reference, which matches Hugging Face transformers) on
// random inputs; prints the maximum relative error of each case with PASS or FAIL, checks that
// results do not depend on the batch (decode == prefill, a row alone == inside a batch), and with
// --bench times the decode-critical kernels. Exit status 0 when every check passes.
//
// On a machine with a GPU, after `node scripts/build-native.js` (which builds the CUDA library):
//   cmake -S . -B build/checks -DSA_BUILD_CUDA_CHECKS=ON -DSA_OUTPUT_DIR=$PWD/build/Release
//   cmake --build build/checks --target engine_ops_check -j
//   build/checks/engine_ops_check [path/to/libsafety_arithmetic_cuda.so] [--bench]
// (without a path it looks where find_library() below says; it prints the one it loaded).
// or without cmake (the harness itself needs no CUDA; it dlopen()s the library as the addon does,
// and takes the CPU backend from the static core library that build made), as one command line:
//   g++ -std=c++17 -O2 -ffp-contract=off -Icsrc -x c++ csrc/cuda/tests/engine_ops_check.cu -x none
//     build/cmake/libsa_core.a -o /tmp/engine_ops_check -ldl -lpthread
//   /tmp/engine_ops_check build/Release/libsafety_arithmetic_cuda.so --bench
// SAFETY_ARITHMETIC_CUDA_SYNC=1 makes each op wait for its kernel, so that a fault names its op.
//
// Without a GPU, against the CPU simulator of tests/cuda_sim.h (the kernels and host code of the
// CUDA backend compiled as C++; slow, so the large cases are skipped): test/cuda-sim.test.ts builds
// and runs it, and model_check.cu, in `npm test`. By hand, under AddressSanitizer and UBSan (the CPU
// kernel variants with their flags from CMakeLists.txt, then the rest; the CUDA sources are those of
// the library but steer_api.cu):
//   F="-std=c++20 -O1 -g -fsanitize=address,undefined -ffp-contract=off -pthread -Icsrc"
//   g++ $F -c csrc/cpu/gemm/gemm_avx2.cpp -mavx2 -mfma -mf16c -o /tmp/gemm_avx2.o
//   g++ $F -c csrc/cpu/gemm/gemm_avx512.cpp -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c -o /tmp/gemm_avx512.o
//   g++ $F -DSA_CUDA_SIM -x c++ csrc/cuda/tests/engine_ops_check.cu csrc/cuda/{backend_table,device,hdr_ops,hdr_kernels,
//     engine_ops,gemm,attention,norm_rope,elementwise,steer}.cu -x none csrc/cpu/{cpu_backend,cpu_dispatch,engine_ops,
//     engine_rowwise,hdr_ops}.cpp csrc/cpu/gemm/gemm_baseline.cpp csrc/cpu/gemm/gemm_pack.cpp csrc/backend/table_ops.cpp
//     csrc/common/thread_pool.cpp /tmp/gemm_avx2.o /tmp/gemm_avx512.o -o /tmp/engine_ops_sim -ldl
//   /tmp/engine_ops_sim
// (-fsanitize=thread -DSA_CUDA_SIM_THREADS instead, each CUDA thread an OS thread, looks for missing barriers).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include "backend/table_ops.h"
#include "common/dtype.h"
#include "cuda/tests/backend_tables.h"
#include "engine/ops.h"

#ifndef SA_CUDA_LIBRARY_DEFAULT
#define SA_CUDA_LIBRARY_DEFAULT "build/Release/libsafety_arithmetic_cuda.so"
#endif

namespace {

using sa::DType;
using sa::engine::AttnSeq;
using sa::engine::AttnShape;
using sa::engine::DeviceOps;
using sa::engine::SteerSlice;

const char* dtype_name(DType t) { return t == DType::F32 ? "f32" : t == DType::BF16 ? "bf16" : "f16"; }

// Max |got - ref| / max |ref|, the measure of the package's tests; NaN anywhere gives infinity.
double max_rel(const std::vector<float>& got, const std::vector<float>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    if (std::isnan(got[i]) != std::isnan(ref[i])) return INFINITY;
    diff = std::max(diff, std::fabs(double(got[i]) - double(ref[i])));
    scale = std::max(scale, std::fabs(double(ref[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// A host array in dtype dt, encoded from float32 values (rounded to nearest even).
std::vector<char> encode(const std::vector<float>& v, DType dt) {
  std::vector<char> out(v.size() * size_t(sa::dtype_size(dt)));
  for (size_t i = 0; i < v.size(); i++) sa::store_f32(out.data(), dt, i, v[i]);
  return out;
}

// The float32 values of a host array in dtype dt (exact).
std::vector<float> decode(const std::vector<char>& bytes, DType dt) {
  std::vector<float> out(bytes.size() / size_t(sa::dtype_size(dt)));
  for (size_t i = 0; i < out.size(); i++) out[i] = sa::load_f32(bytes.data(), dt, i);
  return out;
}

class Checker {
 public:
  Checker(DeviceOps* cpu, DeviceOps* gpu, bool small) : cpu_(cpu), gpu_(gpu), small_(small) {}
  ~Checker() {
    for (void* p : owned_) gpu_->release(p);
  }

  int failures() const { return failures_; }
  int checks() const { return checks_; }
  bool small() const { return small_; }

  std::vector<float> random(size_t n, float lo = -1.f, float hi = 1.f) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng_);
    return v;
  }
  int randint(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  // Device copy of host bytes, released with the checker.
  void* put(const void* host, size_t bytes) {
    void* d = gpu_->alloc(bytes);
    owned_.push_back(d);
    if (bytes) gpu_->upload(d, host, bytes);
    return d;
  }
  float* put(const std::vector<float>& v) { return static_cast<float*>(put(v.data(), v.size() * 4)); }
  // A weight matrix W [n, k] on the device, as matmul takes it (upload_matrix), released with the checker.
  void* matrix(const std::vector<char>& w, DType dt, int n, int k) {
    void* d = gpu_->upload_matrix(w.data(), dt, n, k, sa::engine::MatmulPrecision::F32);
    owned_.push_back(d);
    return d;
  }
  void* put(const std::vector<char>& v) { return put(v.data(), v.size()); }
  float* scratch(size_t floats) {
    void* d = gpu_->alloc(floats * 4);
    owned_.push_back(d);
    return static_cast<float*>(d);
  }
  std::vector<float> get(const float* d, size_t n) {
    std::vector<float> h(n);
    gpu_->download(h.data(), d, n * 4);
    return h;
  }

  void report(const std::string& what, double err, double tol) {
    checks_++;
    const bool ok = err <= tol;
    if (!ok) failures_++;
    std::printf("%-64s max rel err %-11.3e (tol %.0e)  %s\n", what.c_str(), err, tol, ok ? "PASS" : "FAIL");
  }
  template <typename T>
  void identical(const std::string& what, const std::vector<T>& a, const std::vector<T>& b) {
    checks_++;
    const bool ok = a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
    if (!ok) failures_++;
    std::printf("%-64s %-34s  %s\n", what.c_str(), ok ? "bit-identical" : "DIFFERENT", ok ? "PASS" : "FAIL");
  }
  void holds(const std::string& what, bool ok) {
    checks_++;
    if (!ok) failures_++;
    std::printf("%-64s %-34s  %s\n", what.c_str(), ok ? "yes" : "NO", ok ? "PASS" : "FAIL");
  }

  // fn must throw: the op refuses arguments it cannot serve, with a message.
  void refused(const std::string& what, const std::function<void()>& fn) {
    std::string msg;
    try {
      fn();
    } catch (const std::exception& e) {
      msg = e.what();
    }
    report(what + (msg.empty() ? " (no exception)" : ": \"" + msg.substr(0, 40) + "...\""), msg.empty() ? 1.0 : 0.0, 0);
  }

  DeviceOps* cpu() { return cpu_; }
  DeviceOps* gpu() { return gpu_; }

 private:
  DeviceOps* cpu_;
  DeviceOps* gpu_;
  bool small_;
  std::mt19937 rng_{20240601};
  std::vector<void*> owned_;
  int failures_ = 0, checks_ = 0;
};

// The table the library hands out, and the addon's check of its version (backend/table_ops.h).
void check_table(Checker& c, const sa_backend_table& t) {
  c.holds(std::string("table: ABI ") + std::to_string(t.abi_major) + "." + std::to_string(t.abi_minor) + ", \"" + t.name +
              "\", every member of this ABI",
          t.abi_major == SA_BACKEND_ABI_MAJOR && std::string(t.name) == "cuda" && sa::backend::incompatibility(t).empty());
  sa_backend_table other_major = t;
  other_major.abi_major++;
  c.holds("a table of another ABI major is refused", !sa::backend::incompatibility(other_major).empty());
  sa_backend_table short_table = t;
  short_table.struct_size = offsetof(sa_backend_table, steer);
  c.holds("a table without every member of its ABI is refused", !sa::backend::incompatibility(short_table).empty());
  sa_backend_table later_minor = t;
  later_minor.abi_minor++;
  later_minor.struct_size += 64;
  c.holds("a table of a later minor (longer) is accepted", sa::backend::incompatibility(later_minor).empty());
}

// The HDR ops of both tables on the same host chunk: histograms, counts and outputs bit for bit.
void check_hdr(Checker& c, const sa_backend_table& cpu, const sa_backend_table& gpu) {
  const uint64_t n = c.small() ? 6000 : 3000000;
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::vector<char> base = encode(c.random(n), dt), harmful = encode(c.random(n), dt), target = encode(c.random(n), dt);
    sa_hdr_chunk chunk{base.data(), harmful.data(), target.data(), int32_t(dt), int32_t(dt), int32_t(dt), n, 1, 0};
    const std::string name = std::string("hdr ") + dtype_name(dt) + ": ";
    struct Result {
      std::vector<uint64_t> hist0, hist1, counts;
      std::vector<char> out;
      std::vector<uint8_t> kept;
      std::vector<uint64_t> band_counts;
      std::vector<uint32_t> band_entries;
      std::vector<char> band_out;
    };
    auto run = [&](const sa_backend_table& t) {
      Result r;
      r.hist0.assign(SA_HIST_BUCKETS, 0);
      r.hist1.assign(SA_HIST_BUCKETS, 0);
      r.out.assign(target.size(), 0);
      r.kept.assign(n, 0);
      sa_hdr_counts h0{}, h1{}, applied{};
      sa_error err{};
      const uint32_t threshold = 0x3e800000u;  // |tau| >= 0.25
      if (t.hdr_histogram(&chunk, 0, 0, r.hist0.data(), &h0, &err) != SA_BACKEND_OK ||
          t.hdr_histogram(&chunk, 1, threshold >> 16, r.hist1.data(), &h1, &err) != SA_BACKEND_OK ||
          t.hdr_apply(&chunk, 1, threshold, 0.75f, r.out.data(), r.kept.data(), &applied, &err) != SA_BACKEND_OK)
        std::printf("%s backend: %s\n", t.name, err.message);
      for (const sa_hdr_counts& k : {h0, h1, applied})
        r.counts.insert(r.counts.end(), {k.region, k.nan, k.kept, k.ties, k.nonfinite_base, k.nonfinite_harmful,
                                         k.nonfinite_target, k.nonfinite_out});
      // The single pass, with room for every band element and then for 10 of them.
      const sa_hdr_band band{0x3e700000u, 0x3e900000u, 0x3e800000u};
      for (const uint64_t cap : {n, uint64_t(10)}) {
        std::vector<sa_hdr_band_entry> entries(static_cast<size_t>(cap));
        std::vector<char> out(target.size(), 0);
        sa_hdr_band_counts b{};
        if (t.hdr_apply_band(&chunk, &band, 0.75f, out.data(), entries.data(), cap, &b, &err) != SA_BACKEND_OK)
          std::printf("%s backend: %s\n", t.name, err.message);
        const sa_hdr_counts& k = b.counts;
        r.band_counts.insert(r.band_counts.end(), {k.region, k.nan, k.kept, k.ties, k.nonfinite_base, k.nonfinite_harmful,
                                                   k.nonfinite_target, k.nonfinite_out, b.above, b.below, b.band});
        entries.resize(size_t(std::min<uint64_t>(b.band, cap)));
        for (const sa_hdr_band_entry& e : entries) r.band_entries.insert(r.band_entries.end(), {e.index, sa::f32_bits(e.tau), e.target_raw});
        r.band_out.insert(r.band_out.end(), out.begin(), out.end());
      }
      return r;
    };
    const Result want = run(cpu), got = run(gpu);
    c.identical(name + "histogram of the top 16 bits", got.hist0, want.hist0);
    c.identical(name + "histogram of the threshold's bucket", got.hist1, want.hist1);
    c.identical(name + "counts", got.counts, want.counts);
    c.identical(name + "apply output", got.out, want.out);
    c.identical(name + "apply kept mask", got.kept, want.kept);
    c.identical(name + "single pass: counts around the band", got.band_counts, want.band_counts);
    c.identical(name + "single pass: band entries in index order", got.band_entries, want.band_entries);
    c.identical(name + "single pass: output", got.band_out, want.band_out);
    c.holds(name + "single pass: the band holds elements", want.band_counts.size() > 10 && want.band_counts[10] > 10);
    // The job's workers call the ops from several threads at once (the CUDA backend gives each a
    // lane of its own): the same results as one call after another.
    std::vector<Result> concurrent(4);
    std::vector<std::thread> workers;
    for (size_t i = 0; i < concurrent.size(); i++) workers.emplace_back([&, i] { concurrent[i] = run(gpu); });
    for (std::thread& w : workers) w.join();
    bool same = true;
    for (const Result& r : concurrent)
      same = same && r.hist0 == want.hist0 && r.hist1 == want.hist1 && r.counts == want.counts && r.out == want.out &&
             r.kept == want.kept && r.band_counts == want.band_counts && r.band_entries == want.band_entries && r.band_out == want.band_out;
    c.holds(name + "every op from 4 threads at once: histograms, counts, outputs and band entries as one at a time", same);
  }
}

void check_memory(Checker& c) {
  DeviceOps* g = c.gpu();
  std::vector<float> a = c.random(1000);
  float* d = c.put(a);
  c.identical("upload / download", c.get(d, a.size()), a);
  float* e = c.scratch(a.size());
  g->copy(e, d, a.size() * 4);
  c.identical("copy", c.get(e, a.size()), a);
  // Overlapping ranges behave as memmove, as on the CPU.
  std::vector<float> ref = a;
  std::memmove(ref.data() + 10, ref.data(), 500 * 4);
  g->copy(d + 10, d, 500 * 4);
  c.identical("copy, overlapping ranges", c.get(d, a.size()), ref);
  g->synchronize();
}

void check_embed(Checker& c) {
  const int vocab = 50, hidden = 37, rows = 6;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    const std::vector<char> table = encode(c.random(size_t(vocab) * hidden), dt);
    const std::vector<int32_t> ids = {3, 0, 49, 3, 17, 25};
    std::vector<float> ref(size_t(rows) * hidden);
    c.cpu()->embed(ids.data(), rows, table.data(), dt, hidden, ref.data());
    float* out = c.scratch(ref.size());
    c.gpu()->embed(ids.data(), rows, c.put(table), dt, hidden, out);
    c.identical(std::string("embed ") + dtype_name(dt), c.get(out, ref.size()), ref);
  }
}

void check_rmsnorm(Checker& c) {
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (int rows : {1, 3, 33})
      for (int hidden : {64, 100, 4096}) {
        const std::vector<float> x = c.random(size_t(rows) * hidden, -3.f, 3.f);
        const std::vector<char> w = encode(c.random(size_t(hidden), 0.5f, 1.5f), dt);
        std::vector<float> ref(x.size());
        c.cpu()->rmsnorm(x.data(), w.data(), dt, rows, hidden, 1e-5f, ref.data());
        float* out = c.scratch(x.size());
        c.gpu()->rmsnorm(c.put(x), c.put(w), dt, rows, hidden, 1e-5f, out);
        c.report("rmsnorm " + std::string(dtype_name(dt)) + " rows " + std::to_string(rows) + " hidden " +
                     std::to_string(hidden),
                 max_rel(c.get(out, x.size()), ref), 2e-6);
      }
}

struct MatmulCase {
  int rows, k, n;
};

void check_matmul(Checker& c) {
  std::vector<MatmulCase> cases = {{1, 64, 48},  {3, 100, 37}, {1, 13, 5},    {33, 256, 130}, {100, 333, 65},
                                   {8, 512, 70}, {5, 96, 300}, {17, 256, 96}, {2, 128, 260}};
  if (!c.small()) {
    cases.push_back({1, 4096, 4096});
    cases.push_back({4, 1024, 8200});
    cases.push_back({20, 4096, 1024});
    cases.push_back({300, 1000, 500});
  }
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (const MatmulCase& m : cases)
      for (int bias_kind = 0; bias_kind < 3; bias_kind++) {
        if (bias_kind > 0 && m.rows != 3 && m.rows != 33 && m.rows != 1) continue;
        const std::vector<float> x = c.random(size_t(m.rows) * m.k);
        const std::vector<char> w = encode(c.random(size_t(m.n) * m.k), dt);
        const DType bias_dt = bias_kind == 2 ? DType::BF16 : DType::F32;
        const std::vector<char> bias = encode(c.random(size_t(m.n)), bias_dt);
        const void* hb = bias_kind ? bias.data() : nullptr;
        const void* db = bias_kind ? c.put(bias) : nullptr;
        std::vector<float> ref(size_t(m.rows) * m.n);
        void* packed = c.cpu()->upload_matrix(w.data(), dt, m.n, m.k, sa::engine::MatmulPrecision::F32);
        c.cpu()->matmul(x.data(), m.rows, m.k, packed, dt, m.n, hb, bias_dt, ref.data(), sa::engine::MatmulPrecision::F32);
        c.cpu()->release(packed);
        float* out = c.scratch(ref.size());
        c.gpu()->matmul(c.put(x), m.rows, m.k, c.matrix(w, dt, m.n, m.k), dt, m.n, db, bias_dt, out, sa::engine::MatmulPrecision::F32);
        std::string what = "matmul " + std::string(dtype_name(dt)) + " rows " + std::to_string(m.rows) + " k " +
                           std::to_string(m.k) + " n " + std::to_string(m.n);
        if (bias_kind) what += std::string(" +bias ") + dtype_name(bias_dt);
        c.report(what, max_rel(c.get(out, ref.size()), ref), 1e-5);
      }
}

// One row alone, the same row inside batches of every kernel shape, and through the scalar
// (misaligned) path: all bit-identical.
void check_matmul_invariance(Checker& c) {
  for (DType dt : {DType::F32, DType::BF16}) {
    const int k = 512, n = 200, rows = 100, probe = 37;
    const std::vector<float> x = c.random(size_t(rows) * k);
    const std::vector<char> w = encode(c.random(size_t(n) * k), dt);
    float* dx = c.put(x);
    void* dw = c.matrix(w, dt, n, k);
    float* out = c.scratch(size_t(rows) * n);
    c.gpu()->matmul(dx + size_t(probe) * k, 1, k, dw, dt, n, nullptr, DType::F32, out, sa::engine::MatmulPrecision::F32);
    const std::vector<float> alone = c.get(out, size_t(n));
    for (int batch : {2, 4, 5, 8, 9, 33, 100}) {
      const int first = std::max(0, probe - batch / 2);  // the probe row somewhere inside the batch
      c.gpu()->matmul(dx + size_t(first) * k, batch, k, dw, dt, n, nullptr, DType::F32, out, sa::engine::MatmulPrecision::F32);
      const std::vector<float> all = c.get(out, size_t(batch) * n);
      c.identical("matmul " + std::string(dtype_name(dt)) + ": a row alone == inside " + std::to_string(batch) + " rows",
                  std::vector<float>(all.begin() + size_t(probe - first) * n, all.begin() + size_t(probe - first + 1) * n),
                  alone);
    }
    // x one float off 16-byte alignment: the scalar-load kernel.
    float* shifted = c.scratch(size_t(k) + 1) + 1;
    c.gpu()->copy(shifted, dx + size_t(probe) * k, size_t(k) * 4);
    c.gpu()->matmul(shifted, 1, k, dw, dt, n, nullptr, DType::F32, out, sa::engine::MatmulPrecision::F32);
    c.identical("matmul " + std::string(dtype_name(dt)) + ": scalar loads == vector loads", c.get(out, size_t(n)), alone);
  }
}

void check_rope(Checker& c) {
  for (int head_dim : {16, 128, 6})
    for (float scaling : {1.0f, 0.7f}) {
      const int rows = 7, heads = 3, half = head_dim / 2;
      std::vector<float> inv_freq(static_cast<size_t>(half));
      for (int i = 0; i < half; i++) inv_freq[size_t(i)] = float(std::pow(10000.0, -2.0 * i / head_dim));
      std::vector<int32_t> pos(static_cast<size_t>(rows));
      for (auto& p : pos) p = c.randint(0, 40000);
      pos[0] = 0;
      std::vector<float> x = c.random(size_t(rows) * heads * head_dim);
      float* dx = c.put(x);
      c.cpu()->rope(x.data(), rows, heads, head_dim, pos.data(), inv_freq.data(), scaling);
      c.gpu()->rope(dx, rows, heads, head_dim, pos.data(), inv_freq.data(), scaling);
      c.report("rope head_dim " + std::to_string(head_dim) + " scaling " + std::to_string(scaling).substr(0, 3),
               max_rel(c.get(dx, x.size()), x), 1e-6);
    }
}

struct AttnCase {
  std::string name;
  int n_heads, n_kv_heads, head_dim, window;
  std::vector<std::pair<int, int>> seqs;  // (start_pos, n_new)
};

// Runs attention on both backends; returns the CUDA output and reports the error.
void run_attention(Checker& c, const AttnCase& a, DType kv = DType::F32) {
  const int qd = a.n_heads * a.head_dim, kvd = a.n_kv_heads * a.head_dim;
  int rows = 0;
  for (auto& s : a.seqs) rows += s.second;
  const std::vector<float> q = c.random(size_t(rows) * qd);
  std::vector<AttnSeq> host_seqs, dev_seqs;
  std::vector<std::vector<char>> caches;
  int offset = 0;
  for (auto& s : a.seqs) {
    const size_t len = size_t(s.first + s.second);
    caches.push_back(encode(c.random(len * kvd), kv));
    caches.push_back(encode(c.random(len * kvd), kv));
    const auto& k = caches[caches.size() - 2];
    const auto& v = caches.back();
    host_seqs.push_back(AttnSeq{offset, s.second, s.first, k.data(), v.data(), int32_t(kv)});
    dev_seqs.push_back(AttnSeq{offset, s.second, s.first, c.put(k), c.put(v), int32_t(kv)});
    offset += s.second;
  }
  const AttnShape shape{a.n_heads, a.n_kv_heads, a.head_dim, a.window, 1.0f / std::sqrt(float(a.head_dim))};
  std::vector<float> ref(size_t(rows) * qd);
  c.cpu()->attention(q.data(), host_seqs.data(), int32_t(host_seqs.size()), shape, ref.data());
  float* out = c.scratch(ref.size());
  c.gpu()->attention(c.put(q), dev_seqs.data(), int32_t(dev_seqs.size()), shape, out);
  const std::string cache = kv == DType::F32 ? "" : std::string(", ") + dtype_name(kv) + " cache";
  c.report("attention " + a.name + cache, max_rel(c.get(out, ref.size()), ref), 1e-5);
}

void check_attention(Checker& c) {
  const std::vector<std::pair<int, int>> mixed = {{0, 5}, {300, 1}, {130, 3}, {0, 1}, {127, 2}};
  run_attention(c, {"GQA 8:2 d64, ragged prefill + decode", 8, 2, 64, 0, mixed});
  run_attention(c, {"GQA 8:2 d64, sliding window 100", 8, 2, 64, 100, mixed});
  run_attention(c, {"GQA 8:2 d64, sliding window 1", 8, 2, 64, 1, mixed});
  run_attention(c, {"MHA 4:4 d80", 4, 4, 80, 0, mixed});
  run_attention(c, {"MQA 16:1 d32 (group split over 2 blocks)", 16, 1, 32, 0, mixed});
  run_attention(c, {"GQA 6:2 d6 (scalar loads)", 6, 2, 6, 0, mixed});
  run_attention(c, {"GQA 4:1 d256", 4, 1, 256, 0, {{0, 3}, {200, 1}}});
  for (DType kv : {DType::BF16, DType::F16})
    if (c.gpu()->kv_dtype_supported(kv)) run_attention(c, {"GQA 8:2 d64, ragged prefill + decode", 8, 2, 64, 0, mixed}, kv);
  if (!c.small()) run_attention(c, {"GQA 32:8 d128, 2000-token prefill", 32, 8, 128, 0, {{0, 200}, {1800, 200}}});
}

// Prefill of n rows == n one-row decode steps over the same cache.
void check_attention_invariance(Checker& c) {
  const int heads = 8, kv = 2, hd = 64, start = 250, n = 10;
  const int qd = heads * hd, kvd = kv * hd;
  const std::vector<float> q = c.random(size_t(n) * qd);
  const std::vector<float> k = c.random(size_t(start + n) * kvd), v = c.random(size_t(start + n) * kvd);
  float *dq = c.put(q), *dk = c.put(k), *dv = c.put(v);
  const AttnShape shape{heads, kv, hd, 0, 0.125f};
  float* out = c.scratch(size_t(n) * qd);
  AttnSeq all{0, n, start, dk, dv};
  c.gpu()->attention(dq, &all, 1, shape, out);
  const std::vector<float> prefill = c.get(out, size_t(n) * qd);
  std::vector<float> decode;
  for (int r = 0; r < n; r++) {
    AttnSeq one{0, 1, start + r, dk, dv};
    c.gpu()->attention(dq + size_t(r) * qd, &one, 1, shape, out);
    const std::vector<float> row = c.get(out, size_t(qd));
    decode.insert(decode.end(), row.begin(), row.end());
  }
  c.identical("attention: prefill == token-by-token decode", decode, prefill);
}

// Keys and values entering the cache are rounded as the CPU rounds them, bit for bit (ties to
// even, subnormals, overflow to infinity); a dtype the attention cannot read is refused by store_kv
// and by attention.
void check_kv_store(Checker& c) {
  c.report("kv_dtype_supported(f32)", c.gpu()->kv_dtype_supported(DType::F32) ? 0 : 1, 0);
  std::vector<float> x = c.random(1000, -4.f, 4.f);
  for (float special : {0.f, -0.f, 1e-6f, -3e-8f, 1.00390625f, 1.01171875f, 1.00048828125f, 65519.f, 65520.f, -1e30f,
                        INFINITY})
    x.push_back(special);
  const size_t n = x.size();
  float* dx = c.put(x);
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    const std::string name = std::string(dtype_name(dt)) + " cache";
    void* d = c.scratch(n);
    if (!c.gpu()->kv_dtype_supported(dt)) {
      c.refused("store_kv to a " + name + " refused (not supported)", [&] { c.gpu()->store_kv(d, dt, dx, n); });
      c.refused("attention over a " + name + " refused (not supported)", [&] {
        const AttnSeq s{0, 1, 0, d, d, int32_t(dt)};
        c.gpu()->attention(dx, &s, 1, AttnShape{1, 1, 16, 0, 1.f}, c.scratch(16));
      });
      continue;
    }
    const size_t bytes = n * size_t(sa::dtype_size(dt));
    std::vector<char> ref(bytes), got(bytes);
    c.cpu()->store_kv(ref.data(), dt, x.data(), n);
    c.gpu()->store_kv(d, dt, dx, n);
    c.gpu()->download(got.data(), d, bytes);
    c.identical("store_kv to a " + name + " (ties, subnormals, overflow)", decode(got, dt), decode(ref, dt));
  }
  c.gpu()->synchronize();
}

// The layout upload_matrix gives: row-major, as stored, unless packs_matrices() says otherwise (then
// the matmul checks alone judge it).
void check_upload_matrix(Checker& c) {
  if (c.gpu()->packs_matrices()) return;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    const int n = 37, k = 24;
    const std::vector<char> w = encode(c.random(size_t(n) * k), dt);
    std::vector<char> back(w.size());
    c.gpu()->download(back.data(), c.matrix(w, dt, n, k), back.size());
    c.identical(std::string("upload_matrix ") + dtype_name(dt) + ": row-major (packs_matrices false)", decode(back, dt),
                decode(w, dt));
  }
}

void check_elementwise(Checker& c) {
  const size_t n = 100003;
  const std::vector<float> g = c.random(n, -12.f, 12.f), u = c.random(n);
  std::vector<float> ref(n);
  c.cpu()->swiglu(g.data(), u.data(), n, ref.data());
  float* out = c.scratch(n);
  c.gpu()->swiglu(c.put(g), c.put(u), n, out);
  c.report("swiglu n 100003", max_rel(c.get(out, n), ref), 1e-6);
  std::vector<float> x = g;
  float* dx = c.put(x);
  c.cpu()->add(x.data(), u.data(), n);
  c.gpu()->add(dx, c.put(u), n);
  c.identical("add n 100003", c.get(dx, n), x);
}

void check_steer(Checker& c) {
  for (int hidden : {64, 1000, 4096}) {
    const int rows = 12;
    std::vector<float> x = c.random(size_t(rows) * hidden, -2.f, 2.f);
    for (int j = 0; j < hidden; j++) x[size_t(11) * hidden + j] = 0.f;  // a zero row: the clamps
    std::vector<std::vector<float>> vecs;
    std::vector<float*> dvecs;
    for (int i = 0; i < sa::engine::kMaxSteerVectors; i++) {
      vecs.push_back(c.random(size_t(hidden)));
      dvecs.push_back(c.put(vecs.back()));
    }
    // A vector aligned with row 0, so that cos > 0 there.
    for (int j = 0; j < hidden; j++) vecs[0][size_t(j)] = x[size_t(j)] + 0.1f * vecs[0][size_t(j)];
    c.gpu()->upload(dvecs[0], vecs[0].data(), size_t(hidden) * 4);
    auto slice = [&](int offset, int n_rows, std::vector<int> which, std::vector<float> alphas, bool dev) {
      SteerSlice s{};
      s.row_offset = offset;
      s.rows = n_rows;
      s.n = int32_t(which.size());
      for (size_t i = 0; i < which.size(); i++) {
        s.vectors[i] = dev ? dvecs[size_t(which[i])] : vecs[size_t(which[i])].data();
        s.alphas[i] = alphas[i];
      }
      return s;
    };
    // Rows 0-2: one vector; 3: none (untouched); 4-6: three; 7-10: all eight; 11: zero row.
    auto slices = [&](bool dev) {
      return std::vector<SteerSlice>{slice(0, 3, {0}, {0.12f}, dev), slice(4, 3, {1, 2, 0}, {0.12f, -0.5f, 2.f}, dev),
                                     slice(7, 4, {0, 1, 2, 3, 4, 5, 6, 7}, {1, 2, 3, 4, 5, 6, 7, 8}, dev),
                                     slice(11, 1, {3}, {0.3f}, dev)};
    };
    float* dx = c.put(x);
    const auto hs = slices(false), ds = slices(true);
    c.cpu()->steer(x.data(), hidden, hs.data(), int32_t(hs.size()));
    c.gpu()->steer(dx, hidden, ds.data(), int32_t(ds.size()));
    c.report("steer hidden " + std::to_string(hidden) + " (1, 3 and 8 vectors; a zero row)", max_rel(c.get(dx, x.size()), x),
             1e-5);
  }
}

// Arguments the kernels cannot serve are refused with an exception that names the op.
void check_errors(Checker& c) {
  float* buf = c.scratch(4096);
  c.refused("attention head_dim 512 refused", [&] {
    AttnSeq s{0, 1, 0, buf, buf};
    c.gpu()->attention(buf, &s, 1, AttnShape{1, 1, 512, 0, 1.f}, buf);
  });
  c.refused("steer with 9 vectors refused", [&] {
    SteerSlice s{};
    s.rows = 1;
    s.n = sa::engine::kMaxSteerVectors + 1;
    c.gpu()->steer(buf, 16, &s, 1);
  });
  c.gpu()->synchronize();
}

// Times fn (which queues GPU work) over iters calls.
double time_us(DeviceOps* g, int iters, const std::function<void()>& fn) {
  fn();
  g->synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; i++) fn();
  g->synchronize();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters;
}

void bench(Checker& c) {
  DeviceOps* g = c.gpu();
  std::printf("\nbench (time per call; GB/s counts weights, or K and V, read once)\n");
  const std::vector<MatmulCase> shapes = {{1, 4096, 4096},  {1, 4096, 11008}, {1, 11008, 4096}, {1, 4096, 32000},
                                          {8, 4096, 11008}, {20, 4096, 11008}, {128, 4096, 4096}, {2048, 4096, 4096}};
  for (DType dt : {DType::BF16, DType::F32}) {
    for (const MatmulCase& m : shapes) {
      float* x = c.put(c.random(size_t(m.rows) * m.k));
      const std::vector<char> zero(size_t(m.n) * m.k * size_t(sa::dtype_size(dt)), 0);
      void* w = g->upload_matrix(zero.data(), dt, m.n, m.k, sa::engine::MatmulPrecision::F32);
      float* out = c.scratch(size_t(m.rows) * m.n);
      const double us = time_us(g, 20, [&] { g->matmul(x, m.rows, m.k, w, dt, m.n, nullptr, DType::F32, out, sa::engine::MatmulPrecision::F32); });
      const double bytes = double(m.n) * m.k * sa::dtype_size(dt);
      const double flops = 2.0 * m.rows * m.k * m.n;
      std::printf("matmul %-4s rows %5d k %5d n %6d: %9.1f us  %7.0f GB/s  %6.2f TFLOP/s\n", dtype_name(dt), m.rows, m.k,
                  m.n, us, bytes / us / 1e3, flops / us / 1e6);
      g->release(w);
    }
  }
  for (int batch : {1, 20})
    for (int ctx : {512, 4096}) {
      const int heads = 32, kv = 8, hd = 128, kvd = kv * hd;
      std::vector<AttnSeq> seqs;
      const std::vector<float> cache = c.random(size_t(ctx) * kvd);
      for (int b = 0; b < batch; b++) seqs.push_back(AttnSeq{b, 1, ctx - 1, c.put(cache), c.put(cache), int32_t(DType::F32)});
      float* q = c.put(c.random(size_t(batch) * heads * hd));
      float* out = c.scratch(size_t(batch) * heads * hd);
      const AttnShape shape{heads, kv, hd, 0, 0.088f};
      const double us = time_us(g, 20, [&] { g->attention(q, seqs.data(), batch, shape, out); });
      const double bytes = 2.0 * batch * ctx * kvd * 4;
      std::printf("attention decode 32:8 d128 batch %2d ctx %5d: %9.1f us  %7.0f GB/s\n", batch, ctx, us, bytes / us / 1e3);
    }
  {
    const int rows = 20 * 192, hidden = 4096;
    float* x = c.put(c.random(size_t(rows) * hidden));
    float* v = c.put(c.random(size_t(hidden)));
    SteerSlice s{};
    s.row_offset = 0;
    s.rows = rows;
    s.n = 1;
    s.vectors[0] = v;
    s.alphas[0] = 0.12f;
    const double us = time_us(g, 20, [&] { g->steer(x, hidden, &s, 1); });
    std::printf("steer [20*192, 4096] float32: %9.1f us  %7.0f GB/s (read + write)\n", us, 2.0 * rows * hidden * 4 / us / 1e3);
  }
}

}  // namespace

// The library named on the command line, else the first that exists of: the one the build made
// (SA_CUDA_LIBRARY_DEFAULT, an absolute path on the build machine), the package build's
// build/Release/ under the current directory, and out/ or ../Release/ beside this executable (for a
// copy moved to another machine).
std::string find_library(const std::string& given, const char* argv0) {
  if (!given.empty()) return given;
  std::string exe_dir = argv0;
  const size_t slash = exe_dir.rfind('/');
  exe_dir = slash == std::string::npos ? "." : exe_dir.substr(0, slash);
  const std::string name = "libsafety_arithmetic_cuda.so";
  for (const std::string& c : {std::string(SA_CUDA_LIBRARY_DEFAULT), "build/Release/" + name, exe_dir + "/out/" + name,
                               exe_dir + "/../Release/" + name}) {
    if (FILE* f = std::fopen(c.c_str(), "rb")) {
      std::fclose(f);
      return c;
    }
  }
  return SA_CUDA_LIBRARY_DEFAULT;
}

int main(int argc, char** argv) {
  std::string given;
  bool want_bench = false;
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--bench") == 0) want_bench = true;
    else given = argv[i];
  }
  const std::string library = find_library(given, argv[0]);
  std::string why;
  const sa_backend_table* cpu = sa::cpu_backend(&why);
  if (!cpu) {
    std::fprintf(stderr, "the CPU backend cannot run: %s\n", why.c_str());
    return 2;
  }
  const sa_backend_table* gpu = cuda_table(library, &why);
  if (!gpu) {
    std::fprintf(stderr, "the CUDA backend did not start: %s\n", why.c_str());
    return 2;
  }
#if defined(SA_CUDA_SIM)
  const bool small = true;
  std::printf("CUDA ops: CPU simulator (tests/cuda_sim.h); large cases skipped\n");
#else
  const bool small = false;
  std::printf("CUDA ops: %s\n", library.c_str());
#endif
  std::printf("reference: the CPU's %s kernels\n", cpu->variant);
  Checker c(sa::backend::table_ops(cpu), sa::backend::table_ops(gpu), small);
  try {
    check_table(c, *gpu);
    check_hdr(c, *cpu, *gpu);
    check_memory(c);
    check_embed(c);
    check_rmsnorm(c);
    check_upload_matrix(c);
    check_matmul(c);
    check_matmul_invariance(c);
    check_rope(c);
    check_attention(c);
    check_attention_invariance(c);
    check_kv_store(c);
    check_elementwise(c);
    check_steer(c);
    check_errors(c);
    c.gpu()->synchronize();
    if (want_bench && !small) bench(c);
  } catch (const std::exception& e) {
    std::printf("FAIL: exception: %s\n", e.what());
    return 1;
  }
  std::printf("\n%d checks, %d failed: %s\n", c.checks(), c.failures(), c.failures() ? "FAIL" : "ALL PASS");
  return c.failures() ? 1 : 0;
}
