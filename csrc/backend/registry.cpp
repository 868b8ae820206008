#include "backend/registry.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "backend/table_ops.h"
#include "cpu/cpu_backend.h"

namespace sa {
namespace {

struct CudaProbe {
  void* handle = nullptr;
  const sa_backend_table* table = nullptr;
  std::string reason;
  std::string library;
};

std::string own_directory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&own_directory), &info) == 0 || !info.dli_fname) return ".";
  std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

const CudaProbe& cuda_probe() {
  static std::once_flag once;
  static CudaProbe probe;
  std::call_once(once, [] {
    const char* override_path = std::getenv("SAFETY_ARITHMETIC_CUDA_LIBRARY");
    probe.library = override_path && *override_path ? override_path : own_directory() + "/libsafety_arithmetic_cuda.so";
    void* handle = dlopen(probe.library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* err = dlerror();
      probe.reason = std::string("the CUDA backend library could not be loaded (") + (err ? err : probe.library.c_str()) +
                     "); this build may have been made without nvcc";
      return;
    }
    probe.handle = handle;
    auto entry = reinterpret_cast<sa_backend_entry>(dlsym(handle, SA_BACKEND_ENTRY_SYMBOL));
    if (!entry) {
      probe.reason = probe.library + " does not export " SA_BACKEND_ENTRY_SYMBOL "; reinstall the package";
      return;
    }
    sa_error err{};
    const sa_backend_table* t = nullptr;
    if (entry(&t, &err) != SA_BACKEND_OK || !t) {
      const char* why = err.message;
      // Say plainly when the cause is that no NVIDIA driver is installed at all.
      void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
      if (!driver) {
        probe.reason = std::string("no NVIDIA driver is installed (libcuda.so.1 cannot be loaded), so there is no usable GPU; the CUDA runtime said: ") + why;
        return;
      }
      dlclose(driver);
      probe.reason = std::string("no usable CUDA device: ") + why;
      return;
    }
    const std::string mismatch = backend::incompatibility(*t);
    if (!mismatch.empty()) {
      probe.reason = probe.library + ": " + mismatch + "; reinstall the package";
      return;
    }
    probe.table = t;
  });
  return probe;
}

// The CUDA table for "cuda", and for "auto" where it is usable; null for "cpu" and for "auto" without
// CUDA. Sets error for a device that cannot be honoured.
const sa_backend_table* cuda_choice(const std::string& device, std::string* error) {
  if (device == "cpu") return nullptr;
  if (device == "cuda" || device == "auto") {
    const CudaProbe& p = cuda_probe();
    if (!p.table && device == "cuda") *error = "CUDA was requested (device \"cuda\") but cannot be used: " + p.reason;
    return p.table;
  }
  *error = "unknown device \"" + device + "\": use cpu, cuda or auto";
  return nullptr;
}

// HDR and the device report do not need the engine's kernel variant: where SAFETY_ARITHMETIC_CPU
// names one that cannot run, they use the baseline table (the engine refuses to start instead).
const sa_backend_table* cpu_table_for_hdr() {
  std::string ignored;
  const sa_backend_table* t = cpu_backend(&ignored);
  return t ? t : cpu_baseline_backend();
}

}  // namespace

const sa_backend_table* select_backend(const std::string& device, std::string* error) {
  error->clear();
  if (const sa_backend_table* t = cuda_choice(device, error)) return t;
  return error->empty() ? cpu_table_for_hdr() : nullptr;
}

void* cuda_symbol(const char* name, std::string* error) {
  const CudaProbe& p = cuda_probe();
  if (!p.table) {
    *error = "CUDA cannot be used: " + p.reason;
    return nullptr;
  }
  void* sym = dlsym(p.handle, name);
  if (!sym) *error = p.library + " does not export " + name + "; reinstall the package";
  return sym;
}

engine::DeviceOps* select_engine_ops(const std::string& device, std::string* error) {
  error->clear();
  const sa_backend_table* t = cuda_choice(device, error);
  if (!t && error->empty()) t = cpu_backend(error);
  return t ? backend::table_ops(t) : nullptr;
}

std::vector<BackendStatus> backend_statuses() {
  std::vector<BackendStatus> out;
  char buf[1024];
  sa_error err{};
  BackendStatus cpu;
  cpu.name = "cpu";
  cpu.available = true;
  if (cpu_table_for_hdr()->describe(buf, sizeof buf, &err) == SA_BACKEND_OK) cpu.description = buf;
  out.push_back(cpu);
  const CudaProbe& p = cuda_probe();
  BackendStatus cuda;
  cuda.name = "cuda";
  cuda.library = p.library;
  cuda.available = p.table != nullptr;
  cuda.reason = p.reason;
  if (p.table && p.table->describe(buf, sizeof buf, &err) == SA_BACKEND_OK) cuda.description = buf;
  out.push_back(cuda);
  return out;
}

}  // namespace sa
