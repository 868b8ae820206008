#pragma once
// Native work's exceptions as the error codes the JS side knows (lib/errors.ts).
#include <stdexcept>
#include <string>

#include "hdr/hdr_job.h"
#include "io/file_io.h"

namespace sa::addon {

// Runs fn; on an exception, sets code and message and returns false. A std::invalid_argument means
// bad input: its code is invalid_code (bad options, or a bad checkpoint when loading one).
template <class Fn>
bool run_capturing(Fn&& fn, std::string* code, std::string* message, const char* invalid_code = "SA_INVALID_ARGUMENT") {
  try {
    fn();
    return true;
  } catch (const Cancelled&) {
    *code = "ABORT_ERR";
    *message = "the operation was aborted";
  } catch (const IoError& e) {
    *code = "SA_IO";
    *message = e.what();
  } catch (const std::invalid_argument& e) {
    *code = invalid_code;
    *message = e.what();
  } catch (const std::exception& e) {
    *code = "SA_NATIVE";
    *message = e.what();
  }
  return false;
}

}  // namespace sa::addon
