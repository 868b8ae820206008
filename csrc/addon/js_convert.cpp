#include "addon/js_convert.h"

#include <cmath>

#include "common/error.h"

namespace sa::addon {
namespace {

[[noreturn]] void bad(const std::string& field, const std::string& want) {
  throw std::invalid_argument("native HDR spec: field \"" + field + "\" must be " + want);
}

Napi::Value field(const Napi::Object& o, const char* name, const std::string& path) {
  if (!o.Has(name)) bad(path + name, "present");
  return o.Get(name);
}

uint64_t u64(const Napi::Object& o, const char* name, const std::string& path) {
  Napi::Value v = field(o, name, path);
  if (!v.IsNumber()) bad(path + name, "a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != double(uint64_t(d))) bad(path + name, "a non-negative integer");
  return uint64_t(d);
}

int i32(const Napi::Object& o, const char* name, const std::string& path) {
  Napi::Value v = field(o, name, path);
  if (!v.IsNumber()) bad(path + name, "a number");
  return v.As<Napi::Number>().Int32Value();
}

bool boolean(const Napi::Object& o, const char* name, const std::string& path) {
  Napi::Value v = field(o, name, path);
  if (!v.IsBoolean()) bad(path + name, "a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string str(const Napi::Object& o, const char* name, const std::string& path) {
  Napi::Value v = field(o, name, path);
  if (!v.IsString()) bad(path + name, "a string");
  return v.As<Napi::String>().Utf8Value();
}

Napi::Object obj(const Napi::Value& v, const std::string& path) {
  if (!v.IsObject()) bad(path, "an object");
  return v.As<Napi::Object>();
}

Napi::Array arr(const Napi::Object& o, const char* name, const std::string& path) {
  Napi::Value v = field(o, name, path);
  if (!v.IsArray()) bad(path + name, "an array");
  return v.As<Napi::Array>();
}

DType dtype_of(const std::string& s, const std::string& path) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  if (s == "OTHER") return DType::OTHER;
  bad(path, "F32, F16, BF16 or OTHER");
}

TensorSource source(const Napi::Object& t, const char* name, const std::string& path) {
  TensorSource s;
  if (!t.Has(name) || t.Get(name).IsNull() || t.Get(name).IsUndefined()) return s;
  const std::string p = path + name + ".";
  Napi::Object o = obj(t.Get(name), path + name);
  s.file = i32(o, "file", p);
  s.offset = u64(o, "offset", p);
  s.dtype = dtype_of(str(o, "dtype", p), p + "dtype");
  return s;
}

}  // namespace

HdrJobSpec hdr_spec_from_js(const Napi::Object& o) {
  HdrJobSpec spec;
  Napi::Array files = arr(o, "files", "");
  for (uint32_t i = 0; i < files.Length(); i++) {
    if (!files.Get(i).IsString()) bad("files[" + std::to_string(i) + "]", "a string");
    spec.files.push_back(files.Get(i).As<Napi::String>().Utf8Value());
  }
  Napi::Array tensors = arr(o, "tensors", "");
  for (uint32_t i = 0; i < tensors.Length(); i++) {
    const std::string p = "tensors[" + std::to_string(i) + "].";
    Napi::Object t = obj(tensors.Get(i), p);
    HdrTensor ht;
    ht.name = str(t, "name", p);
    Napi::Array shape = arr(t, "shape", p);
    for (uint32_t k = 0; k < shape.Length(); k++) ht.shape.push_back(uint64_t(shape.Get(k).As<Napi::Number>().DoubleValue()));
    ht.numel = u64(t, "numel", p);
    ht.nbytes = u64(t, "nbytes", p);
    ht.compute = boolean(t, "compute", p);
    ht.whole_region = boolean(t, "wholeRegion", p);
    ht.base = source(t, "base", p);
    ht.harmful = source(t, "harmful", p);
    ht.target = source(t, "target", p);
    if (t.Has("sparse") && t.Get("sparse").IsObject()) {
      Napi::Object sp = t.Get("sparse").As<Napi::Object>();
      const std::string q = p + "sparse.";
      ht.sparse.file = i32(sp, "file", q);
      ht.sparse.indices_offset = u64(sp, "indicesOffset", q);
      ht.sparse.index_bytes = i32(sp, "indexBytes", q);
      ht.sparse.values_offset = u64(sp, "valuesOffset", q);
      ht.sparse.count = u64(sp, "count", q);
      if (ht.sparse.index_bytes != 4 && ht.sparse.index_bytes != 8) bad(q + "indexBytes", "4 or 8");
    }
    ht.out_file = i32(t, "outFile", p);
    ht.out_offset = u64(t, "outOffset", p);
    if (ht.target.file < 0) bad(p + "target", "given");
    spec.tensors.push_back(std::move(ht));
  }
  Napi::Array outputs = arr(o, "outputs", "");
  for (uint32_t i = 0; i < outputs.Length(); i++) {
    const std::string p = "outputs[" + std::to_string(i) + "].";
    Napi::Object out = obj(outputs.Get(i), p);
    HdrOutput ho;
    ho.path = str(out, "path", p);
    Napi::Value header = field(out, "header", p);
    if (!header.IsBuffer()) bad(p + "header", "a Buffer");
    auto buf = header.As<Napi::Buffer<char>>();
    ho.header.assign(buf.Data(), buf.Length());
    ho.size = u64(out, "size", p);
    spec.outputs.push_back(std::move(ho));
  }
  spec.from_harm_vector = boolean(o, "fromHarmVector", "");
  spec.trim = boolean(o, "trim", "");
  Napi::Value topk = field(o, "topK", "");
  if (!topk.IsNumber()) bad("topK", "a number");
  spec.top_k = topk.As<Napi::Number>().DoubleValue();
  Napi::Value lambda = field(o, "lambda", "");
  if (!lambda.IsNumber()) bad("lambda", "a number");
  spec.lambda = float(lambda.As<Napi::Number>().DoubleValue());
  if (!std::isfinite(spec.lambda))
    throw Error(ErrorCode::SA_INVALID_ARGUMENT,
                "lambda " + std::to_string(lambda.As<Napi::Number>().DoubleValue()) + " is not a finite float32 number; use a smaller lambda", {"", "", "lambda"});
  spec.edit_mask = boolean(o, "editMask", "");
  spec.save_harm_vector = str(o, "saveHarmVector", "");
  spec.harm_vector_metadata = str(o, "harmVectorMetadata", "");
  spec.device = str(o, "device", "");
  spec.buffer_bytes = u64(o, "bufferBytes", "");
  spec.durable = boolean(o, "durable", "");
  if (o.Has("passes")) {
    spec.passes = str(o, "passes", "");
    if (spec.passes != "auto" && spec.passes != "1" && spec.passes != "3") bad("passes", "\"auto\", \"1\" or \"3\"");
  }
  if (o.Has("ioOnly")) spec.io_only = boolean(o, "ioOnly", "");
  return spec;
}

Napi::Object hdr_result_to_js(Napi::Env env, const HdrResult& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("backend", r.backend);
  o.Set("regionElements", double(r.region_elements));
  o.Set("keepTarget", double(r.keep_target));
  o.Set("kept", double(r.kept));
  o.Set("ties", double(r.ties));
  if (r.has_threshold) {
    o.Set("thresholdBits", double(r.threshold_bits));
    o.Set("threshold", double(bits_f32(r.threshold_bits)));
  } else {
    o.Set("thresholdBits", env.Null());
    o.Set("threshold", env.Null());
  }
  o.Set("bytesRead", double(r.bytes_read));
  o.Set("bytesWritten", double(r.bytes_written));
  Napi::Object secs = Napi::Object::New(env);
  secs.Set("histogram", r.seconds_histogram);
  secs.Set("threshold", r.seconds_refine);
  secs.Set("apply", r.seconds_apply);
  secs.Set("sample", r.seconds_sample);
  secs.Set("patch", r.seconds_patch);
  o.Set("seconds", secs);
  Napi::Object passes = Napi::Object::New(env);
  passes.Set("ran", r.passes);
  passes.Set("reason", r.passes_reason);
  if (r.band_tried) {
    Napi::Object band = Napi::Object::New(env);
    band.Set("sampleElements", double(r.sample_elements));
    band.Set("loBits", double(r.band_lo_bits));
    band.Set("hiBits", double(r.band_hi_bits));
    band.Set("provisionalBits", double(r.provisional_bits));
    band.Set("entries", double(r.band_entries));
    band.Set("capacityBytes", double(r.band_capacity_bytes));
    band.Set("patched", double(r.patched));
    passes.Set("band", band);
  } else {
    passes.Set("band", env.Null());
  }
  o.Set("passes", passes);
  return o;
}

}  // namespace sa::addon
