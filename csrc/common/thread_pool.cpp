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

constexpr int kMaxThreads = 1 << 16;
// How long an idle worker, or a caller waiting for the last chunks, spins before it sleeps.
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

// One parallel loop. The caller and every worker that helps hold a reference, so the job outlives
// the call for a worker that is late; fn is called only for a claimed chunk, and the caller returns
// only after every chunk has finished, so fn is never called after the caller has returned.
struct ThreadPool::Job {
  const std::function<void(int64_t)>* fn = nullptr;
  int64_t tasks = 0, chunk = 1, chunks = 0;
  int helpers = 0;  // workers 0..helpers-1 take part
  std::atomic<int64_t> next{0};      // first task of the next chunk to claim
  std::atomic<int64_t> finished{0};  // chunks run or skipped
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // the first exception, written under mu
  std::mutex mu;
  std::condition_variable all_finished;

  bool done() const { return finished.load(std::memory_order_acquire) == chunks; }

  // Claims and runs chunks until none is left.
  void run() {
    in_loop = true;
    for (;;) {
      const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
      if (begin >= tasks) break;
      if (!failed.load(std::memory_order_relaxed)) {  // after an exception the rest is skipped
        try {
          for (int64_t t = begin, end = std::min(tasks, begin + chunk); t < end; t++) (*fn)(t);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu);
          if (!error) error = std::current_exception();
          failed.store(true, std::memory_order_relaxed);
        }
      }
      if (finished.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mu);  // the caller is waiting on all_finished or will see done()
        all_finished.notify_all();
      }
    }
    in_loop = false;
  }

  void wait() {
    if (spin_until([this] { return done(); })) return;
    std::unique_lock<std::mutex> lock(mu);
    all_finished.wait(lock, [this] { return done(); });
  }
};

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

void ThreadPool::worker_loop(int index, uint64_t seen) {
  for (;;) {
    auto changed = [&] { return stop_.load() || generation_.load() != seen; };
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(sleep_mu_, std::defer_lock);
      if (spin_until(changed)) {
        lock.lock();
      } else {
        lock.lock();
        wake_.wait(lock, changed);
      }
      if (stop_.load()) return;
      seen = generation_.load();
      job = job_;
    }
    if (job && index < job->helpers) job->run();
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
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->tasks = tasks;
  job->chunk = chunk;
  job->chunks = chunks;
  job->helpers = int(std::min<int64_t>(int64_t(workers_.size()), chunks - 1));
  {
    std::lock_guard<std::mutex> lock(sleep_mu_);
    job_ = job;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  job->run();
  job->wait();
  if (job->error) std::rethrow_exception(job->error);
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
