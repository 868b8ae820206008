#include "backend/registry.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "cpu/cpu_backend.h"
#include "cpu/cpu_dispatch.h"
#include "cpu/engine_ops.h"

namespace sa {
namespace {

struct CudaProbe {
  void* handle = nullptr;
  const sa_backend* backend = nullptr;
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
    auto entry = reinterpret_cast<sa_cuda_backend_entry>(dlsym(handle, SA_CUDA_ENTRY_SYMBOL));
    if (!entry) {
      probe.reason = probe.library + " does not export " SA_CUDA_ENTRY_SYMBOL "; reinstall the package";
      return;
    }
    char why[512] = {0};
    const sa_backend* b = entry(why, sizeof why);
    if (!b) {
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
    if (b->abi_version != SA_BACKEND_ABI_VERSION) {
      probe.reason = probe.library + " has backend ABI " + std::to_string(b->abi_version) + ", the addon expects " +
                     std::to_string(SA_BACKEND_ABI_VERSION) + "; reinstall the package";
      return;
    }
    probe.backend = b;
  });
  return probe;
}

}  // namespace

const sa_backend* select_backend(const std::string& device, std::string* error) {
  if (device == "cpu") return cpu_backend();
  if (device == "cuda" || device == "auto") {
    const CudaProbe& p = cuda_probe();
    if (p.backend) return p.backend;
    if (device == "auto") return cpu_backend();
    *error = "CUDA was requested (device \"cuda\") but cannot be used: " + p.reason;
    return nullptr;
  }
  *error = "unknown device \"" + device + "\": use cpu, cuda or auto";
  return nullptr;
}

void* cuda_symbol(const char* name, std::string* error) {
  const CudaProbe& p = cuda_probe();
  if (!p.backend) {
    *error = "CUDA cannot be used: " + p.reason;
    return nullptr;
  }
  void* sym = dlsym(p.handle, name);
  if (!sym) *error = p.library + " does not export " + name + "; reinstall the package";
  return sym;
}

engine::DeviceOps* select_engine_ops(const std::string& device, std::string* error) {
  const sa_backend* b = select_backend(device, error);
  if (!b) return nullptr;
  if (std::string(b->name) == "cpu") return cpu_gemm_kernel(error) ? cpu_engine_ops() : nullptr;
  using Entry = engine::DeviceOps* (*)(int32_t abi, char* why, size_t cap);
  auto entry = reinterpret_cast<Entry>(dlsym(cuda_probe().handle, SA_CUDA_ENGINE_SYMBOL));
  if (!entry) {
    *error = "the CUDA backend library does not provide the engine (" SA_CUDA_ENGINE_SYMBOL "); reinstall the package";
    return nullptr;
  }
  char why[512] = {0};
  engine::DeviceOps* ops = entry(SA_ENGINE_OPS_ABI, why, sizeof why);
  if (!ops) *error = std::string("the CUDA engine cannot start: ") + why;
  return ops;
}

std::vector<BackendStatus> backend_statuses() {
  std::vector<BackendStatus> out;
  char buf[1024];
  BackendStatus cpu;
  cpu.name = "cpu";
  cpu.available = true;
  if (cpu_backend()->describe(buf, sizeof buf) == 0) cpu.description = buf;
  out.push_back(cpu);
  const CudaProbe& p = cuda_probe();
  BackendStatus cuda;
  cuda.name = "cuda";
  cuda.library = p.library;
  cuda.available = p.backend != nullptr;
  cuda.reason = p.reason;
  if (p.backend && p.backend->describe(buf, sizeof buf) == 0) cuda.description = buf;
  out.push_back(cuda);
  return out;
}

}  // namespace sa
