// steerRows(x: Float32Array, hidden, vectors: Float32Array [n*hidden], alphas: Float32Array [n]):
// the Safety Alignment transform applied in place to each row of x, on the CPU.
#include <napi.h>

#include <cmath>
#include <string>
#include <vector>

#include "addon/native_errors.h"
#include "backend/registry.h"
#include "cpu/steer_math.h"
#include "engine/ops.h"

namespace sa::addon {

Napi::Value SteerRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsTypedArray() || !info[3].IsTypedArray())
    throw Napi::TypeError::New(env, "steerRows(x: Float32Array, hidden: number, vectors: Float32Array, alphas: Float32Array)");
  auto x = info[0].As<Napi::Float32Array>();
  const int32_t hidden = info[1].As<Napi::Number>().Int32Value();
  auto v = info[2].As<Napi::Float32Array>();
  auto a = info[3].As<Napi::Float32Array>();
  const int32_t n = int32_t(a.ElementLength());
  if (hidden <= 0 || x.ElementLength() % size_t(hidden) != 0) throw Napi::RangeError::New(env, "steerRows: x's length must be a multiple of hidden");
  if (v.ElementLength() != size_t(n) * size_t(hidden)) throw Napi::RangeError::New(env, "steerRows: vectors must hold alphas.length x hidden values");
  if (n > engine::kMaxSteerVectors) throw Napi::RangeError::New(env, "steerRows: at most 8 vectors");
  for (size_t j = 0; j < v.ElementLength(); j++)
    if (!std::isfinite(v[j]))
      throw to_js_error(env, ErrorCode::SA_INVALID_ARGUMENT, "steerRows: vector " + std::to_string(j / size_t(hidden)) + " holds a NaN or infinite value at index " +
                        std::to_string(j % size_t(hidden)) + "; steer with finite vectors only", {"", "", "vectors"});
  for (int32_t i = 0; i < n; i++)
    if (!std::isfinite(a[size_t(i)]))
      throw to_js_error(env, ErrorCode::SA_INVALID_ARGUMENT, "steerRows: alpha " + std::to_string(i) + " is not finite; pass finite alphas", {"", "", "alphas"});
  // As in the engine, a vector with alpha 0 takes no part (nor in the average's count).
  std::vector<const float*> ptrs;
  std::vector<float> alphas;
  for (int32_t i = 0; i < n; i++) {
    if (a[size_t(i)] == 0.f) continue;
    ptrs.push_back(v.Data() + size_t(i) * size_t(hidden));
    alphas.push_back(a[size_t(i)]);
  }
  if (ptrs.empty()) return env.Undefined();  // alpha 0 leaves x exactly as it was
  const size_t rows = x.ElementLength() / size_t(hidden);
  for (size_t r = 0; r < rows; r++) steer_row(x.Data() + r * size_t(hidden), hidden, ptrs.data(), alphas.data(), int32_t(ptrs.size()));
  return env.Undefined();
}

// cudaBenchSteer(rows, hidden, dtype: 'F32' | 'BF16' | 'F16', iters) -> { steerUs, copyUs }: times the
// CUDA steering kernel on random data beside a device copy of the same bytes (the memory floor).
Napi::Value CudaBenchSteer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsString() || !info[3].IsNumber())
    throw Napi::TypeError::New(env, "cudaBenchSteer(rows, hidden, dtype, iters)");
  using Bench = int (*)(int64_t, int32_t, int32_t, int32_t, double*, double*, char*, size_t);
  std::string error;
  auto bench = reinterpret_cast<Bench>(cuda_symbol("sa_cuda_bench_steer", &error));
  if (!bench) throw Napi::Error::New(env, error);
  const std::string dt = info[2].As<Napi::String>().Utf8Value();
  const int32_t dtype = dt == "F32" ? 0 : dt == "F16" ? 1 : 2;
  double steer_us = 0, copy_us = 0;
  char err[512] = {0};
  if (bench(info[0].As<Napi::Number>().Int64Value(), info[1].As<Napi::Number>().Int32Value(), dtype, info[3].As<Napi::Number>().Int32Value(),
            &steer_us, &copy_us, err, sizeof err) != 0)
    throw Napi::Error::New(env, err);
  Napi::Object o = Napi::Object::New(env);
  o.Set("steerUs", steer_us);
  o.Set("copyUs", copy_us);
  return o;
}

}  // namespace sa::addon
