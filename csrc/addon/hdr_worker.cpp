// The HDR job as a Promise: the work runs on a libuv worker thread, progress comes back through
// AsyncProgressWorker (coalesced, so a fast job does not flood the JS thread), and a CancelToken
// lets an AbortSignal stop it between chunks.
#include "addon/hdr_worker.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "addon/js_convert.h"
#include "addon/native_errors.h"
#include "hdr/hdr_job.h"
#include "io/file_io.h"

namespace sa::addon {
namespace {

class CancelToken : public Napi::ObjectWrap<CancelToken> {
 public:
  static Napi::FunctionReference* constructor;
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "CancelToken", {InstanceMethod("cancel", &CancelToken::Cancel),
                                                         InstanceAccessor("cancelled", &CancelToken::Cancelled, nullptr)});
    constructor = new Napi::FunctionReference(Napi::Persistent(fn));
    exports.Set("CancelToken", fn);
  }
  explicit CancelToken(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CancelToken>(info), flag(std::make_shared<std::atomic<bool>>(false)) {}
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    flag->store(true);
    return info.Env().Undefined();
  }
  Napi::Value Cancelled(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), flag->load()); }
  std::shared_ptr<std::atomic<bool>> flag;
};
Napi::FunctionReference* CancelToken::constructor = nullptr;

struct ProgressMessage {
  char phase[16];
  double done, total;
};

class HdrWorker : public Napi::AsyncProgressWorker<ProgressMessage> {
 public:
  HdrWorker(Napi::Env env, HdrJobSpec spec, Napi::Function on_progress, std::shared_ptr<std::atomic<bool>> cancel)
      : Napi::AsyncProgressWorker<ProgressMessage>(env), spec_(std::move(spec)), cancel_(std::move(cancel)), deferred_(Napi::Promise::Deferred::New(env)) {
    if (!on_progress.IsEmpty()) progress_ = Napi::Persistent(on_progress);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute(const ExecutionProgress& progress) override {
    auto last = std::chrono::steady_clock::now() - std::chrono::seconds(1);
    const bool ok = run_capturing([&] {
      result_ = run_hdr_job(spec_, [&](const HdrProgress& p) {
        const auto now = std::chrono::steady_clock::now();
        if (progress_.IsEmpty() || (now - last < std::chrono::milliseconds(50) && p.done_bytes < p.total_bytes)) return;
        last = now;
        ProgressMessage m{};
        std::snprintf(m.phase, sizeof m.phase, "%s", p.phase);
        m.done = double(p.done_bytes);
        m.total = double(p.total_bytes);
        progress.Send(&m, 1);
      }, *cancel_);
    }, &failure_);
    if (!ok) SetError(failure_.message);
  }

  void OnProgress(const ProgressMessage* data, size_t count) override {
    if (progress_.IsEmpty() || count == 0) return;
    Napi::HandleScope scope(Env());
    const ProgressMessage& m = data[count - 1];
    progress_.Call({Napi::String::New(Env(), m.phase), Napi::Number::New(Env(), m.done), Napi::Number::New(Env(), m.total)});
  }

  void OnOK() override { deferred_.Resolve(hdr_result_to_js(Env(), result_)); }

  void OnError(const Napi::Error& e) override {
    decorate_error(e.Value(), failure_);
    deferred_.Reject(e.Value());
  }

 private:
  HdrJobSpec spec_;
  HdrResult result_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  Napi::FunctionReference progress_;
  Napi::Promise::Deferred deferred_;
  NativeFailure failure_;
};

}  // namespace

Napi::Value RunHdr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsObject() || !info[2].IsObject())
    throw Napi::TypeError::New(env, "runHdr(spec, onProgress, cancelToken)");
  HdrJobSpec spec;
  try {
    spec = hdr_spec_from_js(info[0].As<Napi::Object>());
  } catch (const Error& e) {
    throw to_js_error(env, NativeFailure{e.code, e.what(), e.details});
  } catch (const std::exception& e) {
    throw Napi::TypeError::New(env, e.what());
  }
  Napi::Object token_obj = info[2].As<Napi::Object>();
  if (!token_obj.InstanceOf(CancelToken::constructor->Value())) throw Napi::TypeError::New(env, "runHdr: the third argument must be a CancelToken");
  CancelToken* token = CancelToken::Unwrap(token_obj);
  Napi::Function on_progress = info[1].IsFunction() ? info[1].As<Napi::Function>() : Napi::Function();
  auto* worker = new HdrWorker(env, std::move(spec), on_progress, token->flag);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

void InitCancelToken(Napi::Env env, Napi::Object exports) { CancelToken::Init(env, exports); }

}  // namespace sa::addon
