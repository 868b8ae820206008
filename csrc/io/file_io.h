#pragma once
// POSIX file I/O with 64-bit offsets and error messages that name the file. Node cannot hold a file
// over 2 GiB in one Buffer, so every checkpoint byte moves through here.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/error.h"

namespace sa {

// A failed file-system operation (SA_IO), naming the file (and the tensor where known).
struct IoError : Error {
  explicit IoError(const std::string& message, ErrorDetails details = {}) : Error(ErrorCode::SA_IO, message, std::move(details)) {}
};

class InputFile {
 public:
  explicit InputFile(const std::string& path);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  void read(void* dst, uint64_t bytes, uint64_t offset) const;
  // Reads only if every byte is in the page cache already; false (and nothing to use in dst)
  // otherwise, also where the kernel cannot tell without waiting.
  bool read_cached(void* dst, uint64_t bytes, uint64_t offset) const;
  // Asks the kernel to start reading these bytes into the page cache, without waiting for them.
  void prefetch(uint64_t bytes, uint64_t offset) const;
  // How the next reads go through the file: in order (the default: the kernel reads ahead), or
  // scattered (a read fetches no more from the disk than it asks for).
  enum class Access { sequential, scattered };
  void expect(Access access) const;
  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

class OutputFile {
 public:
  // Creates the file; refuses to replace an existing one.
  OutputFile(const std::string& path, uint64_t size);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  void write(const void* src, uint64_t bytes, uint64_t offset);
  // Copies bytes from an input file without passing them through user space where the kernel can.
  void copy_from(const InputFile& in, uint64_t in_offset, uint64_t bytes, uint64_t out_offset);
  void finish(bool durable);  // closes; with durable, flushes to disk first
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace sa
