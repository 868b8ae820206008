#include "engine/model.h"

#include <cmath>
#include <cstring>
#include <map>
#include <stdexcept>

#include "common/error.h"
#include "io/file_io.h"

namespace sa::engine {

namespace {
size_t bytes_of(DType dt, uint64_t numel) { return size_t(numel) * size_t(dtype_size(dt)); }
// The names of LoadOptions.kvCacheDtype.
const char* kv_dtype_option(DType dt) { return dt == DType::F32 ? "f32" : dt == DType::BF16 ? "bf16" : "f16"; }
}  // namespace

Model::Model(DeviceOps* ops, ModelConfig cfg, bool weights_float32, DType kv_dtype, MatmulPrecision matmul_precision)
    : ops_(ops), cfg_(std::move(cfg)), weights_float32_(weights_float32), kv_dtype_(kv_dtype), matmul_precision_(matmul_precision) {
  const std::string precision_unsupported = ops_->matmul_precision_unsupported(matmul_precision_);
  if (!precision_unsupported.empty())
    throw Error(ErrorCode::SA_DEVICE_UNAVAILABLE, std::string("matmulPrecision \"bf16\" was asked for but the ") + ops_->name() +
                    " backend cannot run it: " + precision_unsupported + "; use matmulPrecision \"f32\" (the default) here",
                {"", "", "matmulPrecision"});
  if (!ops_->kv_dtype_supported(kv_dtype_))
    throw Error(ErrorCode::SA_INVALID_ARGUMENT, std::string("the ") + ops_->name() + " backend cannot keep the KV cache in " + kv_dtype_option(kv_dtype_) +
                    "; use kvCacheDtype \"f32\" on this device", {"", "", "kvCacheDtype"});
  if (cfg_.heads <= 0 || cfg_.kv_heads <= 0 || cfg_.heads % cfg_.kv_heads != 0)
    throw std::invalid_argument("num_attention_heads must be a positive multiple of num_key_value_heads");
  if (int32_t(cfg_.inv_freq.size()) * 2 != cfg_.head_dim) throw std::invalid_argument("rotary frequencies must number head_dim / 2");
  layers_.resize(size_t(cfg_.layers));
}

Model::~Model() {
  for (auto& icv : icvs_)
    if (icv) ops_->release(icv->data);
  for (void* p : ws_owned_) ops_->release(p);
  for (void* p : owned_) ops_->release(p);
}

void* Model::device_copy(const void* host, size_t bytes) {
  void* d = ops_->alloc(bytes);
  owned_.push_back(d);
  ops_->upload(d, host, bytes);
  weight_bytes_ += bytes;
  return d;
}

void* Model::device_matrix(const void* host, DType dt, int32_t n, int32_t k) {
  void* d = ops_->upload_matrix(host, dt, n, k, matmul_precision_);
  owned_.push_back(d);
  weight_bytes_ += size_t(n) * size_t(k) * size_t(dtype_size(dt));
  return d;
}

void Model::load(const std::vector<WeightSource>& sources) {
  std::map<std::string, const WeightSource*> by_name;
  for (const auto& s : sources) by_name[s.name] = &s;
  std::map<std::string, std::unique_ptr<InputFile>> files;
  std::vector<char> host;
  std::vector<float> converted;

  // A matrix ([n, k]: n > 0) goes to the device in the layout matmul takes.
  auto fetch = [&](const std::string& name, uint64_t expect_numel, bool required, int32_t n = 0) -> Tensor {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      if (required) throw Error(ErrorCode::SA_BAD_CHECKPOINT, "the checkpoint has no tensor \"" + name + "\"; the model is incomplete or not of a supported architecture", {"", name});
      return Tensor{};
    }
    const WeightSource& s = *it->second;
    if (s.numel != expect_numel)
      throw Error(ErrorCode::SA_BAD_CHECKPOINT, s.file + ": tensor \"" + name + "\" has " + std::to_string(s.numel) + " elements; the config implies " + std::to_string(expect_numel) +
                  "; config.json does not describe these weights", {s.file, name});
    auto& f = files[s.file];
    if (!f) f = std::make_unique<InputFile>(s.file);
    const size_t bytes = bytes_of(s.dtype, s.numel);
    host.resize(bytes);
    f->read(host.data(), bytes, s.offset);
    const void* data = host.data();
    DType dt = s.dtype;
    if (weights_float32_ && s.dtype != DType::F32) {
      converted.resize(size_t(s.numel));
      for (uint64_t i = 0; i < s.numel; i++) converted[size_t(i)] = load_f32(host.data(), s.dtype, i);
      data = converted.data();
      dt = DType::F32;
    }
    if (n > 0) return Tensor{device_matrix(data, dt, n, int32_t(s.numel / uint64_t(n))), dt};
    return Tensor{device_copy(data, bytes_of(dt, s.numel)), dt};
  };

