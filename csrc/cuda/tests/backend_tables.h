#pragma once
// The CUDA backend's table as the check programs take it: in the simulator build (-DSA_CUDA_SIM)
// from the entry point linked into the program; otherwise from the library at `library`, with
// dlopen, as the addon loads it (backend/registry.cpp). The CPU reference: sa::cpu_backend.
#include <dlfcn.h>

#include <string>

#include "backend/backend_api.h"
#include "backend/table_ops.h"
#include "cpu/cpu_backend.h"

// The table, or null with the reason in *why.
inline const sa_backend_table* cuda_table(const std::string& library, std::string* why) {
#if defined(SA_CUDA_SIM)
  (void)library;
  const sa_backend_entry entry = &sa_backend_entry_v1;
#else
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    *why = "cannot load " + library + ": " + dlerror();
    return nullptr;
  }
  const auto entry = reinterpret_cast<sa_backend_entry>(dlsym(handle, SA_BACKEND_ENTRY_SYMBOL));
  if (!entry) {
    *why = library + " does not export " SA_BACKEND_ENTRY_SYMBOL;
    return nullptr;
  }
#endif
  sa_error err{};
  const sa_backend_table* table = nullptr;
  if (entry(&table, &err) != SA_BACKEND_OK) {
    *why = err.message;
    return nullptr;
  }
  *why = sa::backend::incompatibility(*table);
  return why->empty() ? table : nullptr;
}
