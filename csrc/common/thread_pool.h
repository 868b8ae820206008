#pragma once
// A fixed pool of worker threads running one parallel loop at a time. Tasks are handed out in
// chunks through an atomic counter; idle workers spin briefly, then sleep on a condition variable.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace sa {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Threads that run a loop: the workers and the calling thread.
  int size() const { return size_.load(std::memory_order_relaxed); }
  // Runs fn(task) for task in [0, tasks), spread over the pool and the calling thread, in chunks of
  // `chunk` consecutive tasks (0: chosen from the task and thread counts). Returns once every chunk
  // has run, whether or not the woken workers have got a CPU yet. Safe to call from several
  // threads: their loops take turns. A call from inside fn runs its loop on the calling thread. The
  // first exception thrown by fn is rethrown here once every task has finished or been skipped.
  void parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn, int64_t chunk = 0);
  // Changes the thread count, after the loop in progress (if any) finishes.
  void resize(int threads);

  // The process-wide pool, created on first use with default_threads() threads.
  static ThreadPool& shared();
  // Sets the shared pool's thread count; 0 or less restores the default.
  static void set_shared_threads(int threads);
  // The CPUs this process may run on (affinity mask and cgroup quota), at least 1.
  static int default_threads();

 private:
  struct Job;  // one loop: defined in the .cpp

  void start_workers(int threads);
  void stop_workers();
  void worker_loop(int index, uint64_t seen);

  std::vector<std::thread> workers_;
  std::atomic<int> size_{1};
  std::mutex run_mu_;  // one loop at a time: callers from several threads take turns

  // The latest loop and its number, both written under sleep_mu_. A worker takes its own reference
  // to the job, so one that gets a CPU only after the loop ended finds the ended loop's job, with
  // no chunks left, and never the next loop's state.
  std::shared_ptr<Job> job_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::mutex sleep_mu_;
  std::condition_variable wake_;
};

}  // namespace sa
