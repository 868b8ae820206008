#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace sa::engine {

namespace {
uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Rng::reseed(uint64_t seed) {
  for (auto& v : s_) v = splitmix(seed);
}

double Rng::uniform() {  // xoshiro256**
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return double(result >> 11) * 0x1.0p-53;
}

int32_t argmax(const float* logits, int32_t vocab) {
  int32_t best = 0;
  for (int32_t i = 1; i < vocab; i++)
    if (logits[i] > logits[best]) best = i;
  return best;
}

int32_t sample_token(const float* logits, int32_t vocab, const SamplingParams& p, Rng& rng) {
  if (p.temperature <= 0.f) return argmax(logits, vocab);
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  int32_t keep = vocab;
  if (p.top_k > 0 && p.top_k < vocab) {
    std::partial_sort(idx.begin(), idx.begin() + p.top_k, idx.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    keep = p.top_k;
  } else {
    std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  }
  std::vector<double> prob(static_cast<size_t>(keep));
  const double mx = double(logits[idx[0]]) / p.temperature;
  double sum = 0;
  for (int32_t i = 0; i < keep; i++) {
    prob[size_t(i)] = std::exp(double(logits[idx[size_t(i)]]) / p.temperature - mx);
    sum += prob[size_t(i)];
  }
  if (p.top_p < 1.f) {
    // Keep the smallest prefix whose mass reaches top_p (at least one token).
    double cum = 0;
    int32_t cut = keep;
    for (int32_t i = 0; i < keep; i++) {
      cum += prob[size_t(i)] / sum;
      if (cum >= p.top_p) { cut = i + 1; break; }
    }
    keep = cut;
    sum = std::accumulate(prob.begin(), prob.begin() + keep, 0.0);
  }
  double u = rng.uniform() * sum;
  for (int32_t i = 0; i < keep; i++) {
    u -= prob[size_t(i)];
    if (u < 0) return idx[size_t(i)];
  }
  return idx[size_t(keep - 1)];
}

}  // namespace sa::engine
