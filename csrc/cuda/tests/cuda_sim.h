#pragma once
// A CPU stand-in for the parts of the CUDA runtime and of CUDA C++ that the CUDA backend's kernels
// and host code use, for tests on machines without a GPU. It is selected by compiling the
// CUDA sources as C++ with -DSA_CUDA_SIM (csrc/cuda/common.cuh includes it instead of the CUDA
// headers); tests/engine_ops_check.cu shows the command.
//
// Model: "device" memory is host memory and every runtime call completes before it returns. A
// kernel launch runs its blocks one after another; each CUDA thread of a block is a fiber of the
// launching thread (or, with -DSA_CUDA_SIM_THREADS, an OS thread), so __syncthreads is a barrier of
// the block's threads and a warp shuffle is an exchange through a per-warp barrier. __shared__
// variables become function-local statics: as one block runs at a time, they are exactly the
// block's shared memory. Under AddressSanitizer this finds out-of-bounds accesses to global and
// shared memory; under ThreadSanitizer with -DSA_CUDA_SIM_THREADS, missing barriers.
// Limits: one-dimensional blocks whose size is a multiple of 32, full-warp shuffles only, and a
// kernel must not return early in some threads while others wait at __syncthreads.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
};
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76 };
constexpr unsigned cudaStreamNonBlocking = 1;
struct CUstream_st {};
using cudaStream_t = CUstream_st*;

namespace sa::sim {

inline std::mutex launch_mu;
inline thread_local cudaError_t last_error = cudaSuccess;

inline cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}

inline bool bad_configuration(dim3 grid, dim3 block, size_t smem) {
  if (block.y != 1 || block.z != 1 || block.x == 0 || block.x % 32 != 0 || block.x > 1024 || smem != 0 ||
      grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
    std::fprintf(stderr, "cuda_sim: unsupported launch configuration\n");
    fail(cudaErrorInvalidConfiguration);
    return true;
  }
  return false;
}

// Calls run() once per block of the grid, x fastest, with blockIdx set on the calling thread.
template <typename Run>
void each_block(dim3 grid, Run&& run) {
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++) {
        blockIdx = uint3{x, y, z};
        run();
      }
}

#if defined(SA_CUDA_SIM_THREADS)
// Each CUDA thread of a block is an OS thread: barriers are std::barrier (for ThreadSanitizer).
struct Launch {
  std::unique_ptr<std::barrier<>> block;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<uint64_t> slots;
};
inline Launch* current = nullptr;

template <typename Kernel, typename... Args>
cudaError_t launch(Kernel kernel, dim3 grid, dim3 block, size_t smem, Args&&... args) {
  if (bad_configuration(grid, block, smem)) return cudaErrorInvalidConfiguration;
  std::lock_guard<std::mutex> lock(launch_mu);
  Launch l;
  l.block = std::make_unique<std::barrier<>>(std::ptrdiff_t(block.x));
  for (unsigned w = 0; w < block.x / 32; w++) l.warps.push_back(std::make_unique<std::barrier<>>(32));
  l.slots.assign(block.x, 0);
  current = &l;
  const std::tuple<std::decay_t<Args>...> params(std::forward<Args>(args)...);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < block.x; t++) {
    threads.emplace_back([&, t] {
      threadIdx = uint3{t, 0, 0};
      blockDim = block;
      gridDim = grid;
      each_block(grid, [&] {
        std::apply([&](const auto&... p) { kernel(p...); }, params);
        l.block->arrive_and_wait();  // the block ends: its shared memory is free again
      });
    });
  }
  for (auto& th : threads) th.join();
  current = nullptr;
  return cudaSuccess;
}

inline void block_barrier() { current->block->arrive_and_wait(); }
inline void warp_barrier() { current->warps[threadIdx.x / 32]->arrive_and_wait(); }
#else
// Each CUDA thread of a block is a fiber (ucontext) of the launching thread. A scheduler resumes the
// runnable fibers in thread order, each until it waits at a barrier (its block's or its warp's) or
// ends, then releases every barrier that all its threads have reached; nothing runs in parallel.
enum class Wait { none, block, warp };
struct Fiber {
  ucontext_t context;
  Wait wait = Wait::none;
  bool done = false;
};
struct Launch {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  unsigned running = 0, at_block = 0;
  std::vector<unsigned> at_warp;
  std::vector<uint64_t> slots;
  std::function<void()> body;
};
inline Launch* current = nullptr;
constexpr size_t kFiberStack = size_t(256) << 10;

inline void fiber_main() {
  current->body();
  current->fibers[current->running].done = true;  // then back to the scheduler (uc_link)
}

inline void wait_at(Wait w) {
  Launch& l = *current;
  Fiber& f = l.fibers[l.running];
  f.wait = w;
  if (w == Wait::block) l.at_block++;
  else l.at_warp[l.running / 32]++;
  swapcontext(&f.context, &l.scheduler);
}