  const uint64_t H = uint64_t(cfg_.hidden), I = uint64_t(cfg_.intermediate), V = uint64_t(cfg_.vocab);
  const uint64_t QD = uint64_t(cfg_.heads) * uint64_t(cfg_.head_dim), KD = uint64_t(cfg_.kv_heads) * uint64_t(cfg_.head_dim);
  const int32_t Hn = cfg_.hidden, In = cfg_.intermediate, Vn = cfg_.vocab;
  const int32_t QDn = cfg_.heads * cfg_.head_dim, KDn = cfg_.kv_heads * cfg_.head_dim;
  embed_ = fetch("model.embed_tokens.weight", V * H, true);
  final_norm_ = fetch("model.norm.weight", H, true);
  if (!cfg_.tie_embeddings) lm_head_ = fetch("lm_head.weight", V * H, true, Vn);
  else if (ops_->packs_matrices()) lm_head_ = fetch("model.embed_tokens.weight", V * H, true, Vn);  // a packed copy for matmul
  else lm_head_ = embed_;
  for (int32_t l = 0; l < cfg_.layers; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& w = layers_[size_t(l)];
    w.in_norm = fetch(p + "input_layernorm.weight", H, true);
    w.post_norm = fetch(p + "post_attention_layernorm.weight", H, true);
    w.q = fetch(p + "self_attn.q_proj.weight", QD * H, true, QDn);
    w.k = fetch(p + "self_attn.k_proj.weight", KD * H, true, KDn);
    w.v = fetch(p + "self_attn.v_proj.weight", KD * H, true, KDn);
    w.o = fetch(p + "self_attn.o_proj.weight", H * QD, true, Hn);
    w.q_bias = fetch(p + "self_attn.q_proj.bias", QD, false);
    w.k_bias = fetch(p + "self_attn.k_proj.bias", KD, false);
    w.v_bias = fetch(p + "self_attn.v_proj.bias", KD, false);
    w.o_bias = fetch(p + "self_attn.o_proj.bias", H, false);
    w.gate = fetch(p + "mlp.gate_proj.weight", I * H, true, In);
    w.up = fetch(p + "mlp.up_proj.weight", I * H, true, In);
    w.down = fetch(p + "mlp.down_proj.weight", H * I, true, Hn);
    w.gate_bias = fetch(p + "mlp.gate_proj.bias", I, false);
    w.up_bias = fetch(p + "mlp.up_proj.bias", I, false);
    w.down_bias = fetch(p + "mlp.down_proj.bias", H, false);
  }
  ops_->synchronize();
}

void Model::ensure_workspace(int32_t rows) {
  if (rows <= ws_rows_) return;
  for (void* p : ws_owned_) ops_->release(p);
  ws_owned_.clear();
  ws_bytes_ = 0;
  auto a = [&](size_t floats) {
    void* p = ops_->alloc(floats * 4);
    ws_owned_.push_back(p);
    ws_bytes_ += floats * 4;
    return static_cast<float*>(p);
  };
  const size_t R = size_t(rows), H = size_t(cfg_.hidden), I = size_t(cfg_.intermediate);
  const size_t QD = size_t(cfg_.heads) * size_t(cfg_.head_dim), KD = size_t(cfg_.kv_heads) * size_t(cfg_.head_dim);
  x_ = a(R * H); h_ = a(R * H); q_ = a(R * QD); k_ = a(R * KD); v_ = a(R * KD); att_ = a(R * QD); o_ = a(R * H);
  gate_ = a(R * I); up_ = a(R * I); act_ = a(R * I); mlp_ = a(R * H);
  ws_rows_ = rows;
}

