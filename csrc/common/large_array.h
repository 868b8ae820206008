#pragma once
// An uninitialised array for large temporary data (megabytes and more), mapped on its own and
// backed by huge pages where the kernel allows it: touching it then faults once per 2 MiB instead
// of once per 4 KiB (page faults dominate the cost of fresh memory, most of all in virtual
// machines), only the pages touched become resident, and the destructor returns it at once.
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

namespace sa {

template <class T>
class LargeArray {
  static_assert(std::is_trivially_copyable<T>::value && std::is_trivially_destructible<T>::value, "LargeArray holds plain data");

 public:
  explicit LargeArray(size_t n = 0) : size_(n) {
    if (n == 0) return;
    constexpr size_t kHuge = size_t(2) << 20;
    if (n > (SIZE_MAX - 2 * kHuge) / sizeof(T)) throw std::bad_alloc();
    const size_t bytes = (n * sizeof(T) + kHuge - 1) / kHuge * kHuge;
    // One huge page more than needed, so that the array can start on a huge-page boundary.
    map_bytes_ = bytes + kHuge;
    void* p = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    map_ = static_cast<char*>(p);
    char* aligned = map_ + (kHuge - uintptr_t(map_) % kHuge) % kHuge;
#ifdef MADV_HUGEPAGE
    madvise(aligned, bytes, MADV_HUGEPAGE);  // advice only: without huge pages the array still works
#endif
    data_ = reinterpret_cast<T*>(aligned);
  }
  ~LargeArray() {
    if (map_) munmap(map_, map_bytes_);
  }
  LargeArray(const LargeArray&) = delete;
  LargeArray& operator=(const LargeArray&) = delete;
  LargeArray(LargeArray&& o) noexcept { swap(o); }
  LargeArray& operator=(LargeArray&& o) noexcept {
    LargeArray gone(std::move(*this));
    swap(o);
    return *this;
  }
  void swap(LargeArray& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(map_, o.map_);
    std::swap(map_bytes_, o.map_bytes_);
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }
  // Keeps the first n elements (n <= size()); the memory stays mapped until destruction.
  void shrink(size_t n) {
    if (n < size_) size_ = n;
  }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
  char* map_ = nullptr;
  size_t map_bytes_ = 0;
};

}  // namespace sa
