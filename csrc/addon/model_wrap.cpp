// The engine as JS objects: NativeModel (weights on a backend) and NativeSession (a KV cache).
// Each forward or step runs on a libuv worker thread and returns a Promise; the model and the
// sessions it uses are kept alive by references until the work completes.
#include "addon/model_wrap.h"

#include <atomic>
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

class NativeSession : public Napi::ObjectWrap<NativeSession> {
 public:
  static Napi::FunctionReference* constructor;
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "NativeSession", {
      InstanceMethod("reset", &NativeSession::Reset),
      InstanceMethod("seed", &NativeSession::Seed),
      InstanceAccessor("length", &NativeSession::Length, nullptr),
    });
    constructor = new Napi::FunctionReference(Napi::Persistent(fn));
    exports.Set("NativeSession", fn);
  }
  explicit NativeSession(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeSession>(info) {}
  Napi::Value Reset(const Napi::CallbackInfo& info) {
    check_idle(info.Env());
    session->reset();
    return info.Env().Undefined();
  }
  Napi::Value Seed(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) type_error(info.Env(), "seed(n: number)");
    session->rng().reseed(uint64_t(info[0].As<Napi::Number>().Int64Value()));
    return info.Env().Undefined();
  }
  Napi::Value Length(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), session->length()); }
  void check_idle(Napi::Env env) const {
    if (busy) throw to_js_error(env, ErrorCode::SA_INVALID_ARGUMENT, "this session is in use by a forward pass that has not finished; await it first");
  }

  std::unique_ptr<Session> session;
  Napi::ObjectReference model_ref;  // the session's cache lives on the model's backend
  bool busy = false;
};
Napi::FunctionReference* NativeSession::constructor = nullptr;

struct SeqInput {
  std::vector<int32_t> tokens;
  NativeSession* session = nullptr;
  std::vector<std::pair<int32_t, float>> steer;
  SamplingParams sampling;
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
    });
    constructor = new Napi::FunctionReference(Napi::Persistent(fn));
    exports.Set("NativeModel", fn);
  }
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {}

  Napi::Value Backend(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), model ? model->ops()->name() : "disposed"); }
  Napi::Value WeightBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), model ? double(model->weight_bytes()) : 0); }

  Model& live(Napi::Env env) {
    if (!model) throw to_js_error(env, ErrorCode::SA_INVALID_ARGUMENT, "the model was disposed");
    return *model;
  }

  Napi::Value CreateSession(const Napi::CallbackInfo& info) {
    Model& m = live(info.Env());
    Napi::Object obj = NativeSession::constructor->New({});
    NativeSession* s = NativeSession::Unwrap(obj);
    s->session = std::make_unique<Session>(m);
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
    return Napi::Number::New(info.Env(), id);
  }

  Napi::Value RemoveIcv(const Napi::CallbackInfo& info) {
    live(info.Env()).remove_icv(info[0].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (pending > 0) throw to_js_error(info.Env(), ErrorCode::SA_INVALID_ARGUMENT, "the model has work in flight; await it before dispose()");
    model.reset();
    return info.Env().Undefined();
  }

  std::vector<SeqInput> read_batch(Napi::Env env, const Napi::Value& v);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);

  std::unique_ptr<Model> model;
  int pending = 0;
};
Napi::FunctionReference* NativeModel::constructor = nullptr;