int32_t Model::add_icv(const std::vector<int32_t>& layers, const std::vector<float>& vectors) {
  std::lock_guard<std::mutex> lock(mu_);
  if (vectors.size() != layers.size() * size_t(cfg_.hidden)) throw std::invalid_argument("ICV size does not match its layers x hidden size");
  for (size_t j = 0; j < vectors.size(); j++) {
    if (std::isfinite(vectors[j])) continue;
    const size_t row = j / size_t(cfg_.hidden);
    throw Error(ErrorCode::SA_INVALID_ARGUMENT,
                "steering vector row " + std::to_string(row) + " (layer " + std::to_string(layers[row]) + ") holds a non-finite value (NaN or infinity) at column " +
                    std::to_string(j % size_t(cfg_.hidden)) + "; steer with finite vectors only (recompute the ICV)",
                {"", "", "vectors"});
  }
  auto icv = std::make_unique<Icv>();
  icv->rows_of_layer.assign(size_t(cfg_.layers), -1);
  for (size_t i = 0; i < layers.size(); i++) {
    if (layers[i] < 0 || layers[i] >= cfg_.layers) throw std::invalid_argument("ICV layer " + std::to_string(layers[i]) + " does not exist");
    icv->rows_of_layer[size_t(layers[i])] = int32_t(i);
  }
  icv->data = static_cast<float*>(ops_->alloc(vectors.size() * 4));
  icv->bytes = vectors.size() * 4;
  ops_->upload(icv->data, vectors.data(), vectors.size() * 4);
  icv_bytes_ += icv->bytes;
  icvs_.push_back(std::move(icv));
  return int32_t(icvs_.size() - 1);
}

void Model::remove_icv(int32_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (id < 0 || size_t(id) >= icvs_.size() || !icvs_[size_t(id)]) return;
  ops_->release(icvs_[size_t(id)]->data);
  icv_bytes_ -= icvs_[size_t(id)]->bytes;
  icvs_[size_t(id)].reset();
}

