// CUDA kernels of the per-sample gradient-norm penalty.
//
// Forward: gnp_partial (one block per (row, split)) reduces a chunk of a row to a partial sum of
// squares with 16-byte vector loads; gnp_finalize (one thread per row) adds the partials in a
// fixed order (deterministic, no atomics) and computes n_i and phi_i. Backward: gnp_scale writes
// c_i * g_i. Rows are split across blocks so few huge rows (B=2, 3x1024x1024) fill the GPU.
// No host synchronisation: CUDA-graph capturable.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../gnp_math.h"
#include "../rows.h"
#include "vec.cuh"

namespace fastgan {
namespace {

constexpr int kThreads = 256;

template <typename acc_t>
__device__ acc_t block_sum(acc_t x) {
  __shared__ acc_t warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  x = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : acc_t(0);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  return x;
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads) gnp_partial(const scalar_t* __restrict__ g, acc_type<scalar_t>* partial,
                                                        int64_t N, int64_t row_stride, int64_t splits, int64_t chunk) {
  using acc_t = acc_type<scalar_t>;
  const int64_t row = blockIdx.x / splits, split = blockIdx.x % splits;
  const scalar_t* base = g + row * row_stride;
  const int64_t start = split * chunk, end = min(N, start + chunk);
  acc_t s = 0;
  // start, end and base are multiples of VEC when VEC > 1 (checked on the host)
  for (int64_t i = start + int64_t(threadIdx.x) * VEC; i < end; i += int64_t(kThreads) * VEC) {
    Pack<scalar_t, VEC> p = *reinterpret_cast<const Pack<scalar_t, VEC>*>(base + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      acc_t x = static_cast<acc_t>(p.v[k]);
      s += x * x;
    }
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

template <typename acc_t>
__global__ void gnp_finalize(const acc_t* partial, acc_t* phi, acc_t* norms, int64_t B, int64_t splits,
                             acc_t t, acc_t p, bool one_sided) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= B) return;
  acc_t s = 0;
  for (int64_t k = 0; k < splits; ++k) s += partial[row * splits + k];
  acc_t n = ::sqrt(s);
  norms[row] = n;
  phi[row] = gnp_phi<acc_t>(s, n, t, p, one_sided);
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads) gnp_scale(const scalar_t* __restrict__ g, scalar_t* __restrict__ out,
                                                      const acc_type<scalar_t>* gphi, const acc_type<scalar_t>* norms,
                                                      int64_t N, int64_t row_stride, int64_t splits, int64_t chunk,
                                                      acc_type<scalar_t> t, acc_type<scalar_t> p, bool one_sided) {
  using acc_t = acc_type<scalar_t>;
  const int64_t row = blockIdx.x / splits, split = blockIdx.x % splits;
  const acc_t c = gnp_coef<acc_t>(gphi[row], norms[row], t, p, one_sided);
  const scalar_t* src = g + row * row_stride;
  scalar_t* dst = out + row * N;
  const int64_t start = split * chunk, end = min(N, start + chunk);
  for (int64_t i = start + int64_t(threadIdx.x) * VEC; i < end; i += int64_t(kThreads) * VEC) {
    Pack<scalar_t, VEC> x = *reinterpret_cast<const Pack<scalar_t, VEC>*>(src + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) x.v[k] = static_cast<scalar_t>(static_cast<acc_t>(x.v[k]) * c);
    *reinterpret_cast<Pack<scalar_t, VEC>*>(dst + i) = x;
  }
}

struct Plan {
  int64_t splits, chunk;
  bool vec;
};

// Split rows until about kTargetBlocks blocks run; a chunk is a multiple of one block-wide vector
// step. A fixed target, not one per SM count: the split fixes the summation order, so the sums do
// not depend on the GPU model (1024 blocks fill an H100/H200's 132 SMs several times over).
constexpr int64_t kTargetBlocks = 1024;
template <typename scalar_t>
Plan plan(const at::Tensor& rows, int64_t B, int64_t N, const void* out_ptr) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  const int64_t step = int64_t(kThreads) * VEC;
  const int64_t want = kTargetBlocks;
  int64_t splits = std::max<int64_t>(1, std::min((want + B - 1) / B, (N + step - 1) / step));
  // at least one step: rows of N == 0 elements (B > 0) would otherwise give chunk = 0 and a division by zero
  int64_t chunk = std::max<int64_t>(step, ((N + splits - 1) / splits + step - 1) / step * step);
  splits = std::max<int64_t>(1, (N + chunk - 1) / chunk);
  bool vec = N % VEC == 0 && rows.stride(0) % VEC == 0 &&
             reinterpret_cast<uintptr_t>(rows.const_data_ptr()) % 16 == 0 &&
             reinterpret_cast<uintptr_t>(out_ptr) % 16 == 0;
  return {splits, chunk, vec};
}

std::tuple<at::Tensor, at::Tensor> gnp_forward_cuda(const at::Tensor& grads_in, double target, double power,
                                                    bool one_sided) {
  check_grads(grads_in, "gnp_forward");
  c10::cuda::CUDAGuard guard(grads_in.device());
  at::Tensor grads = as_dense_rows(grads_in);
  const int64_t B = grads.size(0);
  const int64_t N = B == 0 ? 0 : grads.numel() / B;
  auto acc_dtype = grads.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor phi = at::empty({B}, grads.options().dtype(acc_dtype));
  at::Tensor norms = at::empty({B}, grads.options().dtype(acc_dtype));
  if (B == 0) return {phi, norms};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(), "gnp_forward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    Plan pl = plan<scalar_t>(grads, B, N, grads.const_data_ptr());
    at::Tensor partial = at::empty({B * pl.splits}, grads.options().dtype(acc_dtype));
    const int64_t blocks = B * pl.splits;
    TORCH_CHECK(blocks < (int64_t(1) << 31), "gnp_forward: too many rows");
    auto* g = grads.const_data_ptr<scalar_t>();
    auto* part = partial.mutable_data_ptr<acc_t>();
    if (pl.vec) {
      gnp_partial<scalar_t, 16 / sizeof(scalar_t)><<<blocks, kThreads, 0, stream>>>(g, part, N, grads.stride(0),
                                                                                   pl.splits, pl.chunk);
    } else {
      gnp_partial<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(g, part, N, grads.stride(0), pl.splits, pl.chunk);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    gnp_finalize<acc_t><<<(B + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        part, phi.mutable_data_ptr<acc_t>(), norms.mutable_data_ptr<acc_t>(), B, pl.splits, acc_t(target),
        acc_t(power), one_sided);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {phi, norms};
}

at::Tensor gnp_backward_cuda(const at::Tensor& grad_phi, const at::Tensor& grads_in, const at::Tensor& norms,
                             double target, double power, bool one_sided) {
  check_grads(grads_in, "gnp_backward");
  c10::cuda::CUDAGuard guard(grads_in.device());
  at::Tensor grads = as_dense_rows(grads_in);
  at::Tensor out = empty_like_rows(grads);
  const int64_t B = grads.size(0);
  const int64_t N = B == 0 ? 0 : grads.numel() / B;
  if (grads.numel() == 0) return out;
  TORCH_CHECK(grad_phi.numel() == B && norms.numel() == B, "gnp_backward: grad_phi and norms must have ", B,
              " elements");
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(), "gnp_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    auto acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
    at::Tensor gphi = grad_phi.to(acc_dtype).contiguous();
    at::Tensor nrm = norms.to(acc_dtype).contiguous();
    Plan pl = plan<scalar_t>(grads, B, N, out.const_data_ptr());
    const int64_t blocks = B * pl.splits;
    TORCH_CHECK(blocks < (int64_t(1) << 31), "gnp_backward: too many rows");
    auto args = std::make_tuple(grads.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                                gphi.const_data_ptr<acc_t>(), nrm.const_data_ptr<acc_t>(), N, grads.stride(0),
                                pl.splits, pl.chunk, acc_t(target), acc_t(power), one_sided);
    if (pl.vec) {
      std::apply([&](auto... a) { gnp_scale<scalar_t, 16 / sizeof(scalar_t)><<<blocks, kThreads, 0, stream>>>(a...); },
                 args);
    } else {
      std::apply([&](auto... a) { gnp_scale<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(a...); }, args);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("gnp_forward", &gnp_forward_cuda);
  m.impl("gnp_backward", &gnp_backward_cuda);
}

}  // namespace fastgan
