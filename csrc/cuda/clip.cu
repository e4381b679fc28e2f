// CUDA kernel of weight clipping, multi-tensor-apply style (as apex / ATen MultiTensorApply): a
// list of any length is clamped in one launch per (device, dtype) group. The host builds a table
// of tensor addresses and (tensor, chunk) pairs passed by value as the kernel argument; a launch
// is split off only when the table is full. Each block clamps one chunk in one pass (16-byte
// vector loads/stores where aligned). No host synchronisation: CUDA-graph capturable.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/clamp.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <map>
#include <vector>

#include "../clip.h"
#include "vec.cuh"

namespace fastgan {
namespace {

constexpr int kThreads = 512;
constexpr int64_t kChunk = 65536;  // elements per block
// Table sizes as in ATen's MultiTensorApply for depth 1; sizeof(ClipTable) = 3360 bytes stays
// under the classic 4 KB kernel-argument limit.
constexpr int kMaxTensors = 110;
constexpr int kMaxBlocks = 320;

struct ClipTable {
  void* addr[kMaxTensors];
  int64_t numel[kMaxTensors];
  unsigned char block_tensor[kMaxBlocks];
  int block_chunk[kMaxBlocks];
};

// Compared in float (double): exact, and the stored bound is the bound rounded to scalar_t, as
// at::clamp_ rounds its Scalar bounds. Comparisons with NaN are false: NaN stays NaN.
template <typename scalar_t>
__device__ __forceinline__ scalar_t clamp1(scalar_t x, acc_type<scalar_t> lo, acc_type<scalar_t> hi) {
  const acc_type<scalar_t> v = static_cast<acc_type<scalar_t>>(x);
  if (v < lo) return static_cast<scalar_t>(lo);
  if (v > hi) return static_cast<scalar_t>(hi);
  return x;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) clip_chunks(ClipTable table, acc_type<scalar_t> lo, acc_type<scalar_t> hi) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  const int t = table.block_tensor[blockIdx.x];
  const int64_t start = int64_t(table.block_chunk[blockIdx.x]) * kChunk;
  scalar_t* p = static_cast<scalar_t*>(table.addr[t]) + start;
  const int64_t n = min(kChunk, table.numel[t] - start);
  int64_t vec_end = 0;
  // kChunk is a multiple of VEC, so every chunk of an aligned tensor is aligned
  if (reinterpret_cast<uintptr_t>(p) % 16 == 0) {
    vec_end = n / VEC * VEC;
    for (int64_t i = int64_t(threadIdx.x) * VEC; i < vec_end; i += int64_t(kThreads) * VEC) {
      Pack<scalar_t, VEC> x = *reinterpret_cast<const Pack<scalar_t, VEC>*>(p + i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) x.v[k] = clamp1(x.v[k], lo, hi);
      *reinterpret_cast<Pack<scalar_t, VEC>*>(p + i) = x;
    }
  }
  for (int64_t i = vec_end + threadIdx.x; i < n; i += kThreads) p[i] = clamp1(p[i], lo, hi);
}

template <typename scalar_t>
void clip_group(const std::vector<at::Tensor>& group, double lo_d, double hi_d) {
  using acc_t = acc_type<scalar_t>;
  const auto [lo_s, hi_s] = clip_bounds<scalar_t>(lo_d, hi_d);
  const acc_t lo = static_cast<acc_t>(lo_s), hi = static_cast<acc_t>(hi_s);
  c10::cuda::CUDAGuard guard(group.front().device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  ClipTable table;
  int nt = 0, nb = 0;
  for (const at::Tensor& t : group) {
    table.addr[nt] = t.data_ptr();
    table.numel[nt] = t.numel();
    ++nt;
    const int64_t chunks = (t.numel() + kChunk - 1) / kChunk;
    TORCH_CHECK(chunks <= INT32_MAX, "clip_weights_: tensor too large (", t.numel(), " elements)");
    for (int64_t c = 0; c < chunks; ++c) {
      table.block_tensor[nb] = static_cast<unsigned char>(nt - 1);
      table.block_chunk[nb] = static_cast<int>(c);
      ++nb;
      const bool last = c == chunks - 1;
      if (nb == kMaxBlocks || (last && nt == kMaxTensors)) {
        clip_chunks<scalar_t><<<nb, kThreads, 0, stream>>>(table, lo, hi);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        nb = 0;
        if (last) {
          nt = 0;
        } else {  // the current tensor continues in the next launch, as entry 0
          table.addr[0] = table.addr[nt - 1];
          table.numel[0] = table.numel[nt - 1];
          nt = 1;
        }
      }
    }
  }
  if (nb > 0) {
    clip_chunks<scalar_t><<<nb, kThreads, 0, stream>>>(table, lo, hi);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void clip_weights_cuda(at::TensorList tensors, double lo, double hi) {
  clip_check_args(tensors, lo, hi, c10::DeviceType::CUDA);
  std::map<std::pair<c10::DeviceIndex, at::ScalarType>, std::vector<at::Tensor>> groups;
  for (const at::Tensor& t : tensors) {
    if (t.numel() == 0) continue;
    if (clip_as_span(t)) {
      groups[{t.get_device(), t.scalar_type()}].push_back(t);
    } else {
      c10::cuda::CUDAGuard guard(t.device());
      at::clamp_(const_cast<at::Tensor&>(t), lo, hi);  // strided views
    }
  }
  for (const auto& [key, group] : groups) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, key.second, "clip_weights_cuda",
                                    [&] { clip_group<scalar_t>(group, lo, hi); });
  }
  clip_bump_versions(tensors);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) { m.impl("clip_weights_", &clip_weights_cuda); }

}  // namespace fastgan
