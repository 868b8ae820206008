#pragma once
// Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling with a
// per-sequence seeded generator (the order transformers applies them in).
#include <cstdint>

namespace sa::engine {

struct SamplingParams {
  float temperature = 0.f;  // 0: greedy
  int32_t top_k = 0;        // 0: off
  float top_p = 1.f;        // 1: off
};

class Rng {
 public:
  explicit Rng(uint64_t seed = 0x9e3779b97f4a7c15ull) { reseed(seed); }
  void reseed(uint64_t seed);
  double uniform();  // [0, 1)

 private:
  uint64_t s_[4];
};

int32_t argmax(const float* logits, int32_t vocab);
int32_t sample_token(const float* logits, int32_t vocab, const SamplingParams& p, Rng& rng);

}  // namespace sa::engine
