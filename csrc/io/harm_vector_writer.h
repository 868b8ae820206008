#pragma once
// Writes a trimmed harm vector as safetensors: for each tensor with kept elements,
// "<name>::indices" (I32, or I64 for tensors of 2^31 elements or more; flat, ascending) and
// "<name>::values" (F32 tau). The header is reserved up front and padded with spaces at the end,
// so the data streams straight to its final place.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/file_io.h"

namespace sa {

class HarmVectorWriter {
 public:
  struct TensorInfo {
    std::string name;
    uint64_t numel;
  };
  HarmVectorWriter(const std::string& path, const std::vector<TensorInfo>& tensors, const std::string& static_metadata);
  ~HarmVectorWriter();
  void begin_tensor(const std::string& name, uint64_t numel);
  void add(uint64_t index, float value);
  void end_tensor();
  // dynamic_metadata: more JSON members for __metadata__, at most 1 KiB.
  void finish(const std::string& dynamic_metadata, bool durable);

 private:
  struct Entry {
    std::string name;
    bool wide;
    uint64_t count, indices_begin, values_begin;
  };
  void flush_indices();
  void flush_values();
  std::string render_header(const std::string& dynamic_metadata) const;

  std::string path_, scratch_path_, static_metadata_;
  std::unique_ptr<OutputFile> file_;
  std::unique_ptr<OutputFile> scratch_;
  uint64_t reserved_ = 0, cursor_ = 0, scratch_cursor_ = 0;
  std::vector<Entry> entries_;
  Entry current_{};
  bool open_tensor_ = false;
  std::vector<char> index_buf_;
  std::vector<float> value_buf_;
};

}  // namespace sa
