#pragma once
// A decoder-only transformer (Llama, Mistral, Qwen2 families) on one backend's DeviceOps:
// weights on the device, a forward pass over ragged batches with KV caches, capture of layer and
// MLP outputs, and a hook after each layer's MLP where steering runs.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "engine/ops.h"
#include "engine/sampling.h"

namespace sa::engine {

struct ModelConfig {
  int32_t vocab = 0, hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  float rms_eps = 1e-6f;
  std::vector<float> inv_freq;  // head_dim / 2 rotary frequencies, scaling already applied
  float attention_scaling = 1.f;
  int32_t sliding_window = 0;
  bool tie_embeddings = false;
};

struct WeightSource {
  std::string name;
  std::string file;
  uint64_t offset = 0;
  DType dtype = DType::F32;
  uint64_t numel = 0;
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
};

struct LayerWeights {
  Tensor in_norm, post_norm, q, k, v, o, gate, up, down, q_bias, k_bias, v_bias, o_bias, gate_bias, up_bias, down_bias;
};

class Session;

// One sequence of a forward call.
struct SeqRequest {
  Session* session = nullptr;  // keeps the KV cache across calls; null: a throwaway cache
  std::vector<int32_t> tokens;
  // Steering: (icv id, alpha) pairs for this sequence.
  std::vector<std::pair<int32_t, float>> steer;
  // With ForwardOptions::all_logits false: whether this sequence wants its last row's logits.
  bool logits = true;
};

// One sequence of a generation step.
struct StepRequest {
  Session* session = nullptr;  // null: a throwaway cache and a default-seeded generator
  std::vector<int32_t> tokens;
  std::vector<std::pair<int32_t, float>> steer;
  SamplingParams sampling;
  // False for a chunk that carries only part of a prompt: the cache grows, nothing is sampled and
  // the session's generator does not advance.
  bool sample = true;
};

// Memory held by the KV caches of one model's sessions, shared with the sessions so that a session
// may outlive its model.
struct KvAccount {
  std::atomic<int64_t> bytes{0};
  std::atomic<int64_t> sessions{0};
};

struct ForwardOptions {
  bool all_logits = true;     // logits of every new token, else of the last one
  bool capture_layer_out = false;
  bool capture_mlp_out = false;  // the MLP output as the hook left it
  bool capture_mlp_raw = false;  // the MLP output before the hook
};

struct SeqResult {
  std::vector<float> logits;     // [rows, vocab]
  std::vector<float> layer_out;  // [layers, n_new, hidden]
  std::vector<float> mlp_out;    // [layers, n_new, hidden]
  std::vector<float> mlp_raw;    // [layers, n_new, hidden]
};

class Model {
 public:
  // kv_dtype: how the KV cache holds keys and values (F32, or BF16/F16 where the backend reads them).
  // matmul_precision: how BF16 weight matrices are multiplied (ops.h), where the backend runs it.
  Model(DeviceOps* ops, ModelConfig cfg, bool weights_float32, DType kv_dtype = DType::F32,
        MatmulPrecision matmul_precision = MatmulPrecision::F32);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Loads the weights by name (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ...).
  void load(const std::vector<WeightSource>& sources);
  std::vector<SeqResult> forward(std::vector<SeqRequest>& batch, const ForwardOptions& opts);
  // A forward pass, then the next token of each sequence that samples (-1 for those that do not),
  // drawn with the sequence's session generator.
  std::vector<int32_t> step(std::vector<StepRequest>& batch);

  // Steering vectors: one [layers.size(), hidden] block; returns its id.
  int32_t add_icv(const std::vector<int32_t>& layers, const std::vector<float>& vectors);
  void remove_icv(int32_t id);

  const ModelConfig& config() const { return cfg_; }
  DeviceOps* ops() const { return ops_; }
  uint64_t weight_bytes() const { return weight_bytes_; }
  // Weights, steering vectors and the forward workspace, on the model's device.
  uint64_t resident_bytes() const { return weight_bytes_ + icv_bytes_.load() + ws_bytes_.load(); }
  DType kv_dtype() const { return kv_dtype_; }
  // KV-cache bytes per token of one sequence (keys and values of every layer).
  uint64_t kv_bytes_per_token() const {
    return 2ull * uint64_t(cfg_.layers) * uint64_t(cfg_.kv_heads) * uint64_t(cfg_.head_dim) * uint64_t(dtype_size(kv_dtype_));
  }
  const std::shared_ptr<KvAccount>& kv_account() const { return kv_account_; }

 private:
  struct Icv {
    std::vector<int32_t> rows_of_layer;  // layer -> row in data, or -1
    float* data = nullptr;               // device [n_rows, hidden]
    size_t bytes = 0;
  };
  void* device_matrix(const void* host, DType dt, int32_t n, int32_t k);
  void* device_copy(const void* host, size_t bytes);
  void ensure_workspace(int32_t rows);

  DeviceOps* ops_;
  ModelConfig cfg_;
  bool weights_float32_;
  DType kv_dtype_;
  MatmulPrecision matmul_precision_;
  Tensor embed_, final_norm_, lm_head_;
  std::vector<LayerWeights> layers_;
  std::vector<void*> owned_;
  std::vector<std::unique_ptr<Icv>> icvs_;
  uint64_t weight_bytes_ = 0;
  std::atomic<uint64_t> icv_bytes_{0}, ws_bytes_{0};
  std::shared_ptr<KvAccount> kv_account_ = std::make_shared<KvAccount>();
  std::mutex mu_;

  int32_t ws_rows_ = 0;
  float *x_ = nullptr, *h_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *att_ = nullptr, *o_ = nullptr,
        *gate_ = nullptr, *up_ = nullptr, *act_ = nullptr, *mlp_ = nullptr;
  std::vector<void*> ws_owned_;
};

// The KV cache of one sequence, and its sampling state.
class Session {
 public:
  // Holds only the backend and the cache's shape, so it may outlive its model. max_tokens > 0
  // bounds the cache: it never holds more, and never allocates room for more.
  explicit Session(const Model& model, int32_t max_tokens = 0);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  int32_t length() const { return length_; }
  void reset() { length_ = 0; }
  void reserve(int32_t tokens);
  void* k(int32_t layer) { return k_[size_t(layer)]; }
  void* v(int32_t layer) { return v_[size_t(layer)]; }
  // Where token t's keys (values) of one layer start in k(layer) (v(layer)).
  void* row(void* cache, int32_t t) const { return static_cast<char*>(cache) + size_t(t) * row_bytes_; }
  void advance(int32_t n) { length_ += n; }
  Rng& rng() { return rng_; }
  // Bytes of cache allocated now.
  uint64_t bytes() const { return uint64_t(capacity_) * row_bytes_ * 2ull * uint64_t(layers_); }
  // Frees the cache now; the session is empty (capacity 0) afterwards.
  void release();

 private:
  DeviceOps* ops_;
  std::shared_ptr<KvAccount> account_;
  int32_t layers_;
  size_t row_bytes_;
  int32_t max_tokens_;
  int32_t length_ = 0, capacity_ = 0;
  std::vector<void*> k_, v_;
  Rng rng_;
};

}  // namespace sa::engine