std::vector<SeqResult> Model::forward(std::vector<SeqRequest>& batch, const ForwardOptions& opts) {
  std::lock_guard<std::mutex> lock(mu_);
  const int32_t H = cfg_.hidden, I = cfg_.intermediate, V = cfg_.vocab, L = cfg_.layers;
  const int32_t QD = cfg_.heads * cfg_.head_dim, KD = cfg_.kv_heads * cfg_.head_dim;

  std::vector<std::unique_ptr<Session>> temporary;
  std::vector<int32_t> ids, positions, offsets;
  for (auto& s : batch) {
    if (s.tokens.empty()) throw std::invalid_argument("a sequence in the batch has no tokens");
    if (!s.session) {
      temporary.push_back(std::make_unique<Session>(*this));
      s.session = temporary.back().get();
    }
    for (int32_t t : s.tokens)
      if (t < 0 || t >= V) throw std::invalid_argument("token id " + std::to_string(t) + " is outside the vocabulary (0.." + std::to_string(V - 1) + ")");
    s.session->reserve(s.session->length() + int32_t(s.tokens.size()));
    offsets.push_back(int32_t(ids.size()));
    for (size_t i = 0; i < s.tokens.size(); i++) {
      ids.push_back(s.tokens[i]);
      positions.push_back(s.session->length() + int32_t(i));
    }
  }
  const int32_t R = int32_t(ids.size());
  ensure_workspace(R);

  std::vector<SeqResult> results(batch.size());
  for (size_t b = 0; b < batch.size(); b++) {
    const size_t n = batch[b].tokens.size();
    if (opts.capture_layer_out) results[b].layer_out.resize(size_t(L) * n * size_t(H));
    if (opts.capture_mlp_out) results[b].mlp_out.resize(size_t(L) * n * size_t(H));
    if (opts.capture_mlp_raw) results[b].mlp_raw.resize(size_t(L) * n * size_t(H));
  }
  auto capture = [&](const float* src, std::vector<float> SeqResult::*field, int32_t layer) {
    for (size_t b = 0; b < batch.size(); b++) {
      const size_t n = batch[b].tokens.size();
      ops_->download((results[b].*field).data() + size_t(layer) * n * size_t(H), src + size_t(offsets[b]) * size_t(H), n * size_t(H) * 4);
    }
  };

  ops_->embed(ids.data(), R, embed_.data, embed_.dtype, H, x_);
  AttnShape shape{cfg_.heads, cfg_.kv_heads, cfg_.head_dim, cfg_.sliding_window, 1.0f / std::sqrt(float(cfg_.head_dim))};
  std::vector<AttnSeq> seqs(batch.size());
  std::vector<SteerSlice> slices;
  for (int32_t l = 0; l < L; l++) {
    const LayerWeights& w = layers_[size_t(l)];
    ops_->rmsnorm(x_, w.in_norm.data, w.in_norm.dtype, R, H, cfg_.rms_eps, h_);
    ops_->matmul(h_, R, H, w.q.data, w.q.dtype, QD, w.q_bias.data, w.q_bias.dtype, q_, matmul_precision_);
    ops_->matmul(h_, R, H, w.k.data, w.k.dtype, KD, w.k_bias.data, w.k_bias.dtype, k_, matmul_precision_);
    ops_->matmul(h_, R, H, w.v.data, w.v.dtype, KD, w.v_bias.data, w.v_bias.dtype, v_, matmul_precision_);
    ops_->rope(q_, R, cfg_.heads, cfg_.head_dim, positions.data(), cfg_.inv_freq.data(), cfg_.attention_scaling);
    ops_->rope(k_, R, cfg_.kv_heads, cfg_.head_dim, positions.data(), cfg_.inv_freq.data(), cfg_.attention_scaling);
    for (size_t b = 0; b < batch.size(); b++) {
      Session* s = batch[b].session;
      const int32_t n = int32_t(batch[b].tokens.size());
      ops_->store_kv(s->row(s->k(l), s->length()), kv_dtype_, k_ + size_t(offsets[b]) * size_t(KD), size_t(n) * size_t(KD));
      ops_->store_kv(s->row(s->v(l), s->length()), kv_dtype_, v_ + size_t(offsets[b]) * size_t(KD), size_t(n) * size_t(KD));
      seqs[b] = AttnSeq{offsets[b], n, s->length(), s->k(l), s->v(l), int32_t(kv_dtype_)};
    }
    ops_->attention(q_, seqs.data(), int32_t(seqs.size()), shape, att_);
    ops_->matmul(att_, R, QD, w.o.data, w.o.dtype, H, w.o_bias.data, w.o_bias.dtype, o_, matmul_precision_);
    ops_->add(x_, o_, size_t(R) * size_t(H));
    ops_->rmsnorm(x_, w.post_norm.data, w.post_norm.dtype, R, H, cfg_.rms_eps, h_);
    ops_->matmul(h_, R, H, w.gate.data, w.gate.dtype, I, w.gate_bias.data, w.gate_bias.dtype, gate_, matmul_precision_);
    ops_->matmul(h_, R, H, w.up.data, w.up.dtype, I, w.up_bias.data, w.up_bias.dtype, up_, matmul_precision_);
    ops_->swiglu(gate_, up_, size_t(R) * size_t(I), act_);
    ops_->matmul(act_, R, I, w.down.data, w.down.dtype, H, w.down_bias.data, w.down_bias.dtype, mlp_, matmul_precision_);
    // Hook point: the MLP output, before the residual add.
    if (opts.capture_mlp_raw) capture(mlp_, &SeqResult::mlp_raw, l);
    slices.clear();
    for (size_t b = 0; b < batch.size(); b++) {
      SteerSlice sl{};
      sl.row_offset = offsets[b];
      sl.rows = int32_t(batch[b].tokens.size());
      for (const auto& [id, alpha] : batch[b].steer) {
        if (alpha == 0.f) continue;
        if (id < 0 || size_t(id) >= icvs_.size() || !icvs_[size_t(id)]) throw std::invalid_argument("unknown steering vector id " + std::to_string(id));
        const Icv& icv = *icvs_[size_t(id)];
        const int32_t row = icv.rows_of_layer[size_t(l)];
        if (row < 0) continue;
        if (sl.n == kMaxSteerVectors) throw std::invalid_argument("at most " + std::to_string(kMaxSteerVectors) + " steering vectors per sequence");
        sl.vectors[sl.n] = icv.data + size_t(row) * size_t(H);
        sl.alphas[sl.n] = alpha;
        sl.n++;
      }
      if (sl.n > 0) slices.push_back(sl);
    }
    if (!slices.empty()) ops_->steer(mlp_, H, slices.data(), int32_t(slices.size()));
    if (opts.capture_mlp_out) capture(mlp_, &SeqResult::mlp_out, l);
    ops_->add(x_, mlp_, size_t(R) * size_t(H));
    if (opts.capture_layer_out) capture(x_, &SeqResult::layer_out, l);
  }

  // Logits: all new rows, or the last row of each sequence.
  std::vector<int32_t> rows_of_seq;
  int32_t out_rows = 0;
  if (opts.all_logits) {
    out_rows = R;
    ops_->rmsnorm(x_, final_norm_.data, final_norm_.dtype, R, H, cfg_.rms_eps, h_);
  } else {
    rows_of_seq.assign(batch.size(), -1);
    for (size_t b = 0; b < batch.size(); b++) {
      if (!batch[b].logits) continue;
      const int32_t last = offsets[b] + int32_t(batch[b].tokens.size()) - 1;
      ops_->copy(o_ + size_t(out_rows) * size_t(H), x_ + size_t(last) * size_t(H), size_t(H) * 4);
      rows_of_seq[b] = out_rows++;
    }
    if (out_rows > 0) ops_->rmsnorm(o_, final_norm_.data, final_norm_.dtype, out_rows, H, cfg_.rms_eps, h_);
  }
  // The logits need a buffer of rows x vocab, which can exceed the workspace.
  float* logits = out_rows > 0 ? static_cast<float*>(ops_->alloc(size_t(out_rows) * size_t(V) * 4)) : nullptr;
  try {
    if (out_rows > 0) ops_->matmul(h_, out_rows, H, lm_head_.data, lm_head_.dtype, V, nullptr, DType::F32, logits, matmul_precision_);
    for (size_t b = 0; b < batch.size(); b++) {
      if (!opts.all_logits && rows_of_seq[b] < 0) continue;
      const size_t n = opts.all_logits ? batch[b].tokens.size() : 1;
      const size_t first = opts.all_logits ? size_t(offsets[b]) : size_t(rows_of_seq[b]);
      results[b].logits.resize(n * size_t(V));
      ops_->download(results[b].logits.data(), logits + first * size_t(V), n * size_t(V) * 4);
    }
    ops_->synchronize();
  } catch (...) {
    if (logits) ops_->release(logits);
    throw;
  }
  if (logits) ops_->release(logits);
  for (auto& s : batch) s.session->advance(int32_t(s.tokens.size()));
  for (auto& s : batch)
    for (auto& t : temporary)
      if (s.session == t.get()) s.session = nullptr;
  return results;
}

