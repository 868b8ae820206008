#pragma once
// The choice of the CPU kernel variant (cpu/gemm/), made once, at the first use: the best that this
// CPU and its OS run, or the one that SAFETY_ARITHMETIC_CPU (baseline, avx2, avx512) names.
// cpu_backend.h hands out the backend table of the chosen variant.
#include <string>

#include "cpu/gemm/gemm.h"

namespace sa {

// The chosen kernels, or null with the reason in *error when SAFETY_ARITHMETIC_CPU names a variant
// that does not exist or that this CPU cannot run (never a silent fallback).
const gemm::Kernel* cpu_gemm_kernel(std::string* error);
// The bf16 dot-product kernels (gemm.h's pair layout), or null with the reason in *why.
const gemm::PairKernel* cpu_pair_kernel(std::string* why);
// JSON members (no braces) for the CPU backend's description: "kernel" (the chosen variant, or
// null), "kernelError" (when the choice failed), "kernels" (each variant and whether this CPU runs
// it, or why not), "bf16Products" (whether the bf16 matmul precision runs) and "cpuFeatures" (the
// instruction sets found).
std::string cpu_dispatch_json_members();

}  // namespace sa
