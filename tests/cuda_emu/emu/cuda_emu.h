// CUDA emulation for running fastgan's csrc/cuda/*.cu on the CPU (tests/cuda_emu, see README.md).
//
// Force-included (g++ -include) before every rewritten .cu source. Model:
// - A launch runs its blocks one after another (order: FASTGAN_EMU_ORDER = forward | reverse |
//   random[:seed]); each block's threads are real OS threads from a pool, so the kernel's own
//   synchronisation is what orders them (and what ThreadSanitizer checks).
// - __syncthreads() is a block barrier that reports divergent call sites, a barrier reached after
//   some threads of the block exited, and deadlock (every live thread waiting, or a timeout).
// - Warp intrinsics (__shfl_*_sync, __syncwarp, __ballot_sync, __any/__all_sync) exchange values
//   through a per-warp slot array behind a warp barrier that checks the mask: it must contain the
//   calling lane and only lanes that exist and have not exited, and every lane of the mask must
//   reach the same call with the same mask.
// - __shared__ variables become function statics (the rewrite step does that; valid because
//   blocks run serially) and are filled with 0xff bytes (NaN for floating point) before every
//   block, so reading shared memory nobody wrote in this block shows.
// - Launch configuration is checked as the CUDA driver checks it (empty or too large grids and
//   blocks, __launch_bounds__, the 4 KiB classic kernel-argument limit, dynamic shared memory).
// Errors raise a RuntimeError from the launch that names the kernel, block, thread and the .cu line.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in variables: one copy per OS thread, set by the pool before the kernel body runs.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// CUDA's min/max overloads accept mixed arithmetic types (usual arithmetic conversions).
template <typename A, typename B, typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(b) < C(a) ? C(b) : C(a);
}
template <typename A, typename B, typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}

// ---- the CUDA runtime API the sources call ----
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxThreadsPerBlock = 1 };
struct CUstream_st;
using cudaStream_t = CUstream_st*;
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t e);

namespace cuemu {

struct Site {
  const char* file;
  int line;
  bool operator==(const Site& o) const { return line == o.line && std::strcmp(file, o.file) == 0; }
};
std::string where(Site s);

// Thrown inside a worker thread to unwind the kernel after an error was recorded.
struct Abort {};

// Block-level primitives (runtime.cpp).
void syncthreads(Site s);
enum class WarpOp { down, up, xor_, idx, sync, ballot, any, all };
// Deposits `bytes` bytes of `value` for the lane, waits for the lanes of `mask`, and copies the
// source lane's slot (chosen by op/arg/width) into `out`; `votes` gets the mask of lanes whose
// predicate (the first byte) is non-zero.
void warp_exchange(Site s, WarpOp op, unsigned mask, const void* value, size_t bytes, int arg, int width, void* out,
                   unsigned* votes);

template <typename T>
T shfl(Site s, WarpOp op, unsigned mask, T var, int arg, int width = warpSize) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16, "shuffle of an unsupported type");
  T out;
  warp_exchange(s, op, mask, &var, sizeof(T), arg, width, &out, nullptr);
  return out;
}
inline void syncwarp(Site s, unsigned mask = 0xffffffffu) {
  unsigned char p = 1, out = 0;
  warp_exchange(s, WarpOp::sync, mask, &p, 1, 0, warpSize, &out, nullptr);
}
inline unsigned vote(Site s, WarpOp op, unsigned mask, int pred) {
  unsigned char p = pred != 0, out = 0;
  unsigned votes = 0;
  warp_exchange(s, op, mask, &p, 1, 0, warpSize, &out, &votes);
  return votes;
}

// __shared__ variables register here once (on first use); the runtime poisons them before every block.
struct SharedReg {
  SharedReg(void* p, size_t bytes);
};
void* dynamic_smem();

// ---- launches ----
// One launch dimension as written at the call site (an int64 grid size must fit dim3's unsigned).
struct Dim {
  long long x = 1, y = 1, z = 1;
  template <typename I, typename = std::enable_if_t<std::is_integral_v<I>>>
  Dim(I v) : x(static_cast<long long>(v)) {}
  Dim(dim3 d) : x(d.x), y(d.y), z(d.z) {}
};
struct Config {
  Dim grid, block;
  long long smem;
  template <typename Stream = int>
  Config(Dim g, Dim b, long long s = 0, const Stream& = Stream()) : grid(g), block(b), smem(s) {}
};

struct LaunchInfo {
  Site site;
  const char* kernel;
  long long bounds;  // __launch_bounds__ maximum threads (1024 when not given)
  size_t arg_bytes;
};
void run(const LaunchInfo& info, const Config& cfg, const std::function<void()>& body);

template <typename... P, typename... A>
void launch(Site site, const char* name, long long bounds, const Config& cfg, void (*kernel)(P...), A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  // Arguments are converted to the parameter types and copied once, as the driver does.
  const std::tuple<std::decay_t<P>...> params(static_cast<std::decay_t<P>>(std::forward<A>(args))...);
  const size_t bytes = (size_t(0) + ... + sizeof(std::decay_t<P>));
  run({site, name, bounds, bytes}, cfg, [&]() { std::apply(kernel, params); });
}

// The device a CPU tensor stands for (cuda:0).
template <typename T>
int get_device(const T& t) {
  return std::max<int>(0, t.get_device());
}

}  // namespace cuemu

#define CUEMU_SITE (::cuemu::Site{__FILE__, __LINE__})
#define __syncthreads() ::cuemu::syncthreads(CUEMU_SITE)
#define __syncwarp(...) ::cuemu::syncwarp(CUEMU_SITE __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_down_sync(mask, var, ...) ::cuemu::shfl(CUEMU_SITE, ::cuemu::WarpOp::down, mask, var, __VA_ARGS__)
#define __shfl_up_sync(mask, var, ...) ::cuemu::shfl(CUEMU_SITE, ::cuemu::WarpOp::up, mask, var, __VA_ARGS__)
#define __shfl_xor_sync(mask, var, ...) ::cuemu::shfl(CUEMU_SITE, ::cuemu::WarpOp::xor_, mask, var, __VA_ARGS__)
#define __shfl_sync(mask, var, ...) ::cuemu::shfl(CUEMU_SITE, ::cuemu::WarpOp::idx, mask, var, __VA_ARGS__)
#define __ballot_sync(mask, pred) ::cuemu::vote(CUEMU_SITE, ::cuemu::WarpOp::ballot, mask, pred)
#define __any_sync(mask, pred) (::cuemu::vote(CUEMU_SITE, ::cuemu::WarpOp::any, mask, pred) != 0u)
#define __all_sync(mask, pred) (::cuemu::vote(CUEMU_SITE, ::cuemu::WarpOp::all, mask, pred) == (mask))
