// The engine as JS objects: NativeModel (weights on a backend) and NativeSession (a KV cache).
// Conversion only: the work is the engine's (Model::forward, Model::step). Each forward or step runs
// on a libuv worker thread and returns a Promise; the model and the sessions it uses are kept alive
// by references until the work completes. Native memory (weights, KV caches) is reported to V8.
#include "addon/model_wrap.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "addon/native_errors.h"
#include "backend/registry.h"
#include "engine/model.h"
#include "io/file_io.h"

namespace sa::addon {
namespace {

using engine::ForwardOptions;
using engine::Model;
using engine::SamplingParams;
using engine::SeqRequest;
using engine::SeqResult;
using engine::Session;

[[noreturn]] void type_error(Napi::Env env, const std::string& m) { throw Napi::TypeError::New(env, m); }

double num(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  if (!v.IsNumber()) type_error(o.Env(), std::string("model spec: \"") + k + "\" must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

DType dtype_from(const std::string& s) {
  if (s == "F32") return DType::F32;
  if (s == "BF16") return DType::BF16;
  if (s == "F16") return DType::F16;
  throw std::invalid_argument("weights must be F32, BF16 or F16, not " + s);
}


class NativeModel;

// Tells V8 how much native memory an object holds, so that its collector weighs it: `reported`
// follows `now` after every change the JS thread sees.
void report_external(Napi::BasicEnv env, int64_t& reported, uint64_t now) {
  const int64_t delta = int64_t(now) - reported;
  if (delta == 0) return;
  Napi::MemoryManagement::AdjustExternalMemory(env, delta);
  reported += delta;
}

class NativeSession : public Napi::ObjectWrap<NativeSession> {
 public:
  static Napi::FunctionReference* constructor;
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "NativeSession", {
      InstanceMethod("reset", &NativeSession::Reset),
      InstanceMethod("seed", &NativeSession::Seed),
      InstanceMethod("dispose", &NativeSession::Dispose),
      InstanceAccessor("length", &NativeSession::Length, nullptr),
      InstanceAccessor("bytes", &NativeSession::Bytes, nullptr),
      InstanceAccessor("disposed", &NativeSession::Disposed, nullptr),
    });
    constructor = new Napi::FunctionReference(Napi::Persistent(fn));
    exports.Set("NativeSession", fn);
  }
  explicit NativeSession(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeSession>(info) {}
  ~NativeSession() override {
    if (reported_ != 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -reported_);
  }

  Napi::Value Reset(const Napi::CallbackInfo& info) {
    live(info.Env()).reset();
    return info.Env().Undefined();
  }
  // Reseeding while a step samples with this generator would race it: refused, as reset is.
  Napi::Value Seed(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) type_error(info.Env(), "seed(n: number)");
    live(info.Env()).rng().reseed(uint64_t(info[0].As<Napi::Number>().Int64Value()));
    return info.Env().Undefined();
  }
  // Frees the KV cache now; the session cannot be used afterwards. Disposing twice does nothing.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (!session) return info.Env().Undefined();
    check_idle(info.Env(), "dispose() it");
    session.reset();
    sync_memory(info.Env());
    model_ref.Reset();
    return info.Env().Undefined();
  }
  Napi::Value Length(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), live(info.Env(), false).length()); }
  Napi::Value Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), session ? double(session->bytes()) : 0); }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !session); }

  // The session, if it was not disposed and (when idle is set) no step is using it.
  Session& live(Napi::Env env, bool idle = true) {
    if (!session) throw to_js_error(env, ErrorCode::SA_INVALID_ARGUMENT, "this session was disposed (its KV cache is freed); create a new session");
    if (idle) check_idle(env, "use it");
    return *session;
  }
  void check_idle(Napi::Env env, const char* action) const {
    if (busy)
      throw to_js_error(env, ErrorCode::SA_INVALID_ARGUMENT, std::string("this session is in use by a forward pass or step that has not finished; await it before you ") + action);
  }
  void sync_memory(Napi::Env env) { report_external(env, reported_, session ? session->bytes() : 0); }

  std::unique_ptr<Session> session;
  Napi::ObjectReference model_ref;  // the model the session was created by
  bool busy = false;

 private:
  int64_t reported_ = 0;
};
Napi::FunctionReference* NativeSession::constructor = nullptr;

