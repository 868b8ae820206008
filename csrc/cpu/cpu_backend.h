#pragma once
// The CPU backend: one table (backend/backend_api.h) per kernel variant of cpu/gemm/, multithreaded
// over the shared thread pool.
#include <string>

#include "backend/backend_api.h"

namespace sa {

// The table of the variant cpu/cpu_dispatch.h chose; null with the reason in *error where
// SAFETY_ARITHMETIC_CPU names one that does not exist or that this CPU cannot run.
const sa_backend_table* cpu_backend(std::string* error);
// The baseline variant's table: runs on every CPU.
const sa_backend_table* cpu_baseline_backend();

}  // namespace sa
