#pragma once
// Writes to output files on a background thread, so that computing the next chunk overlaps with
// writing the last one. The caller keeps each submitted buffer untouched until wait() on its token
// returns (a token names a buffer, e.g. a staging slot).
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "io/file_io.h"

namespace sa {

class AsyncWriter {
 public:
  explicit AsyncWriter(int tokens);
  ~AsyncWriter();
  AsyncWriter(const AsyncWriter&) = delete;
  AsyncWriter& operator=(const AsyncWriter&) = delete;

  void submit(int token, OutputFile* file, const void* data, uint64_t bytes, uint64_t offset);
  // Waits until the writes submitted with this token are done; rethrows the first write error.
  void wait(int token);
  // Waits for every write; rethrows the first write error.
  void finish();

 private:
  struct Job {
    int token;
    OutputFile* file;
    const void* data;
    uint64_t bytes, offset;
  };
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::vector<int> in_flight_;  // per token
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sa
