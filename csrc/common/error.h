#pragma once
// Errors with a code from common/error_codes.def and the file, tensor or field they concern. The
// N-API layer turns them into JS errors carrying the same properties (addon/native_errors.h).
#include <stdexcept>
#include <string>
#include <utility>

namespace sa {

enum class ErrorCode {
#define SA_ERROR_CODE(code, meaning) code,
#include "common/error_codes.def"
#undef SA_ERROR_CODE
};

inline const char* error_code_name(ErrorCode code) {
  static constexpr const char* kNames[] = {
#define SA_ERROR_CODE(code, meaning) #code,
#include "common/error_codes.def"
#undef SA_ERROR_CODE
  };
  return kNames[static_cast<int>(code)];
}

// Every code, in the order of the list.
inline constexpr ErrorCode kAllErrorCodes[] = {
#define SA_ERROR_CODE(code, meaning) ErrorCode::code,
#include "common/error_codes.def"
#undef SA_ERROR_CODE
};

struct ErrorDetails {
  std::string file;    // the file the problem was found in
  std::string tensor;  // the tensor concerned
  std::string field;   // the option or header field concerned
};

struct Error : std::runtime_error {
  Error(ErrorCode code, const std::string& message, ErrorDetails details = {})
      : std::runtime_error(message), code(code), details(std::move(details)) {}
  ErrorCode code;
  ErrorDetails details;
};

}  // namespace sa