struct SeqInput {
  std::vector<int32_t> tokens;
  NativeSession* session = nullptr;
  std::vector<std::pair<int32_t, float>> steer;
  SamplingParams sampling;
  bool sample = true;
};

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::FunctionReference* constructor;
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "NativeModel", {
      InstanceMethod("forward", &NativeModel::Forward),
      InstanceMethod("step", &NativeModel::Step),
      InstanceMethod("createSession", &NativeModel::CreateSession),
      InstanceMethod("addIcv", &NativeModel::AddIcv),
      InstanceMethod("removeIcv", &NativeModel::RemoveIcv),
      InstanceMethod("dispose", &NativeModel::Dispose),
      InstanceAccessor("backend", &NativeModel::Backend, nullptr),
      InstanceAccessor("weightBytes", &NativeModel::WeightBytes, nullptr),
      InstanceAccessor("residentBytes", &NativeModel::ResidentBytes, nullptr),
      InstanceAccessor("kvBytesPerToken", &NativeModel::KvBytesPerToken, nullptr),
      InstanceAccessor("kvCacheBytes", &NativeModel::KvCacheBytes, nullptr),
      InstanceAccessor("liveSessions", &NativeModel::LiveSessions, nullptr),
    });
    constructor = new Napi::FunctionReference(Napi::Persistent(fn));
    exports.Set("NativeModel", fn);
  }
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {}
  ~NativeModel() override {
    if (reported_ != 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -reported_);
  }

  Napi::Value Backend(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), model ? model->ops()->name() : "disposed"); }
  Napi::Value WeightBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), model ? double(model->weight_bytes()) : 0); }
  Napi::Value ResidentBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), model ? double(model->resident_bytes()) : 0); }
  Napi::Value KvBytesPerToken(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(kv_bytes_per_token)); }
  Napi::Value KvCacheBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), kv ? double(kv->bytes.load()) : 0); }
  Napi::Value LiveSessions(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), kv ? double(kv->sessions.load()) : 0); }

  Model& live(Napi::Env env) {
    if (!model) throw to_js_error(env, ErrorCode::SA_INVALID_ARGUMENT, "the model was disposed");
    return *model;
  }

  // Takes the model just loaded and tells V8 its size.
  void adopt(Napi::Env env, std::unique_ptr<Model> m) {
    model = std::move(m);
    kv = model->kv_account();
    kv_bytes_per_token = model->kv_bytes_per_token();
    sync_memory(env);
  }
  void sync_memory(Napi::Env env) { report_external(env, reported_, model ? model->resident_bytes() : 0); }

  // createSession(maxTokens?): maxTokens bounds the session's cache (and what it allocates).
  Napi::Value CreateSession(const Napi::CallbackInfo& info) {
    Model& m = live(info.Env());
    int32_t max_tokens = 0;
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      const double v = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
      if (!(v >= 1 && v <= 2147483647.0 && std::floor(v) == v))
        throw to_js_error(info.Env(), ErrorCode::SA_INVALID_ARGUMENT, "createSession(maxTokens): maxTokens must be an integer from 1 to 2147483647", {"", "", "maxTokens"});
      max_tokens = int32_t(v);
    }
    Napi::Object obj = NativeSession::constructor->New({});
    NativeSession* s = NativeSession::Unwrap(obj);
    s->session = std::make_unique<Session>(m, max_tokens);
    s->model_ref = Napi::Persistent(Value());
    return obj;
  }

  Napi::Value AddIcv(const Napi::CallbackInfo& info) {
    Model& m = live(info.Env());
    if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsTypedArray()) type_error(info.Env(), "addIcv(layers: Int32Array, vectors: Float32Array)");
    auto layers = info[0].As<Napi::Int32Array>();
    auto vectors = info[1].As<Napi::Float32Array>();
    int32_t id = -1;
    NativeFailure failure;
    if (!run_capturing([&] {
          id = m.add_icv(std::vector<int32_t>(layers.Data(), layers.Data() + layers.ElementLength()),
                         std::vector<float>(vectors.Data(), vectors.Data() + vectors.ElementLength()));
        }, &failure))
      throw to_js_error(info.Env(), failure);
    sync_memory(info.Env());
    return Napi::Number::New(info.Env(), id);
  }

  Napi::Value RemoveIcv(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) type_error(info.Env(), "removeIcv(id: number)");
    live(info.Env()).remove_icv(info[0].As<Napi::Number>().Int32Value());
    sync_memory(info.Env());
    return info.Env().Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (pending > 0) throw to_js_error(info.Env(), ErrorCode::SA_INVALID_ARGUMENT, "the model has work in flight; await it before dispose()");
    model.reset();
    sync_memory(info.Env());
    return info.Env().Undefined();
  }

  std::vector<SeqInput> read_batch(Napi::Env env, const Napi::Value& v);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);

  std::unique_ptr<Model> model;
  std::shared_ptr<engine::KvAccount> kv;  // outlives the model while sessions do
  uint64_t kv_bytes_per_token = 0;
  int pending = 0;

 private:
  int64_t reported_ = 0;
};
Napi::FunctionReference* NativeModel::constructor = nullptr;

