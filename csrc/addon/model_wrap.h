#pragma once
#include <napi.h>

namespace sa::addon {
// loadModel(spec) -> Promise<NativeModel>; NativeModel and NativeSession classes; externalMemory().
void InitModel(Napi::Env env, Napi::Object exports);
}  // namespace sa::addon
