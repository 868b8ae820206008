#include "common/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#ifdef __linux__
#include <sched.h>
#endif

namespace sa {
namespace {

// The generation word packs the loop count (high bits) and the number of helping workers (low bits).
constexpr int kHelperBits = 16;
constexpr uint64_t kHelperMask = (uint64_t(1) << kHelperBits) - 1;
constexpr int kMaxThreads = int(kHelperMask) + 1;
// How long an idle worker, or a caller waiting for its helpers, spins before it sleeps or yields.
constexpr auto kSpin = std::chrono::microseconds(200);

thread_local bool in_loop = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() holds or kSpin has passed; returns done().
template <typename Done>
bool spin_until(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; i++) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

int clamp_threads(int threads) { return std::min(std::max(threads, 1), kMaxThreads); }

}  // namespace

ThreadPool::ThreadPool(int threads) { start_workers(clamp_threads(threads)); }

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::start_workers(int threads) {
  const uint64_t seen = generation_.load();
  for (int i = 0; i < threads - 1; i++) workers_.emplace_back([this, i, seen] { worker_loop(i, seen); });
  size_.store(threads);
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(sleep_mu_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stop_.store(false);
  size_.store(1);
}

void ThreadPool::resize(int threads) {
  std::lock_guard<std::mutex> turn(run_mu_);
  threads = clamp_threads(threads);
  if (threads == size()) return;
  stop_workers();
  start_workers(threads);
}

void ThreadPool::run_chunks() {
  in_loop = true;
  for (;;) {
    const int64_t begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (begin >= tasks_) break;
    if (failed_.load(std::memory_order_relaxed)) continue;  // skip the rest after an exception
    const int64_t end = std::min(tasks_, begin + chunk_);
    try {
      for (int64_t t = begin; t < end; t++) (*fn_)(t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  in_loop = false;
}

void ThreadPool::worker_loop(int index, uint64_t seen) {
  for (;;) {
    auto changed = [&] { return stop_.load() || generation_.load() != seen; };
    if (!spin_until(changed)) {
      std::unique_lock<std::mutex> lock(sleep_mu_);
      sleepers_.fetch_add(1);
      wake_.wait(lock, changed);
      sleepers_.fetch_sub(1);
    }
    if (stop_.load()) return;
    seen = generation_.load();
    // A worker outside this loop's helpers touches nothing of it (the loop may end at any time).
    if (index < int(seen & kHelperMask)) {
      run_chunks();
      pending_.fetch_sub(1);
    }
  }
}

void ThreadPool::parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn, int64_t chunk) {
  if (tasks <= 0) return;
  const int threads = size();
  if (chunk <= 0) chunk = std::max<int64_t>(1, tasks / (int64_t(threads) * 8));
  const int64_t chunks = (tasks + chunk - 1) / chunk;
  if (in_loop || threads == 1 || chunks == 1) {
    for (int64_t t = 0; t < tasks; t++) fn(t);
    return;
  }
  std::lock_guard<std::mutex> turn(run_mu_);
  const int helpers = int(std::min<int64_t>(int64_t(workers_.size()), chunks - 1));
  fn_ = &fn;
  tasks_ = tasks;
  chunk_ = chunk;
  next_.store(0, std::memory_order_relaxed);
  failed_.store(false, std::memory_order_relaxed);
  error_ = nullptr;
  pending_.store(helpers);
  const uint64_t gen = (generation_.load() >> kHelperBits) + 1;
  generation_.store((gen << kHelperBits) | uint64_t(helpers));
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lock(sleep_mu_);  // a worker between its check and its wait gets the signal
  }
  wake_.notify_all();
  run_chunks();
  auto helpers_done = [&] { return pending_.load() == 0; };
  while (!spin_until(helpers_done)) std::this_thread::yield();
  fn_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

namespace {
int cgroup_cpu_limit() {
#ifdef __linux__
  // cgroup v2: "max 100000" or "<quota> <period>".
  if (FILE* f = std::fopen("/sys/fs/cgroup/cpu.max", "r")) {
    char quota[32] = {0};
    long long period = 0;
    const int got = std::fscanf(f, "%31s %lld", quota, &period);
    std::fclose(f);
    if (got == 2 && period > 0 && quota[0] != 'm') {
      const long long q = std::atoll(quota);
      if (q > 0) return int(std::max<long long>(1, (q + period - 1) / period));
    }
  }
#endif
  return 0;
}
}  // namespace

int ThreadPool::default_threads() {
  int n = 0;
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
#endif
  if (n <= 0) n = int(std::thread::hardware_concurrency());
  const int quota = cgroup_cpu_limit();
  if (quota > 0 && (n <= 0 || quota < n)) n = quota;
  return clamp_threads(n > 0 ? n : 1);
}

ThreadPool& ThreadPool::shared() {
  static ThreadPool* pool = new ThreadPool(default_threads());  // never destroyed: threads may use it while the process exits
  return *pool;
}

void ThreadPool::set_shared_threads(int threads) {
  ThreadPool& pool = shared();
  pool.resize(threads > 0 ? threads : default_threads());
}

}  // namespace sa
