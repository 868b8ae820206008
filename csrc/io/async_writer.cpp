#include "io/async_writer.h"

namespace sa {

AsyncWriter::AsyncWriter(int tokens) : in_flight_(size_t(tokens), 0), thread_([this] { run(); }) {}

AsyncWriter::~AsyncWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void AsyncWriter::submit(int token, OutputFile* file, const void* data, uint64_t bytes, uint64_t offset) {
  std::lock_guard<std::mutex> lock(mu_);
  if (error_) std::rethrow_exception(error_);
  queue_.push_back(Job{token, file, data, bytes, offset});
  in_flight_[size_t(token)]++;
  cv_.notify_all();
}

void AsyncWriter::wait(int token) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return in_flight_[size_t(token)] == 0 || error_; });
  if (error_) std::rethrow_exception(error_);
}

void AsyncWriter::finish() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return queue_.empty() || error_; });
  cv_.wait(lock, [&] {
    for (int n : in_flight_)
      if (n) return bool(error_);
    return true;
  });
  if (error_) std::rethrow_exception(error_);
}

void AsyncWriter::run() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = queue_.front();
      queue_.pop_front();
    }
    std::exception_ptr failed;
    try {
      job.file->write(job.data, job.bytes, job.offset);
    } catch (...) {
      failed = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failed && !error_) error_ = failed;
      in_flight_[size_t(job.token)]--;
    }
    cv_.notify_all();
  }
}

}  // namespace sa
