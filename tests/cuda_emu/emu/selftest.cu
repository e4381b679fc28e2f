// Kernels that check the emulator itself (tests/cuda_emu/test_emu_runtime.py): each misuse of
// CUDA's synchronisation rules must be reported, and correct warp code must give CUDA's values.
// Compiled through the same rewrite as csrc/cuda; ops in their own namespace.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace {

// Warp sums of tid + 1 with a shuffle tree starting at `start` (16 is right, 8 is the classic bug).
__global__ void warp_tree(double* out, int start) {
  double x = threadIdx.x + 1;
  for (int o = start; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  if (threadIdx.x % 32 == 0) out[threadIdx.x / 32] = x;
}

// Each lane reads lane ^ 1, lane - 3 (up), lane 7 (idx); ballot of odd lanes.
__global__ void warp_ops(double* out) {
  const int lane = threadIdx.x;
  out[lane] = __shfl_xor_sync(0xffffffffu, double(lane), 1);
  out[32 + lane] = __shfl_up_sync(0xffffffffu, double(lane), 3);
  out[64 + lane] = __shfl_sync(0xffffffffu, double(lane), 7);
  out[96 + lane] = __shfl_down_sync(0xffffffffu, double(lane), 2, 8);  // segments of 8 lanes
  const unsigned b = __ballot_sync(0xffffffffu, lane % 2);
  if (lane == 0) out[128] = double(b);
  __syncwarp();
}

__global__ void sync_after_exit(double* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();
  out[0] = 1;
}

__global__ void divergent_sync(double* out) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[0] = 1;
}

__global__ void partial_warp_full_mask(double* out) {
  double x = __shfl_down_sync(0xffffffffu, double(threadIdx.x), 1);
  out[threadIdx.x] = x;
}

__global__ void exited_lane_in_mask(double* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, double(threadIdx.x), 1);
}

__global__ void deadlock(double* out) {
  double x = threadIdx.x;
  if (threadIdx.x % 32 != 0) x = __shfl_down_sync(0xffffffffu, x, 1);
  __syncthreads();
  out[threadIdx.x] = x;
}

__global__ void __launch_bounds__(128) bounded(double* out) { out[threadIdx.x] = 1; }

// Shared memory nobody wrote in this block reads as 0xff bytes (NaN), not a previous block's data.
__global__ void stale_shared(double* out) {
  __shared__ double s[2];
  if (blockIdx.x == 0 && threadIdx.x == 0) s[0] = 42;  // block 0 writes, block 1 must not see it
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

// Records the order in which blocks ran.
__global__ void block_order(double* out, int* counter) {
  if (threadIdx.x == 0) out[blockIdx.x + blockIdx.y * gridDim.x] = (*counter)++;
}

at::Tensor run(c10::string_view name) {
  auto out = at::full({160}, -1.0, at::TensorOptions().dtype(at::kDouble));
  double* o = out.mutable_data_ptr<double>();
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (name == "tree16") {
    warp_tree<<<1, 64, 0, stream>>>(o, 16);
  } else if (name == "tree8") {
    warp_tree<<<1, 64, 0, stream>>>(o, 8);
  } else if (name == "warp_ops") {
    warp_ops<<<1, 32, 0, stream>>>(o);
  } else if (name == "sync_after_exit") {
    sync_after_exit<<<2, 64, 0, stream>>>(o);
  } else if (name == "divergent_sync") {
    divergent_sync<<<1, 64, 0, stream>>>(o);
  } else if (name == "partial_warp_full_mask") {
    partial_warp_full_mask<<<1, 48, 0, stream>>>(o);
  } else if (name == "exited_lane_in_mask") {
    exited_lane_in_mask<<<1, 32, 0, stream>>>(o);
  } else if (name == "deadlock") {
    deadlock<<<1, 64, 0, stream>>>(o);
  } else if (name == "empty_grid") {
    bounded<<<0, 64, 0, stream>>>(o);
  } else if (name == "block_too_large") {
    bounded<<<1, 256, 0, stream>>>(o);
  } else if (name == "stale_shared") {
    stale_shared<<<2, 32, 0, stream>>>(o);
  } else if (name == "block_order") {
    int counter = 0;
    block_order<<<dim3(5, 2), 32, 0, stream>>>(o, &counter);
  } else {
    TORCH_CHECK(false, "unknown selftest ", name);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

// No tensor argument to dispatch on: a catch-all kernel.
TORCH_LIBRARY(fastgan_emu_selftest, m) { m.def("run(str name) -> Tensor", &run); }
