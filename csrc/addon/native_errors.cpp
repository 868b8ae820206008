#include "addon/native_errors.h"

#include <iterator>

namespace sa::addon {

void decorate_error(Napi::Object err, const NativeFailure& failure) {
  Napi::Env env = err.Env();
  err.Set("code", Napi::String::New(env, error_code_name(failure.code)));
  if (failure.code == ErrorCode::ABORT_ERR) err.Set("name", Napi::String::New(env, "AbortError"));
  if (!failure.details.file.empty()) err.Set("file", Napi::String::New(env, failure.details.file));
  if (!failure.details.tensor.empty()) err.Set("tensor", Napi::String::New(env, failure.details.tensor));
  if (!failure.details.field.empty()) err.Set("field", Napi::String::New(env, failure.details.field));
}

Napi::Error to_js_error(Napi::Env env, const NativeFailure& failure) {
  Napi::Error e = Napi::Error::New(env, failure.message);
  decorate_error(e.Value(), failure);
  return e;
}

Napi::Value ErrorCodes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env, std::size(kAllErrorCodes));
  for (size_t i = 0; i < std::size(kAllErrorCodes); i++) out.Set(uint32_t(i), Napi::String::New(env, error_code_name(kAllErrorCodes[i])));
  return out;
}

}  // namespace sa::addon
