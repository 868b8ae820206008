#pragma once
#include <napi.h>

namespace sa::addon {
// runHdr(spec, onProgress | null, cancelToken) -> Promise<result>
Napi::Value RunHdr(const Napi::CallbackInfo& info);
void InitCancelToken(Napi::Env env, Napi::Object exports);
}  // namespace sa::addon
