// End-to-end check of the CUDA engine ops inside the real forward pass (csrc/engine/model.cpp),
// without Node: loads a small Llama-family checkpoint twice, on the CPU ops and on the CUDA ops,
// runs a steered ragged batch on both and compares logits, layer outputs and MLP outputs; then, on
// the CUDA ops alone, checks that each prompt alone gives the logits it gets inside the batch and
// that token-by-token decode gives the logits of prefill (both bit-identical by design). It does it
// with the weights as stored (float32 for the fixture) and rounded to bf16. Exit status 0 on success.
//
// On a machine with a GPU (the library and the static core library built by
// `node scripts/build-native.js`), as one command line:
//   g++ -std=c++17 -O2 -ffp-contract=off -Icsrc -x c++ csrc/cuda/tests/model_check.cu -x none
//     build/cmake/libsa_core.a -o /tmp/model_check -ldl -lpthread
//   /tmp/model_check test/fixtures/llama-tiny/model build/Release/libsafety_arithmetic_cuda.so
// Without a GPU, on the simulator of tests/cuda_sim.h: test/cuda-sim.test.ts runs it in `npm test`;
// by hand, the command of engine_ops_check.cu with this file instead of engine_ops_check.cu, and
// csrc/engine/model.cpp csrc/engine/sampling.cpp csrc/io/file_io.cpp added after -x none:
//   /tmp/model_sim test/fixtures/llama-tiny/model
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/table_ops.h"
#include "common/dtype.h"
#include "cuda/tests/backend_tables.h"
#include "engine/model.h"

