#pragma once
// Reading plain JS objects into the core's structs, with errors that name the field.
#include <napi.h>

#include <string>

#include "hdr/hdr_job.h"

namespace sa::addon {

sa::HdrJobSpec hdr_spec_from_js(const Napi::Object& o);
Napi::Object hdr_result_to_js(Napi::Env env, const sa::HdrResult& r);

}  // namespace sa::addon
