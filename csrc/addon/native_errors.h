#pragma once
// Native failures as JS errors: conversion only. The code, the message and the file / tensor / field
// come from the sa::Error that was thrown (common/error.h); lib/errors.ts `fromNative` maps the JS
// error into a SafetyArithmeticError.
#include <napi.h>

#include <stdexcept>
#include <string>

#include "common/error.h"

namespace sa::addon {

// What a native failure carries to JS.
struct NativeFailure {
  ErrorCode code = ErrorCode::SA_NATIVE;
  std::string message;
  ErrorDetails details;
};

// Runs fn; on an exception, fills failure and returns false. An sa::Error keeps its code and details;
// a std::invalid_argument means bad input and gets invalid_code; anything else is SA_NATIVE.
template <class Fn>
bool run_capturing(Fn&& fn, NativeFailure* failure, ErrorCode invalid_code = ErrorCode::SA_INVALID_ARGUMENT) {
  try {
    fn();
    return true;
  } catch (const Error& e) {
    *failure = NativeFailure{e.code, e.what(), e.details};
  } catch (const std::invalid_argument& e) {
    *failure = NativeFailure{invalid_code, e.what(), {}};
  } catch (const std::exception& e) {
    *failure = NativeFailure{ErrorCode::SA_NATIVE, e.what(), {}};
  } catch (...) {
    *failure = NativeFailure{ErrorCode::SA_NATIVE, "unknown native exception", {}};
  }
  return false;
}

// Sets code, file, tensor and field (where known) on a JS error object; ABORT_ERR is named AbortError.
void decorate_error(Napi::Object err, const NativeFailure& failure);

// A new JS error for a failure.
Napi::Error to_js_error(Napi::Env env, const NativeFailure& failure);
inline Napi::Error to_js_error(Napi::Env env, ErrorCode code, const std::string& message, ErrorDetails details = {}) {
  return to_js_error(env, NativeFailure{code, message, std::move(details)});
}

// errorCodes(): every code of common/error_codes.def, for the check that both sides agree.
Napi::Value ErrorCodes(const Napi::CallbackInfo& info);

}  // namespace sa::addon
