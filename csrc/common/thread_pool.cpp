#include "common/thread_pool.h"

#include <memory>

namespace sa {

ThreadPool::ThreadPool(int threads) {
  if (threads < 1) threads = 1;
  for (int i = 1; i < threads; i++) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::drain() {
  for (;;) {
    int64_t task;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (next_ >= tasks_) return;
      task = next_++;
    }
    (*fn_)(task);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (++finished_ == tasks_) done_.notify_all();
    }
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    drain();
  }
}

void ThreadPool::parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn) {
  if (tasks <= 0) return;
  if (tasks == 1 || workers_.empty()) {
    for (int64_t t = 0; t < tasks; t++) fn(t);
    return;
  }
  std::lock_guard<std::mutex> turn(run_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    tasks_ = tasks;
    next_ = 0;
    finished_ = 0;
    generation_++;
  }
  wake_.notify_all();
  drain();
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return finished_ == tasks_; });
  fn_ = nullptr;
}

namespace {
std::mutex shared_mu;
std::unique_ptr<ThreadPool> shared_pool;
int shared_threads = 0;
}  // namespace

ThreadPool& ThreadPool::shared() {
  std::lock_guard<std::mutex> lock(shared_mu);
  if (!shared_pool) {
    int n = shared_threads > 0 ? shared_threads : int(std::thread::hardware_concurrency());
    shared_pool = std::make_unique<ThreadPool>(n > 0 ? n : 1);
  }
  return *shared_pool;
}

void ThreadPool::set_shared_threads(int threads) {
  std::lock_guard<std::mutex> lock(shared_mu);
  shared_threads = threads;
  shared_pool.reset();
}

}  // namespace sa