std::vector<SeqInput> NativeModel::read_batch(Napi::Env env, const Napi::Value& v) {
  if (!v.IsArray()) type_error(env, "the batch must be an array of sequences");
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<SeqInput> out(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    const std::string where = "batch[" + std::to_string(i) + "]";
    Napi::Value item = arr.Get(i);
    if (!item.IsObject()) type_error(env, where + " must be an object");
    Napi::Object o = item.As<Napi::Object>();
    Napi::Value tokens = o.Get("tokens");
    if (!tokens.IsTypedArray() || tokens.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      type_error(env, where + ".tokens must be an Int32Array");
    auto t = tokens.As<Napi::Int32Array>();
    out[i].tokens.assign(t.Data(), t.Data() + t.ElementLength());
    Napi::Value session = o.Get("session");
    if (session.IsObject()) {
      if (!session.As<Napi::Object>().InstanceOf(NativeSession::constructor->Value())) type_error(env, where + ".session must be a NativeSession");
      NativeSession* s = NativeSession::Unwrap(session.As<Napi::Object>());
      s->live(env);
      if (s->model_ref.Value() != Value()) type_error(env, where + ".session belongs to another model");
      for (const auto& prev : out)
        if (prev.session == s) type_error(env, "the same session appears twice in one batch");
      out[i].session = s;
    }
    Napi::Value steer = o.Get("steer");
    if (steer.IsArray()) {
      Napi::Array sa = steer.As<Napi::Array>();
      for (uint32_t k = 0; k < sa.Length(); k++) {
        Napi::Value pv = sa.Get(k);
        if (!pv.IsArray()) type_error(env, where + ".steer[" + std::to_string(k) + "] must be an [id, alpha] pair");
        Napi::Array pair = pv.As<Napi::Array>();
        if (!pair.Get(0u).IsNumber() || !pair.Get(1u).IsNumber()) type_error(env, where + ".steer[" + std::to_string(k) + "] must be an [id, alpha] pair of numbers");
        const float alpha = pair.Get(1u).As<Napi::Number>().FloatValue();
        if (!std::isfinite(alpha))
          throw to_js_error(env, ErrorCode::SA_INVALID_ARGUMENT, where + ": steering alpha " + std::to_string(alpha) +
                            " is not a finite number in float32 range; pass a finite alpha", {"", "", "alpha"});
        out[i].steer.emplace_back(pair.Get(0u).As<Napi::Number>().Int32Value(), alpha);
      }
    }
    Napi::Value sampling = o.Get("sampling");
    if (sampling.IsObject()) {
      Napi::Object so = sampling.As<Napi::Object>();
      out[i].sampling.temperature = float(num(so, "temperature"));
      out[i].sampling.top_k = int32_t(num(so, "topK"));
      out[i].sampling.top_p = float(num(so, "topP"));
    }
    Napi::Value sample = o.Get("sample");
    if (!sample.IsUndefined()) {
      if (!sample.IsBoolean()) type_error(env, where + ".sample must be a boolean");
      out[i].sample = sample.As<Napi::Boolean>().Value();
    }
  }
  return out;
}

// Work on the model off the JS thread, as a Promise. Holds the model and the batch's sessions
// (referenced and marked busy) until it completes; then tells V8 how their memory changed.
class ModelWorker : public Napi::AsyncWorker {
 public:
  ModelWorker(Napi::Env env, NativeModel* owner, std::vector<SeqInput> inputs)
      : Napi::AsyncWorker(env), owner_(owner), inputs_(std::move(inputs)), deferred_(Napi::Promise::Deferred::New(env)) {
    owner_ref_ = Napi::Persistent(owner->Value());
    owner_->pending++;
    for (auto& in : inputs_)
      if (in.session) {
        session_refs_.push_back(Napi::Persistent(in.session->Value()));
        in.session->busy = true;
      }
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    if (!run_capturing([&] { run(*owner_->model); }, &failure_)) SetError(failure_.message);
  }

  void OnOK() override {
    release();
    deferred_.Resolve(result(Env()));
  }

  void OnError(const Napi::Error& e) override {
    release();
    decorate_error(e.Value(), failure_);
    deferred_.Reject(e.Value());
  }

 protected:
  virtual void run(Model& model) = 0;
  virtual Napi::Value result(Napi::Env env) = 0;
  Session* session_of(size_t i) const { return inputs_[i].session ? inputs_[i].session->session.get() : nullptr; }

  std::vector<SeqInput> inputs_;

 private:
  void release() {
    owner_->pending--;
    owner_->sync_memory(Env());
    for (auto& in : inputs_)
      if (in.session) {
        in.session->busy = false;
        in.session->sync_memory(Env());
      }
  }

  NativeModel* owner_;
  Napi::ObjectReference owner_ref_;
  std::vector<Napi::ObjectReference> session_refs_;
  Napi::Promise::Deferred deferred_;
  NativeFailure failure_;
};

class ForwardWorker : public ModelWorker {
 public:
  ForwardWorker(Napi::Env env, NativeModel* owner, std::vector<SeqInput> inputs, ForwardOptions opts)
      : ModelWorker(env, owner, std::move(inputs)), opts_(opts) {}

 protected:
  void run(Model& model) override {
    std::vector<SeqRequest> batch(inputs_.size());
    for (size_t i = 0; i < inputs_.size(); i++) {
      batch[i].tokens = inputs_[i].tokens;
      batch[i].session = session_of(i);
      batch[i].steer = inputs_[i].steer;
    }
    results_ = model.forward(batch, opts_);
  }

  Napi::Value result(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, results_.size());
    auto to_js = [&](std::vector<float>& v) {
      Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
      std::copy(v.begin(), v.end(), a.Data());
      return a;
    };
    for (size_t i = 0; i < results_.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("logits", to_js(results_[i].logits));
      if (opts_.capture_layer_out) o.Set("layerOut", to_js(results_[i].layer_out));
      if (opts_.capture_mlp_out) o.Set("mlpOut", to_js(results_[i].mlp_out));
      if (opts_.capture_mlp_raw) o.Set("mlpRaw", to_js(results_[i].mlp_raw));
      out.Set(uint32_t(i), o);
    }
    return out;
  }

 private:
  ForwardOptions opts_;
  std::vector<SeqResult> results_;
};

