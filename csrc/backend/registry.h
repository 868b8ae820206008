#pragma once
// Finds the backends: the CPU's tables are built in; the CUDA table comes from a shared library
// next to the addon, loaded on first use. Reports why a backend is unavailable.
#include <string>
#include <vector>

#include "backend/backend_api.h"
#include "engine/ops.h"

namespace sa {

struct BackendStatus {
  std::string name;
  bool available = false;
  std::string reason;       // why it is not available
  std::string description;  // JSON from the backend, when available
  std::string library;      // the file it was (or would be) loaded from
};

// The table for HDR on "cpu", "cuda" or "auto". Returns null and sets error when the choice cannot
// be honoured.
const sa_backend_table* select_backend(const std::string& device, std::string* error);
std::vector<BackendStatus> backend_statuses();
// A symbol of the CUDA backend library, or null with the reason in error.
void* cuda_symbol(const char* name, std::string* error);
// The engine's operations on the chosen backend ("cpu", "cuda", "auto").
engine::DeviceOps* select_engine_ops(const std::string& device, std::string* error);

}  // namespace sa
