// The addon's entry point: registers the functions of the native binding (see lib/native.ts).
#include <napi.h>

#include "addon/hdr_worker.h"
#include "addon/model_wrap.h"
#include "addon/native_errors.h"
#include "backend/registry.h"
#include "common/thread_pool.h"

namespace sa::addon {
Napi::Value SteerRows(const Napi::CallbackInfo& info);
Napi::Value CudaBenchSteer(const Napi::CallbackInfo& info);
namespace {

Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto statuses = backend_statuses();
  Napi::Array out = Napi::Array::New(env, statuses.size());
  for (size_t i = 0; i < statuses.size(); i++) {
    const auto& s = statuses[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", s.name);
    o.Set("available", s.available);
    o.Set("reason", s.reason);
    o.Set("description", s.description);
    o.Set("library", s.library);
    out.Set(uint32_t(i), o);
  }
  return out;
}

Napi::Value SelectBackend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "selectBackend(device: string)");
  std::string error;
  const sa_backend_table* b = select_backend(info[0].As<Napi::String>().Utf8Value(), &error);
  if (!b) throw to_js_error(env, ErrorCode::SA_DEVICE_UNAVAILABLE, error, {"", "", "device"});
  return Napi::String::New(env, b->name);
}

// setThreads(n): the CPU thread count (0: the CPUs available to the process); returns the count now in use.
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "setThreads(n: number)");
  ThreadPool::set_shared_threads(info[0].As<Napi::Number>().Int32Value());
  return Napi::Number::New(info.Env(), ThreadPool::shared().size());
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("backends", Napi::Function::New(env, Backends));
  exports.Set("selectBackend", Napi::Function::New(env, SelectBackend));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("errorCodes", Napi::Function::New(env, ErrorCodes));
  exports.Set("runHdr", Napi::Function::New(env, RunHdr));
  exports.Set("steerRows", Napi::Function::New(env, SteerRows));
  exports.Set("cudaBenchSteer", Napi::Function::New(env, CudaBenchSteer));
  InitCancelToken(env, exports);
  InitModel(env, exports);
  exports.Set("abiVersion", Napi::Number::New(env, SA_BACKEND_ABI_MAJOR));
  return exports;
}

}  // namespace
}  // namespace sa::addon

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return sa::addon::Init(env, exports); }

NODE_API_MODULE(safety_arithmetic, InitAddon)