std::vector<int32_t> Model::step(std::vector<StepRequest>& batch) {
  std::vector<SeqRequest> seqs(batch.size());
  for (size_t i = 0; i < batch.size(); i++) {
    seqs[i].session = batch[i].session;
    seqs[i].tokens = batch[i].tokens;
    seqs[i].steer = batch[i].steer;
    seqs[i].logits = batch[i].sample;
  }
  ForwardOptions opts;
  opts.all_logits = false;
  const std::vector<SeqResult> results = forward(seqs, opts);
  std::vector<int32_t> next(batch.size(), -1);
  for (size_t i = 0; i < batch.size(); i++) {
    if (!batch[i].sample) continue;
    Rng fallback;
    Rng& rng = batch[i].session ? batch[i].session->rng() : fallback;
    next[i] = sample_token(results[i].logits.data(), cfg_.vocab, batch[i].sampling, rng);
  }
  return next;
}

Session::Session(const Model& model, int32_t max_tokens)
    : ops_(model.ops()),
      account_(model.kv_account()),
      layers_(model.config().layers),
      row_bytes_(size_t(model.config().kv_heads) * size_t(model.config().head_dim) * size_t(dtype_size(model.kv_dtype()))),
      max_tokens_(max_tokens) {
  k_.assign(size_t(layers_), nullptr);
  v_.assign(size_t(layers_), nullptr);
  account_->sessions++;
}

Session::~Session() {
  release();
  account_->sessions--;
}

void Session::release() {
  for (auto* vec : {&k_, &v_})
    for (void*& p : *vec) {
      if (p) ops_->release(p);
      p = nullptr;
    }
  account_->bytes -= int64_t(bytes());
  capacity_ = 0;
  length_ = 0;
}

void Session::reserve(int32_t tokens) {
  if (tokens <= capacity_) return;
  if (max_tokens_ > 0 && tokens > max_tokens_)
    throw Error(ErrorCode::SA_INVALID_ARGUMENT,
                "the sequence needs " + std::to_string(tokens) + " tokens of KV cache; its session was created for at most " + std::to_string(max_tokens_) +
                    "; create the session with room for the prompt and every token to generate",
                {"", "", "tokens"});
  int64_t cap = capacity_ > 0 ? capacity_ : 64;
  while (cap < tokens) cap *= 2;
  if (max_tokens_ > 0 && cap > max_tokens_) cap = max_tokens_;
  const uint64_t before = bytes();
  for (int32_t l = 0; l < layers_; l++) {
    for (auto* vec : {&k_, &v_}) {
      void* fresh = ops_->alloc(size_t(cap) * row_bytes_);
      void*& old = (*vec)[size_t(l)];
      if (old) {
        ops_->copy(fresh, old, size_t(length_) * row_bytes_);
        ops_->release(old);
      }
      old = fresh;
    }
  }
  capacity_ = int32_t(cap);
  account_->bytes += int64_t(bytes()) - int64_t(before);
}

}  // namespace sa::engine
