#pragma once
// A fixed pool of worker threads running one parallel loop at a time.
#include <condition_variable>
#include <cstdint>
#include <functional>
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

  int size() const { return int(workers_.size()) + 1; }
  // Runs fn(task) for task in [0, tasks), spread over the pool and the calling thread. Safe to call
  // from several threads (loops run one after another); fn must not call parallel_for itself.
  void parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn);

  static ThreadPool& shared();
  static void set_shared_threads(int threads);

 private:
  void worker_loop();
  void drain();

  std::vector<std::thread> workers_;
  std::mutex run_mu_;  // one parallel loop at a time: callers from several threads take turns
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t tasks_ = 0, next_ = 0, finished_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace sa
