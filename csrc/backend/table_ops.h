#pragma once
// The engine's DeviceOps (engine/ops.h) over a backend table (backend_api.h): each op calls the
// table's member and turns a failure code back into an exception (raise).
#include <string>

#include "backend/backend_api.h"
#include "engine/ops.h"

namespace sa::backend {

// Why the addon cannot use the table (an ABI it was not built for, or members missing); empty
// when it can.
std::string incompatibility(const sa_backend_table& table);

// The ops over table, made once per table and kept for the life of the process.
engine::DeviceOps* table_ops(const sa_backend_table* table);

// Throws what a failed table call reports: SA_BACKEND_INVALID_ARGUMENT and SA_BACKEND_UNSUPPORTED
// as std::invalid_argument (an sa::Error SA_INVALID_ARGUMENT naming the field, where err has one),
// any other code as std::runtime_error.
[[noreturn]] void raise(int code, const sa_error& err);

}  // namespace sa::backend
