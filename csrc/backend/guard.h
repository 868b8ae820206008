#pragma once
// For the implementations of the backend table (backend_api.h): C++ code behind a C function.
// guarded() runs it and turns whatever it throws into an SA_BACKEND_* code and the caller's
// sa_error, so that no exception crosses the table. Code that knows the cause throws Failure with
// its code; std::invalid_argument is SA_BACKEND_INVALID_ARGUMENT, std::bad_alloc
// SA_BACKEND_OUT_OF_MEMORY, anything else SA_BACKEND_INTERNAL.
#include <cstdio>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "backend/backend_api.h"

namespace sa::backend {

struct Failure : std::runtime_error {
  Failure(int32_t code, const std::string& message, std::string field = {})
      : std::runtime_error(message), code(code), field(std::move(field)) {}
  int32_t code;
  std::string field;
};

// Fills err (when given) and returns code.
inline int fail(sa_error* err, int32_t code, const char* message, const char* field = "") {
  if (err) {
    err->code = code;
    std::snprintf(err->message, sizeof err->message, "%s", message);
    std::snprintf(err->field, sizeof err->field, "%s", field);
  }
  return code;
}

template <class Fn>
int guarded(sa_error* err, Fn&& fn) noexcept {
  try {
    std::forward<Fn>(fn)();
    return SA_BACKEND_OK;
  } catch (const Failure& e) {
    return fail(err, e.code, e.what(), e.field.c_str());
  } catch (const std::invalid_argument& e) {
    return fail(err, SA_BACKEND_INVALID_ARGUMENT, e.what());
  } catch (const std::bad_alloc&) {
    return fail(err, SA_BACKEND_OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception& e) {
    return fail(err, SA_BACKEND_INTERNAL, e.what());
  } catch (...) {
    return fail(err, SA_BACKEND_INTERNAL, "unknown exception inside the backend");
  }
}

}  // namespace sa::backend