class StepWorker : public ModelWorker {
 public:
  using ModelWorker::ModelWorker;

 protected:
  void run(Model& model) override {
    std::vector<engine::StepRequest> batch(inputs_.size());
    for (size_t i = 0; i < inputs_.size(); i++) {
      batch[i].session = session_of(i);
      batch[i].tokens = inputs_[i].tokens;
      batch[i].steer = inputs_[i].steer;
      batch[i].sampling = inputs_[i].sampling;
      batch[i].sample = inputs_[i].sample;
    }
    next_ = model.step(batch);
  }

  Napi::Value result(Napi::Env env) override {
    Napi::Int32Array next = Napi::Int32Array::New(env, next_.size());
    std::copy(next_.begin(), next_.end(), next.Data());
    Napi::Object o = Napi::Object::New(env);
    o.Set("tokens", next);
    return o;
  }

 private:
  std::vector<int32_t> next_;
};

Napi::Value NativeModel::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  std::vector<SeqInput> inputs = read_batch(env, info[0]);
  ForwardOptions opts;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    opts.all_logits = !o.Get("lastOnly").ToBoolean().Value();
    opts.capture_layer_out = o.Get("layerOut").ToBoolean().Value();
    opts.capture_mlp_out = o.Get("mlpOut").ToBoolean().Value();
    opts.capture_mlp_raw = o.Get("mlpRaw").ToBoolean().Value();
  }
  auto* w = new ForwardWorker(env, this, std::move(inputs), opts);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value NativeModel::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  auto* w = new StepWorker(env, this, read_batch(env, info[0]));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, engine::DeviceOps* ops, engine::ModelConfig cfg, std::vector<engine::WeightSource> weights, bool f32, DType kv_dtype,
             engine::MatmulPrecision precision)
      : Napi::AsyncWorker(env), ops_(ops), cfg_(std::move(cfg)), weights_(std::move(weights)), f32_(f32), kv_dtype_(kv_dtype),
        precision_(precision), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    const bool ok = run_capturing([&] {
      model_ = std::make_unique<Model>(ops_, cfg_, f32_, kv_dtype_, precision_);
      model_->load(weights_);
    }, &failure_, ErrorCode::SA_BAD_CHECKPOINT);
    if (!ok) SetError(failure_.message);
  }
  void OnOK() override {
    Napi::Object obj = NativeModel::constructor->New({});
    NativeModel::Unwrap(obj)->adopt(Env(), std::move(model_));
    deferred_.Resolve(obj);
  }
  void OnError(const Napi::Error& e) override {
    decorate_error(e.Value(), failure_);
    deferred_.Reject(e.Value());
  }

 private:
  engine::DeviceOps* ops_;
  engine::ModelConfig cfg_;
  std::vector<engine::WeightSource> weights_;
  bool f32_;
  DType kv_dtype_;
  engine::MatmulPrecision precision_;
  std::unique_ptr<Model> model_;
  Napi::Promise::Deferred deferred_;
  NativeFailure failure_;
};

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) type_error(env, "loadModel(spec)");
  Napi::Object s = info[0].As<Napi::Object>();
  engine::ModelConfig cfg;
  cfg.vocab = int32_t(num(s, "vocab"));
  cfg.hidden = int32_t(num(s, "hidden"));
  cfg.intermediate = int32_t(num(s, "intermediate"));
  cfg.layers = int32_t(num(s, "layers"));
  cfg.heads = int32_t(num(s, "heads"));
  cfg.kv_heads = int32_t(num(s, "kvHeads"));
  cfg.head_dim = int32_t(num(s, "headDim"));
  cfg.rms_eps = float(num(s, "rmsEps"));
  cfg.attention_scaling = float(num(s, "attentionScaling"));
  cfg.sliding_window = int32_t(num(s, "slidingWindow"));
  cfg.tie_embeddings = s.Get("tieEmbeddings").ToBoolean().Value();
  if (!s.Get("invFreq").IsTypedArray()) type_error(env, "model spec: invFreq must be a Float32Array");
  auto inv = s.Get("invFreq").As<Napi::Float32Array>();
  cfg.inv_freq.assign(inv.Data(), inv.Data() + inv.ElementLength());
  std::vector<engine::WeightSource> weights;
  Napi::Array ws = s.Get("weights").As<Napi::Array>();
  try {
    for (uint32_t i = 0; i < ws.Length(); i++) {
      Napi::Object w = ws.Get(i).As<Napi::Object>();
      engine::WeightSource src;
      src.name = w.Get("name").As<Napi::String>().Utf8Value();
      src.file = w.Get("file").As<Napi::String>().Utf8Value();
      src.offset = uint64_t(num(w, "offset"));
      src.dtype = dtype_from(w.Get("dtype").As<Napi::String>().Utf8Value());
      src.numel = uint64_t(num(w, "numel"));
      weights.push_back(std::move(src));
    }
  } catch (const std::invalid_argument& e) {
    throw to_js_error(env, ErrorCode::SA_BAD_CHECKPOINT, e.what());
  }
  std::string error;
  engine::DeviceOps* ops = select_engine_ops(s.Get("device").As<Napi::String>().Utf8Value(), &error);
  if (!ops) throw to_js_error(env, ErrorCode::SA_DEVICE_UNAVAILABLE, error);
  DType kv_dtype;
  try {
    kv_dtype = dtype_from(s.Get("kvCacheDtype").As<Napi::String>().Utf8Value());
  } catch (const std::invalid_argument& e) {
    throw to_js_error(env, ErrorCode::SA_INVALID_ARGUMENT, std::string("kvCacheDtype: ") + e.what());
  }
  const std::string precision = s.Get("matmulPrecision").ToString().Utf8Value();
  if (precision != "F32" && precision != "BF16") type_error(env, "model spec: matmulPrecision must be \"F32\" or \"BF16\"");
  auto* w = new LoadWorker(env, ops, std::move(cfg), std::move(weights), s.Get("weightsFloat32").ToBoolean().Value(), kv_dtype,
                           precision == "BF16" ? engine::MatmulPrecision::Bf16 : engine::MatmulPrecision::F32);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// externalMemory(): the native memory V8 has been told of (through napi_adjust_external_memory).
Napi::Value ExternalMemory(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(Napi::MemoryManagement::AdjustExternalMemory(info.Env(), 0)));
}

}  // namespace

void InitModel(Napi::Env env, Napi::Object exports) {
  NativeSession::Init(env, exports);
  NativeModel::Init(env, exports);
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("externalMemory", Napi::Function::New(env, ExternalMemory));
}

}  // namespace sa::addon
