#include "io/harm_vector_writer.h"

#include <unistd.h>

#include <cstring>

#include "io/json_text.h"

namespace sa {
namespace {
constexpr size_t kBufferEntries = 1 << 20;
constexpr size_t kDynamicMetadataBudget = 1024;
}  // namespace

HarmVectorWriter::HarmVectorWriter(const std::string& path, const std::vector<TensorInfo>& tensors,
                                   const std::string& static_metadata)
    : path_(path), scratch_path_(path + ".values.partial"), static_metadata_(static_metadata) {
  // Upper bound of the header: every number at 20 digits, every tensor present.
  uint64_t bound = 64 + static_metadata.size() + kDynamicMetadataBudget;
  for (const auto& t : tensors) bound += 2 * (json_quote(t.name).size() + 12 + 3 * 20 + 48);
  reserved_ = (bound + 7) / 8 * 8;
  file_ = std::make_unique<OutputFile>(path, 0);
  scratch_ = std::make_unique<OutputFile>(scratch_path_, 0);
  cursor_ = 0;
  index_buf_.reserve(kBufferEntries * 8);
  value_buf_.reserve(kBufferEntries);
}

HarmVectorWriter::~HarmVectorWriter() {
  scratch_.reset();
  ::unlink(scratch_path_.c_str());
}

void HarmVectorWriter::begin_tensor(const std::string& name, uint64_t numel) {
  current_ = Entry{name, numel >= (1ull << 31), 0, cursor_, 0};
  scratch_cursor_ = 0;
  open_tensor_ = true;
}

void HarmVectorWriter::add(uint64_t index, float value) {
  if (current_.wide) {
    const int64_t v = int64_t(index);
    index_buf_.insert(index_buf_.end(), reinterpret_cast<const char*>(&v), reinterpret_cast<const char*>(&v) + 8);
  } else {
    const int32_t v = int32_t(index);
    index_buf_.insert(index_buf_.end(), reinterpret_cast<const char*>(&v), reinterpret_cast<const char*>(&v) + 4);
  }
  value_buf_.push_back(value);
  current_.count++;
  if (value_buf_.size() >= kBufferEntries) {
    flush_indices();
    flush_values();
  }
}

void HarmVectorWriter::flush_indices() {
  if (index_buf_.empty()) return;
  file_->write(index_buf_.data(), index_buf_.size(), 8 + reserved_ + cursor_);
  cursor_ += index_buf_.size();
  index_buf_.clear();
}

void HarmVectorWriter::flush_values() {
  if (value_buf_.empty()) return;
  scratch_->write(value_buf_.data(), value_buf_.size() * 4, scratch_cursor_);
  scratch_cursor_ += value_buf_.size() * 4;
  value_buf_.clear();
}

void HarmVectorWriter::end_tensor() {
  if (!open_tensor_) return;
  open_tensor_ = false;
  flush_indices();
  // Values that stayed in memory go straight after the indices; earlier ones come from the scratch file.
  current_.values_begin = cursor_;
  if (scratch_cursor_ > 0) {
    InputFile scratch_in(scratch_path_);
    file_->copy_from(scratch_in, 0, scratch_cursor_, 8 + reserved_ + cursor_);
    cursor_ += scratch_cursor_;
  }
  if (!value_buf_.empty()) {
    file_->write(value_buf_.data(), value_buf_.size() * 4, 8 + reserved_ + cursor_);
    cursor_ += value_buf_.size() * 4;
    value_buf_.clear();
  }
  if (current_.count > 0) entries_.push_back(current_);
}

std::string HarmVectorWriter::render_header(const std::string& dynamic_metadata) const {
  std::string h = "{\"__metadata__\":{" + static_metadata_;
  if (!dynamic_metadata.empty()) h += (static_metadata_.empty() ? "" : ",") + dynamic_metadata;
  h += "}";
  for (const auto& e : entries_) {
    const uint64_t ib = e.wide ? 8 : 4;
    h += "," + json_quote(e.name + "::indices") + ":{\"dtype\":\"" + (e.wide ? "I64" : "I32") + "\",\"shape\":[" +
         std::to_string(e.count) + "],\"data_offsets\":[" + std::to_string(e.indices_begin) + "," +
         std::to_string(e.indices_begin + e.count * ib) + "]}";
    h += "," + json_quote(e.name + "::values") + ":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(e.count) +
         "],\"data_offsets\":[" + std::to_string(e.values_begin) + "," + std::to_string(e.values_begin + e.count * 4) + "]}";
  }
  h += "}";
  return h;
}

void HarmVectorWriter::finish(const std::string& dynamic_metadata, bool durable) {
  end_tensor();
  if (dynamic_metadata.size() > kDynamicMetadataBudget) throw IoError(path_ + ": harm vector metadata too long");
  std::string header = render_header(dynamic_metadata);
  if (header.size() > reserved_) throw IoError(path_ + ": internal error: harm vector header outgrew its reservation");
  header.resize(reserved_, ' ');
  uint64_t len = reserved_;
  char prefix[8];
  std::memcpy(prefix, &len, 8);
  file_->write(prefix, 8, 0);
  file_->write(header.data(), header.size(), 8);
  file_->finish(durable);
}

}  // namespace sa
