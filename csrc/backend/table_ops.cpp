#include "backend/table_ops.h"

#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "common/error.h"

namespace sa::backend {
namespace {

// Runs fn(sa_error*), a table call, and throws what it reports.
template <class Fn>
void call(Fn&& fn) {
  sa_error err;
  err.code = SA_BACKEND_OK;
  err.message[0] = err.field[0] = '\0';
  const int code = fn(&err);
  if (code != SA_BACKEND_OK) raise(code, err);
}

class TableOps final : public engine::DeviceOps {
 public:
  explicit TableOps(const sa_backend_table* t) : t_(t) {}

  const char* name() const override { return t_->name; }

  void* alloc(size_t bytes) override {
    void* p = nullptr;
    call([&](sa_error* e) { return t_->alloc(bytes, &p, e); });
    return p;
  }
  void release(void* p) override { t_->release(p); }
  void upload(void* dst, const void* src, size_t bytes) override {
    call([&](sa_error* e) { return t_->upload(dst, src, bytes, e); });
  }
  void download(void* dst, const void* src, size_t bytes) override {
    call([&](sa_error* e) { return t_->download(dst, src, bytes, e); });
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    call([&](sa_error* e) { return t_->copy(dst, src, bytes, e); });
  }
  void synchronize() override {
    call([&](sa_error* e) { return t_->synchronize(e); });
  }
  void* upload_matrix(const void* src, DType dt, int32_t n, int32_t k, engine::MatmulPrecision precision) override {
    void* p = nullptr;
    call([&](sa_error* e) { return t_->upload_matrix(src, int32_t(dt), n, k, int32_t(precision), &p, e); });
    return p;
  }
  bool packs_matrices() const override { return t_->packs_matrices() != 0; }
  std::string matmul_precision_unsupported(engine::MatmulPrecision precision) const override {
    sa_error err;
    err.message[0] = '\0';
    if (t_->check_matmul_precision(int32_t(precision), &err) == SA_BACKEND_OK) return {};
    return err.message[0] ? err.message : "the backend gives no reason";
  }
  bool kv_dtype_supported(DType dt) const override { return t_->kv_dtype_supported(int32_t(dt)) != 0; }
  void store_kv(void* dst, DType dt, const float* src, size_t n) override {
    call([&](sa_error* e) { return t_->store_kv(dst, int32_t(dt), src, n, e); });
  }
  void embed(const int32_t* ids, int32_t rows, const void* table, DType dt, int32_t hidden, float* out) override {
    call([&](sa_error* e) { return t_->embed(ids, rows, table, int32_t(dt), hidden, out, e); });
  }
  void rmsnorm(const float* x, const void* w, DType dt, int32_t rows, int32_t hidden, float eps, float* out) override {
    call([&](sa_error* e) { return t_->rmsnorm(x, w, int32_t(dt), rows, hidden, eps, out, e); });
  }
  void matmul(const float* x, int32_t rows, int32_t k, const void* w, DType dt, int32_t n, const void* bias, DType bias_dt,
              float* out, engine::MatmulPrecision precision) override {
    call([&](sa_error* e) { return t_->matmul(x, rows, k, w, int32_t(dt), n, bias, int32_t(bias_dt), out, int32_t(precision), e); });
  }
  void rope(float* x, int32_t rows, int32_t heads, int32_t head_dim, const int32_t* positions, const float* inv_freq,
            float attention_scaling) override {
    call([&](sa_error* e) { return t_->rope(x, rows, heads, head_dim, positions, inv_freq, attention_scaling, e); });
  }
  void attention(const float* q, const engine::AttnSeq* seqs, int32_t n_seqs, const engine::AttnShape& shape, float* out) override {
    call([&](sa_error* e) { return t_->attention(q, seqs, n_seqs, &shape, out, e); });
  }
  void swiglu(const float* gate, const float* up, size_t n, float* out) override {
    call([&](sa_error* e) { return t_->swiglu(gate, up, n, out, e); });
  }
  void add(float* x, const float* y, size_t n) override {
    call([&](sa_error* e) { return t_->add(x, y, n, e); });
  }
  void steer(float* x, int32_t hidden, const engine::SteerSlice* slices, int32_t n_slices) override {
    call([&](sa_error* e) { return t_->steer(x, hidden, slices, n_slices, e); });
  }

 private:
  const sa_backend_table* t_;
};

}  // namespace

std::string incompatibility(const sa_backend_table& t) {
  if (t.abi_major != SA_BACKEND_ABI_MAJOR)
    return std::string("the ") + t.name + " backend has backend ABI " + std::to_string(t.abi_major) + "." +
           std::to_string(t.abi_minor) + ", the addon expects " + std::to_string(SA_BACKEND_ABI_MAJOR) + ".x";
  if (!SA_BACKEND_HAS(&t, steer))  // the last member of ABI 4.0
    return std::string("the ") + t.name + " backend's table is " + std::to_string(t.struct_size) +
           " bytes, too short for backend ABI " + std::to_string(SA_BACKEND_ABI_MAJOR) + "." + std::to_string(t.abi_minor);
  return {};
}

engine::DeviceOps* table_ops(const sa_backend_table* table) {
  static std::mutex mu;
  // Never destroyed: a model may outlive the static destructors.
  static auto* made = new std::map<const sa_backend_table*, std::unique_ptr<TableOps>>;
  std::lock_guard<std::mutex> lock(mu);
  auto& ops = (*made)[table];
  if (!ops) ops = std::make_unique<TableOps>(table);
  return ops.get();
}

void raise(int code, const sa_error& err) {
  const std::string message = err.message[0] ? err.message : "the backend failed with code " + std::to_string(code) + " and no message";
  if (code == SA_BACKEND_INVALID_ARGUMENT || code == SA_BACKEND_UNSUPPORTED) {
    if (err.field[0]) throw Error(ErrorCode::SA_INVALID_ARGUMENT, message, {"", "", err.field});
    throw std::invalid_argument(message);
  }
  throw std::runtime_error(message);
}

}  // namespace sa::backend