std::vector<SeqInput> NativeModel::read_batch(Napi::Env env, const Napi::Value& v) {
  if (!v.IsArray()) type_error(env, "the batch must be an array of sequences");
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<SeqInput> out(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value item = arr.Get(i);
    if (!item.IsObject()) type_error(env, "batch[" + std::to_string(i) + "] must be an object");
    Napi::Object o = item.As<Napi::Object>();
    Napi::Value tokens = o.Get("tokens");
    if (!tokens.IsTypedArray() || tokens.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      type_error(env, "batch[" + std::to_string(i) + "].tokens must be an Int32Array");
    auto t = tokens.As<Napi::Int32Array>();
    out[i].tokens.assign(t.Data(), t.Data() + t.ElementLength());
    Napi::Value session = o.Get("session");
    if (session.IsObject()) {
      if (!session.As<Napi::Object>().InstanceOf(NativeSession::constructor->Value())) type_error(env, "batch[" + std::to_string(i) + "].session must be a NativeSession");
      NativeSession* s = NativeSession::Unwrap(session.As<Napi::Object>());
      if (s->model_ref.Value() != Value()) type_error(env, "batch[" + std::to_string(i) + "].session belongs to another model");
      s->check_idle(env);
      for (const auto& prev : out)
        if (prev.session == s) type_error(env, "the same session appears twice in one batch");
      out[i].session = s;
    }
    Napi::Value steer = o.Get("steer");
    if (steer.IsArray()) {
      Napi::Array sa = steer.As<Napi::Array>();
      for (uint32_t k = 0; k < sa.Length(); k++) {
        Napi::Array pair = sa.Get(k).As<Napi::Array>();
        const float alpha = pair.Get(1u).As<Napi::Number>().FloatValue();
        if (!std::isfinite(alpha))
          throw to_js_error(env, ErrorCode::SA_INVALID_ARGUMENT, "batch[" + std::to_string(i) + "]: steering alpha " + std::to_string(alpha) +
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
  }
  return out;
}

// One forward pass (or step) as a Promise.
class ForwardWorker : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, NativeModel* owner, std::vector<SeqInput> inputs, ForwardOptions opts, bool sample)
      : Napi::AsyncWorker(env), owner_(owner), inputs_(std::move(inputs)), opts_(opts), sample_(sample), deferred_(Napi::Promise::Deferred::New(env)) {
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
    if (!run_capturing([&] { run(); }, &failure_)) SetError(failure_.message);
  }

  void run() {
    std::vector<SeqRequest> batch(inputs_.size());
    for (size_t i = 0; i < inputs_.size(); i++) {
      batch[i].tokens = inputs_[i].tokens;
      batch[i].session = inputs_[i].session ? inputs_[i].session->session.get() : nullptr;
      batch[i].steer = inputs_[i].steer;
    }
    results_ = owner_->model->forward(batch, opts_);
    if (sample_) {
      const int32_t V = owner_->model->config().vocab;
      for (size_t i = 0; i < inputs_.size(); i++) {
        engine::Rng fallback;
        engine::Rng& rng = inputs_[i].session ? inputs_[i].session->session->rng() : fallback;
        const float* last = results_[i].logits.data() + results_[i].logits.size() - size_t(V);
        next_.push_back(engine::sample_token(last, V, inputs_[i].sampling, rng));
      }
    }
  }

  void release() {
    owner_->pending--;
    for (auto& in : inputs_)
      if (in.session) in.session->busy = false;
  }

  void OnOK() override {
    release();
    Napi::Env env = Env();
    if (sample_) {
      Napi::Int32Array next = Napi::Int32Array::New(env, next_.size());
      for (size_t i = 0; i < next_.size(); i++) next[i] = next_[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("tokens", next);
      deferred_.Resolve(o);
      return;
    }
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
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override {
    release();
    decorate_error(e.Value(), failure_);
    deferred_.Reject(e.Value());
  }

 private:
  NativeModel* owner_;
  Napi::ObjectReference owner_ref_;
  std::vector<Napi::ObjectReference> session_refs_;
  std::vector<SeqInput> inputs_;
  ForwardOptions opts_;
  bool sample_;
  Napi::Promise::Deferred deferred_;
  std::vector<SeqResult> results_;
  std::vector<int32_t> next_;
  NativeFailure failure_;
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
  auto* w = new ForwardWorker(env, this, std::move(inputs), opts, false);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value NativeModel::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  std::vector<SeqInput> inputs = read_batch(env, info[0]);
  ForwardOptions opts;
  opts.all_logits = false;
  auto* w = new ForwardWorker(env, this, std::move(inputs), opts, true);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, engine::DeviceOps* ops, engine::ModelConfig cfg, std::vector<engine::WeightSource> weights, bool f32)
      : Napi::AsyncWorker(env), ops_(ops), cfg_(std::move(cfg)), weights_(std::move(weights)), f32_(f32), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    const bool ok = run_capturing([&] {
      model_ = std::make_unique<Model>(ops_, cfg_, f32_);
      model_->load(weights_);
    }, &failure_, ErrorCode::SA_BAD_CHECKPOINT);
    if (!ok) SetError(failure_.message);
  }
  void OnOK() override {
    Napi::Object obj = NativeModel::constructor->New({});
    NativeModel::Unwrap(obj)->model = std::move(model_);
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
  auto* w = new LoadWorker(env, ops, std::move(cfg), std::move(weights), s.Get("weightsFloat32").ToBoolean().Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitModel(Napi::Env env, Napi::Object exports) {
  NativeSession::Init(env, exports);
  NativeModel::Init(env, exports);
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
}

}  // namespace sa::addon
