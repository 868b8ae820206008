#include "io/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace sa {
namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

InputFile::InputFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw IoError(path + ": cannot open for reading: " + errno_text(), {path});
  struct stat st {};
  if (fstat(fd_, &st) != 0) throw IoError(path + ": cannot stat: " + errno_text(), {path});
  size_ = uint64_t(st.st_size);
  expect(Access::sequential);
}

bool InputFile::read_cached(void* dst, uint64_t bytes, uint64_t offset) const {
  if (offset + bytes > size_ || offset + bytes < offset || bytes > (1u << 30)) return false;
  iovec v{dst, size_t(bytes)};
  ssize_t got;
  do got = ::preadv2(fd_, &v, 1, off_t(offset), RWF_NOWAIT);
  while (got < 0 && errno == EINTR);
  return got == ssize_t(bytes);
}

void InputFile::prefetch(uint64_t bytes, uint64_t offset) const {
  posix_fadvise(fd_, off_t(offset), off_t(bytes), POSIX_FADV_WILLNEED);  // advice only
}

void InputFile::expect(Access access) const {
  posix_fadvise(fd_, 0, 0, access == Access::sequential ? POSIX_FADV_SEQUENTIAL : POSIX_FADV_RANDOM);  // advice only
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void InputFile::read(void* dst, uint64_t bytes, uint64_t offset) const {
  if (offset + bytes > size_ || offset + bytes < offset)
    throw IoError(path_ + ": read of " + std::to_string(bytes) + " bytes at offset " + std::to_string(offset) +
                  " runs past the end of the file (" + std::to_string(size_) + " bytes); the file is truncated or its header is wrong", {path_});
  char* p = static_cast<char*>(dst);
  while (bytes > 0) {
    const size_t n = bytes > (1u << 30) ? (1u << 30) : size_t(bytes);
    const ssize_t got = ::pread(fd_, p, n, off_t(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw IoError(path_ + ": read failed at offset " + std::to_string(offset) + ": " + errno_text(), {path_});
    }
    if (got == 0) throw IoError(path_ + ": unexpected end of file at offset " + std::to_string(offset), {path_});
    p += got;
    offset += uint64_t(got);
    bytes -= uint64_t(got);
  }
}

OutputFile::OutputFile(const std::string& path, uint64_t size) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw IoError(path + ": cannot create: " + errno_text(), {path});
  if (size > 0 && ::ftruncate(fd_, off_t(size)) != 0) throw IoError(path + ": cannot size to " + std::to_string(size) + " bytes: " + errno_text(), {path});
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutputFile::write(const void* src, uint64_t bytes, uint64_t offset) {
  const char* p = static_cast<const char*>(src);
  while (bytes > 0) {
    const size_t n = bytes > (1u << 30) ? (1u << 30) : size_t(bytes);
    const ssize_t put = ::pwrite(fd_, p, n, off_t(offset));
    if (put < 0) {
      if (errno == EINTR) continue;
      throw IoError(path_ + ": write failed at offset " + std::to_string(offset) + ": " + errno_text(), {path_});
    }
    p += put;
    offset += uint64_t(put);
    bytes -= uint64_t(put);
  }
}

void OutputFile::copy_from(const InputFile& in, uint64_t in_offset, uint64_t bytes, uint64_t out_offset) {
  loff_t src = loff_t(in_offset), dst = loff_t(out_offset);
  while (bytes > 0) {
    const size_t n = bytes > (1u << 30) ? (1u << 30) : size_t(bytes);
    const ssize_t done = ::copy_file_range(in.fd(), &src, fd_, &dst, n, 0);
    if (done > 0) {
      bytes -= uint64_t(done);
      continue;
    }
    if (done < 0 && errno == EINTR) continue;
    if (done == 0) throw IoError(in.path() + ": unexpected end of file at offset " + std::to_string(src), {in.path()});
    // The kernel cannot copy between these files: go through a buffer.
    std::unique_ptr<char[]> buf(new char[1 << 22]);
    while (bytes > 0) {
      const uint64_t step = bytes < (1u << 22) ? bytes : (1u << 22);
      in.read(buf.get(), step, uint64_t(src));
      write(buf.get(), step, uint64_t(dst));
      src += loff_t(step);
      dst += loff_t(step);
      bytes -= step;
    }
  }
}

void OutputFile::finish(bool durable) {
  if (fd_ < 0) return;
  if (durable && ::fdatasync(fd_) != 0 && errno != EINVAL) throw IoError(path_ + ": flush failed: " + errno_text(), {path_});
  if (::close(fd_) != 0) throw IoError(path_ + ": close failed: " + errno_text(), {path_});
  fd_ = -1;
}

}  // namespace sa