// Runs the current block to its end; false on a deadlock (threads that wait at a barrier that the
// others never reach).
inline bool run_block(Launch& l, std::vector<std::unique_ptr<char[]>>& stacks) {
  const unsigned n = unsigned(l.fibers.size());
  for (unsigned t = 0; t < n; t++) {
    Fiber& f = l.fibers[t];
    f.wait = Wait::none;
    f.done = false;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = stacks[t].get();
    f.context.uc_stack.ss_size = kFiberStack;
    f.context.uc_link = &l.scheduler;
    makecontext(&f.context, fiber_main, 0);
  }
  unsigned live = n;
  while (live > 0) {
    bool progress = false;
    for (unsigned t = 0; t < n; t++) {
      Fiber& f = l.fibers[t];
      if (f.done || f.wait != Wait::none) continue;
      l.running = t;
      threadIdx = uint3{t, 0, 0};
      swapcontext(&l.scheduler, &f.context);
      progress = true;
      if (f.done) live--;
    }
    if (l.at_block > 0 && l.at_block == live) {
      for (Fiber& f : l.fibers)
        if (f.wait == Wait::block) f.wait = Wait::none;
      l.at_block = 0;
      progress = true;
    }
    for (unsigned w = 0; w < l.at_warp.size(); w++) {
      if (l.at_warp[w] != 32) continue;
      for (unsigned t = w * 32; t < w * 32 + 32; t++) l.fibers[t].wait = Wait::none;
      l.at_warp[w] = 0;
      progress = true;
    }
    if (!progress) return false;
  }
  return true;
}

template <typename Kernel, typename... Args>
cudaError_t launch(Kernel kernel, dim3 grid, dim3 block, size_t smem, Args&&... args) {
  if (bad_configuration(grid, block, smem)) return cudaErrorInvalidConfiguration;
  std::lock_guard<std::mutex> lock(launch_mu);
  static std::vector<std::unique_ptr<char[]>> stacks;  // kept for the next launches
  while (stacks.size() < block.x) stacks.push_back(std::make_unique<char[]>(kFiberStack));
  Launch l;
  l.fibers.resize(block.x);
  l.at_warp.assign(block.x / 32, 0);
  l.slots.assign(block.x, 0);
  const std::tuple<std::decay_t<Args>...> params(std::forward<Args>(args)...);
  l.body = [&] { std::apply([&](const auto&... p) { kernel(p...); }, params); };
  current = &l;
  blockDim = block;
  gridDim = grid;
  each_block(grid, [&] {
    if (!run_block(l, stacks)) {
      std::fprintf(stderr, "cuda_sim: deadlock: threads wait at a barrier that others never reach\n");
      std::abort();
    }
  });
  current = nullptr;
  return cudaSuccess;
}

inline void block_barrier() { wait_at(Wait::block); }
inline void warp_barrier() { wait_at(Wait::warp); }
#endif

}  // namespace sa::sim

inline void __syncthreads() { sa::sim::block_barrier(); }

template <typename T>
T sim_shuffle(T v, unsigned src_lane_of_mine) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  sa::sim::Launch& l = *sa::sim::current;
  const unsigned t = threadIdx.x, warp = t / 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  l.slots[t] = bits;
  sa::sim::warp_barrier();
  bits = l.slots[warp * 32 + (src_lane_of_mine & 31)];
  sa::sim::warp_barrier();
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  if (mask != 0xffffffffu) std::abort();
  return sim_shuffle(v, (threadIdx.x & 31) ^ unsigned(lane_mask));
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane) {
  if (mask != 0xffffffffu) std::abort();
  return sim_shuffle(v, unsigned(src_lane));
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta) {
  if (mask != 0xffffffffu) std::abort();
  const unsigned lane = threadIdx.x & 31;
  return sim_shuffle(v, lane + delta < 32 ? lane + delta : lane);
}

// Atomic also where CUDA threads are OS threads.
template <typename T>
T atomicAdd(T* p, T v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

// Runtime API: host memory, synchronous copies.
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = sa::sim::last_error;
  sa::sim::last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "simulated CUDA error"; }
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    default: return "cudaErrorUnknown";
  }
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
struct cudaDeviceProp {
  char name[256];
  int major, minor;
  size_t totalGlobalMem;
};
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  *p = cudaDeviceProp{"CUDA simulator (tests/cuda_sim.h)", 9, 0, 0};
  return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  static CUstream_st stream;
  *s = &stream;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  return *p ? cudaSuccess : sa::sim::fail(cudaErrorMemoryAllocation);
}
inline cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = 0;
  *total_bytes = 0;
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind k) {
  return cudaMemcpyAsync(dst, src, bytes, k, nullptr);
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t) {
  std::memset(p, v, bytes);
  return cudaSuccess;
}
