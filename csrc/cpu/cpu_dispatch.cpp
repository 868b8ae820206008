// Runtime choice of the CPU kernel variant. Compiled for the baseline: nothing here executes an
// instruction that the chosen variant needs before the CPU and the OS have been checked for it
// (gcc's __builtin_cpu_supports also checks, through xgetbv, that the OS saves the AVX and
// AVX-512 registers).
#include "cpu/cpu_dispatch.h"

#include <cstdlib>
#include <vector>

namespace sa {
namespace {

struct Variant {
  const char* name;
  const char* needs;  // the instruction sets, as reported
  bool supported;
  std::string missing;  // the instruction sets this CPU lacks
  gemm::Kernel (*kernel)();
};

struct Feature {
  const char* name;
  bool present;
};

std::vector<Feature> detect_features() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return {
      {"sse2", bool(__builtin_cpu_supports("sse2"))},
      {"avx2", bool(__builtin_cpu_supports("avx2"))},
      {"fma", bool(__builtin_cpu_supports("fma"))},
      {"f16c", bool(__builtin_cpu_supports("f16c"))},
      {"avx512f", bool(__builtin_cpu_supports("avx512f"))},
      {"avx512bw", bool(__builtin_cpu_supports("avx512bw"))},
      {"avx512vl", bool(__builtin_cpu_supports("avx512vl"))},
      {"avx512bf16", bool(__builtin_cpu_supports("avx512bf16"))},
      {"avx512vnni", bool(__builtin_cpu_supports("avx512vnni"))},
  };
#else
  return {};
#endif
}

bool has(const std::vector<Feature>& features, const char* name) {
  for (const Feature& f : features)
    if (std::string(f.name) == name) return f.present;
  return false;
}

Variant make_variant(const char* name, const char* needs, const std::vector<const char*>& required,
                     const std::vector<Feature>& features, gemm::Kernel (*kernel)()) {
  Variant v{name, needs, true, "", kernel};
  for (const char* r : required) {
    if (has(features, r)) continue;
    v.supported = false;
    v.missing += (v.missing.empty() ? "" : ", ") + std::string(r);
  }
  return v;
}

struct Choice {
  std::vector<Feature> features;
  std::vector<Variant> variants;  // from the most portable to the fastest
  gemm::Kernel kernel{};
  std::string error;
  gemm::PairKernel pairs{};  // null unless the avx512 variant runs on a CPU with AVX512_BF16
  std::string pairs_missing;
};

void choose_pairs(Choice& c) {
  if (!c.kernel.name) return;
#if defined(__x86_64__) || defined(__i386__)
  if (std::string(c.kernel.name) == "avx512" && has(c.features, "avx512bf16")) {
    c.pairs = gemm::avx512_bf16_pair_kernel();
    return;
  }
#endif
  c.pairs_missing = std::string(c.kernel.name) != "avx512"
                        ? std::string("the ") + c.kernel.name + " kernel variant is in use; bf16 products need the avx512 variant on a CPU with AVX512_BF16"
                        : "this CPU (or its operating system) lacks AVX512_BF16";
}

std::string variant_names(const std::vector<Variant>& variants) {
  std::string out;
  for (size_t i = 0; i < variants.size(); i++) out += (i == 0 ? "" : i + 1 == variants.size() ? " or " : ", ") + std::string(variants[i].name);
  return out;
}

Choice choose() {
  Choice c;
  c.features = detect_features();
  c.variants.push_back({"baseline", "portable", true, "", &gemm::baseline_kernel});
#if defined(__x86_64__) || defined(__i386__)
  c.variants.push_back(make_variant("avx2", "AVX2, FMA, F16C", {"avx2", "fma", "f16c"}, c.features, &gemm::avx2_kernel));
  c.variants.push_back(make_variant("avx512", "AVX-512 F/BW/VL, FMA, F16C", {"avx512f", "avx512bw", "avx512vl", "fma", "f16c"},
                                    c.features, &gemm::avx512_kernel));
#endif
  const char* env = std::getenv("SAFETY_ARITHMETIC_CPU");
  const std::string asked = env ? env : "";
  if (asked.empty() || asked == "auto") {
    for (const Variant& v : c.variants)
      if (v.supported) c.kernel = v.kernel();
    return c;
  }
  for (const Variant& v : c.variants) {
    if (asked != v.name) continue;
    if (v.supported) c.kernel = v.kernel();
    else
      c.error = "SAFETY_ARITHMETIC_CPU=" + asked + " asks for the " + v.needs + " kernels, but this CPU (or its operating system) does not support " +
                v.missing + ". Set it to a variant this CPU runs, or leave it unset to use the best one.";
    return c;
  }
  c.error = "SAFETY_ARITHMETIC_CPU is \"" + asked + "\": not a CPU kernel variant of this build; use " + variant_names(c.variants) +
            " (or leave it unset to use the best one this CPU runs).";
  return c;
}

const Choice& choice() {
  static const Choice c = [] {
    Choice chosen = choose();
    choose_pairs(chosen);
    return chosen;
  }();
  return c;
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

}  // namespace

const gemm::Kernel* cpu_gemm_kernel(std::string* error) {
  const Choice& c = choice();
  if (c.kernel.block) return &c.kernel;
  if (error) *error = c.error;
  return nullptr;
}

const gemm::PairKernel* cpu_pair_kernel(std::string* why) {
  const Choice& c = choice();
  if (c.pairs.block) return &c.pairs;
  if (why) *why = c.kernel.name ? c.pairs_missing : c.error;
  return nullptr;
}

std::string cpu_dispatch_json_members() {
  const Choice& c = choice();
  std::string out = "\"kernel\":" + (c.kernel.name ? quoted(c.kernel.name) : std::string("null"));
  out += std::string(",\"bf16Products\":") + (c.pairs.block ? "true" : "false");
  if (!c.error.empty()) out += ",\"kernelError\":" + quoted(c.error);
  out += ",\"kernels\":[";
  for (size_t i = 0; i < c.variants.size(); i++) {
    const Variant& v = c.variants[i];
    out += std::string(i ? "," : "") + "{\"name\":" + quoted(v.name) + ",\"needs\":" + quoted(v.needs) +
           ",\"supported\":" + (v.supported ? "true" : "false");
    if (!v.supported) out += ",\"missing\":" + quoted(v.missing);
    out += "}";
  }
  out += "],\"cpuFeatures\":[";
  bool first = true;
  for (const Feature& f : c.features) {
    if (!f.present) continue;
    out += std::string(first ? "" : ",") + quoted(f.name);
    first = false;
  }
  return out + "]";
}

}  // namespace sa