namespace {

using namespace sa::engine;
using sa::DType;

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The number after "key": in a JSON text (first occurrence, at any depth), or fallback.
double json_number(const std::string& text, const std::string& key, double fallback) {
  const size_t k = text.find("\"" + key + "\"");
  if (k == std::string::npos) return fallback;
  const size_t colon = text.find(':', k);
  const char* start = text.c_str() + colon + 1;
  char* end = nullptr;
  const double v = std::strtod(start, &end);
  return end == start ? fallback : v;
}

bool json_true(const std::string& text, const std::string& key) {
  const size_t k = text.find("\"" + key + "\"");
  if (k == std::string::npos) return false;
  const size_t colon = text.find(':', k);
  return text.compare(text.find_first_not_of(" \t\r\n", colon + 1), 4, "true") == 0;
}

// The tensors of one safetensors file (a header of {"name": {"dtype", "shape", "data_offsets"}}).
std::vector<WeightSource> safetensors_sources(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string h(n, '\0');
  f.read(h.data(), std::streamsize(n));
  std::vector<WeightSource> out;
  size_t p = 0;
  while ((p = h.find('"', p)) != std::string::npos) {
    const size_t e = h.find('"', p + 1);
    const std::string name = h.substr(p + 1, e - p - 1);
    const size_t open = h.find('{', e), close = h.find('}', open);
    const std::string body = h.substr(open, close - open);
    p = close + 1;
    if (name == "__metadata__") continue;
    const size_t d = body.find("\"dtype\"");
    const size_t q1 = body.find('"', body.find(':', d) + 1), q2 = body.find('"', q1 + 1);
    const std::string dtype = body.substr(q1 + 1, q2 - q1 - 1);
    const size_t o = body.find('[', body.find("\"data_offsets\""));
    char* end = nullptr;
    const uint64_t a = std::strtoull(body.c_str() + o + 1, &end, 10);
    const uint64_t b = std::strtoull(end + 1, nullptr, 10);
    WeightSource s;
    s.name = name;
    s.file = path;
    s.offset = 8 + n + a;
    s.dtype = dtype == "F32" ? DType::F32 : dtype == "BF16" ? DType::BF16 : dtype == "F16" ? DType::F16 : DType::OTHER;
    s.numel = (b - a) / uint64_t(sa::dtype_size(s.dtype));
    out.push_back(s);
  }
  return out;
}

// The same tensors rounded to bf16, written to one raw file.
std::vector<WeightSource> as_bf16(const std::vector<WeightSource>& src, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::vector<WeightSource> res;
  uint64_t offset = 0;
  for (const auto& s : src) {
    std::vector<char> data(size_t(s.numel) * size_t(sa::dtype_size(s.dtype)));
    std::ifstream f(s.file, std::ios::binary);
    f.seekg(std::streamoff(s.offset));
    f.read(data.data(), std::streamsize(data.size()));
    std::vector<uint16_t> bf(size_t(s.numel));
    for (uint64_t i = 0; i < s.numel; i++) bf[size_t(i)] = sa::f32_to_bf16(sa::load_f32(data.data(), s.dtype, i));
    out.write(reinterpret_cast<const char*>(bf.data()), std::streamsize(bf.size() * 2));
    WeightSource t = s;
    t.file = path;
    t.offset = offset;
    t.dtype = DType::BF16;
    res.push_back(t);
    offset += s.numel * 2;
  }
  return res;
}

double max_rel(const std::vector<float>& got, const std::vector<float>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    if (std::isnan(got[i]) != std::isnan(ref[i])) return INFINITY;
    diff = std::fmax(diff, std::fabs(double(got[i]) - double(ref[i])));
    scale = std::fmax(scale, std::fabs(double(ref[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

int failures = 0, checks = 0;

void report(const std::string& what, double err, double tol) {
  const bool ok = err <= tol;
  checks++;
  failures += ok ? 0 : 1;
  std::printf("%-58s max rel err %-11.3e (tol %.0e)  %s\n", what.c_str(), err, tol, ok ? "PASS" : "FAIL");
}

void run(DeviceOps* cpu_ops, DeviceOps* gpu_ops, const ModelConfig& cfg, const std::vector<WeightSource>& src,
         const std::string& label) {
  Model cpu(cpu_ops, cfg, false), gpu(gpu_ops, cfg, false);
  cpu.load(src);
  gpu.load(src);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> icv(size_t(cfg.layers) * size_t(cfg.hidden));
  for (auto& v : icv) v = u(rng);
  std::vector<int32_t> all_layers;
  for (int32_t l = 0; l < cfg.layers; l++) all_layers.push_back(l);
  const int32_t id_cpu = cpu.add_icv(all_layers, icv), id_gpu = gpu.add_icv(all_layers, icv);

  std::vector<std::vector<int32_t>> prompts;
  for (int len : {5, 11, 19}) {
    std::vector<int32_t> t;
    for (int i = 0; i < len; i++) t.push_back(int32_t(rng() % uint32_t(cfg.vocab)));
    prompts.push_back(t);
  }
  auto batch = [&](int32_t icv_id) {
    std::vector<SeqRequest> b(prompts.size());
    for (size_t i = 0; i < prompts.size(); i++) b[i].tokens = prompts[i];
    b[1].steer = {{icv_id, 0.12f}};
    b[2].steer = {{icv_id, 0.5f}, {icv_id, -0.2f}};
    return b;
  };
  ForwardOptions opts;
  opts.capture_layer_out = opts.capture_mlp_out = true;
  auto bc = batch(id_cpu), bg = batch(id_gpu);
  const auto rc = cpu.forward(bc, opts);
  const auto rg = gpu.forward(bg, opts);
  for (size_t i = 0; i < prompts.size(); i++) {
    const std::string p = label + " prompt " + std::to_string(i) + " ";
    report(p + "logits (CUDA vs CPU)", max_rel(rg[i].logits, rc[i].logits), 1e-5);
    report(p + "layer outputs", max_rel(rg[i].layer_out, rc[i].layer_out), 1e-5);
    report(p + "MLP outputs (steered)", max_rel(rg[i].mlp_out, rc[i].mlp_out), 1e-5);
  }
  // Alone == inside the batch, on the CUDA ops.
  for (size_t i = 0; i < prompts.size(); i++) {
    auto one = batch(id_gpu);
    std::vector<SeqRequest> alone{one[i]};
    const auto r = gpu.forward(alone, opts);
    report(label + " prompt " + std::to_string(i) + " alone vs in the batch (CUDA)", max_rel(r[0].logits, rg[i].logits), 0);
  }
  // Token-by-token decode == prefill, on the CUDA ops.
  const size_t V = size_t(cfg.vocab);
  Session session(gpu);
  double worst = 0;
  ForwardOptions last;
  last.all_logits = false;
  for (size_t p = 0; p < prompts[2].size(); p++) {
    std::vector<SeqRequest> step(1);
    step[0].session = &session;
    step[0].tokens = {prompts[2][p]};
    step[0].steer = batch(id_gpu)[2].steer;
    const auto r = gpu.forward(step, last);
    const std::vector<float> ref(rg[2].logits.begin() + std::ptrdiff_t(p * V), rg[2].logits.begin() + std::ptrdiff_t((p + 1) * V));
    worst = std::fmax(worst, max_rel(r[0].logits, ref));
  }
  report(label + " decode token by token vs prefill (CUDA)", worst, 0);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "test/fixtures/llama-tiny/model";
  const std::string library = argc > 2 ? argv[2] : "build/Release/libsafety_arithmetic_cuda.so";
  std::string why;
  const sa_backend_table* cpu_table = sa::cpu_backend(&why);
  if (!cpu_table) {
    std::fprintf(stderr, "the CPU backend cannot run: %s\n", why.c_str());
    return 2;
  }
  const sa_backend_table* gpu_table = cuda_table(library, &why);
  if (!gpu_table) {
    std::fprintf(stderr, "the CUDA backend did not start: %s\n", why.c_str());
    return 2;
  }
  DeviceOps* cpu = sa::backend::table_ops(cpu_table);
  DeviceOps* gpu = sa::backend::table_ops(gpu_table);
  try {
    const std::string config = read_text(dir + "/config.json");
    ModelConfig cfg;
    cfg.vocab = int32_t(json_number(config, "vocab_size", 0));
    cfg.hidden = int32_t(json_number(config, "hidden_size", 0));
    cfg.intermediate = int32_t(json_number(config, "intermediate_size", 0));
    cfg.layers = int32_t(json_number(config, "num_hidden_layers", 0));
    cfg.heads = int32_t(json_number(config, "num_attention_heads", 0));
    cfg.kv_heads = int32_t(json_number(config, "num_key_value_heads", cfg.heads));
    cfg.head_dim = int32_t(json_number(config, "head_dim", cfg.heads ? cfg.hidden / cfg.heads : 0));
    cfg.rms_eps = float(json_number(config, "rms_norm_eps", 1e-6));
    cfg.sliding_window = 0;
    cfg.tie_embeddings = json_true(config, "tie_word_embeddings");
    const double theta = json_number(config, "rope_theta", 10000.0);
    for (int32_t i = 0; i < cfg.head_dim / 2; i++)
      cfg.inv_freq.push_back(float(1.0 / std::pow(theta, 2.0 * i / cfg.head_dim)));
    const auto src = safetensors_sources(dir + "/model.safetensors");
    run(cpu, gpu, cfg, src, "as stored:");
    const char* tmpdir = std::getenv("TMPDIR");
    const std::string tmp = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/sa_model_check_bf16." +
                            std::to_string(getpid()) + ".bin";
    run(cpu, gpu, cfg, as_bf16(src, tmp), "bf16:");
    std::remove(tmp.c_str());
  } catch (const std::exception& e) {
    std::printf("FAIL: exception: %s\n", e.what());
    return 1;
  }
  std::printf("\n%d checks, %d failed: %s\n", checks, failures, failures ? "FAIL" : "ALL PASS");
  return failures ? 1 : 0;
}
