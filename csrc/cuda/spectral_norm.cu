// CUDA kernels of spectral normalization.
//
// sn_power: ONE launch for the power iterations of all layers (up to kMaxLayers per launch; the
// layer table travels in the kernel arguments, so nothing is copied to the device and the launch
// is CUDA-graph capturable). One block per layer runs every iteration: warps compute W v row by
// row, threads compute W^T u column by column (coalesced for any dim, see csrc/sn_layout.h), and
// sigma = |s|^2 / max(|s|, eps) comes out of the W^T u pass without a third pass over W.
// sn_normalize: W / sigma, sigma read on the device (no host synchronisation).
// sn_normalize_backward: <g, W> in per-block partials, then a second kernel adds them in a fixed
// order (deterministic, no atomics) and writes dW = g / sigma - <g, W> / sigma^2 * u v^T.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../sn_layout.h"

namespace fastgan {
namespace {

constexpr int kThreads = 512;
constexpr int kMaxLayers = 32;  // 32 x 72 B of layer table: inside the classic 4 KB kernel-argument limit
constexpr int kElemThreads = 256;
constexpr int kMaxParts = 1024;  // most partial sums of <g, W>

template <typename T>
struct SnLayer {
  const T* w;
  const T* u_in;
  const T* v_in;
  T* u;  // results (and working vectors)
  T* v;
  T* sigma;
  int64_t A, h, K;
};

template <typename T>
struct SnBatch {
  SnLayer<T> layer[kMaxLayers];
};

template <typename T>
__device__ T warp_sum(T x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  return x;
}

// Sum over the block, returned to every thread; safe to call repeatedly.
template <typename T>
__device__ T block_sum(T x) {
  __shared__ T warp_sums[kThreads / 32];
  __shared__ T total;
  x = warp_sum(x);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    x = lane < int(blockDim.x / 32) ? warp_sums[lane] : T(0);
    x = warp_sum(x);
    if (lane == 0) total = x;
  }
  __syncthreads();
  T r = total;
  __syncthreads();
  return r;
}

template <typename T>
__device__ __forceinline__ int64_t mat_index(const SnLayer<T>& L, int64_t i, int64_t j) {
  const int64_t a = j / L.K;
  return (a * L.h + i) * L.K + (j - a * L.K);
}

// t_i = (W_mat v)_i, one warp per row; lane 0 of each row's warp gets the sum
template <typename T>
__device__ T row_dot(const SnLayer<T>& L, int64_t i, const T* v) {
  const int64_t cols = L.A * L.K;
  T t = 0;
  for (int64_t j = threadIdx.x % 32; j < cols; j += 32) t += L.w[mat_index(L, i, j)] * v[j];
  return warp_sum(t);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sn_power_kernel(SnBatch<T> batch, int64_t n_iter, T eps) {
  const SnLayer<T> L = batch.layer[blockIdx.x];
  const int64_t cols = L.A * L.K;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) L.v[j] = L.v_in[j];
  for (int64_t i = threadIdx.x; i < L.h; i += blockDim.x) L.u[i] = L.u_in[i];
  __syncthreads();
  if (n_iter == 0) {
    T acc = 0;
    for (int64_t i = warp; i < L.h; i += warps) {
      const T t = row_dot(L, i, L.v);
      if (lane == 0) acc += L.u[i] * t;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) *L.sigma = acc;
    return;
  }
  for (int64_t it = 0; it < n_iter; ++it) {
    // u <- W v / max(|W v|, eps)
    T ss = 0;
    for (int64_t i = warp; i < L.h; i += warps) {
      const T t = row_dot(L, i, L.v);
      if (lane == 0) {
        L.u[i] = t;
        ss += t * t;
      }
    }
    const T d = max(sqrt(block_sum(ss)), eps);  // block_sum synchronises: all of u is written
    for (int64_t i = threadIdx.x; i < L.h; i += blockDim.x) L.u[i] = L.u[i] / d;
    __syncthreads();
    // v <- W^T u / max(|W^T u|, eps), one thread per column
    T ss2 = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      T s = 0;
      for (int64_t i = 0; i < L.h; ++i) s += L.w[mat_index(L, i, j)] * L.u[i];
      L.v[j] = s;
      ss2 += s * s;
    }
    const T sq = block_sum(ss2);
    const T d2 = max(sqrt(sq), eps);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) L.v[j] = L.v[j] / d2;
    __syncthreads();
    if (threadIdx.x == 0) *L.sigma = sq / d2;  // u^T W v = s.v = |s|^2 / max(|s|, eps)
  }
}

at::ScalarType compute_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>> sn_power_cuda(
    at::TensorList weights, at::TensorList us, at::TensorList vs, at::IntArrayRef dims, int64_t n_iter, double eps) {
  sn_check_lists(weights, us, vs, dims);
  TORCH_CHECK(n_iter >= 0, "sn_power: n_iter must be >= 0, got ", n_iter);
  const size_t n = weights.size();
  std::vector<at::Tensor> sigmas(n), u_out(n), v_out(n), w_c(n), u_in(n), v_in(n);
  if (n == 0) return {sigmas, u_out, v_out};
  c10::cuda::CUDAGuard guard(weights[0].device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  // Layers are launched in groups of one compute dtype (float32 or float64).
  for (auto ct : {at::kFloat, at::kDouble}) {
    std::vector<size_t> idx;
    for (size_t l = 0; l < n; ++l)
      if (compute_type(weights[l].scalar_type()) == ct) idx.push_back(l);
    for (size_t l : idx) {
      TORCH_CHECK(weights[l].device() == weights[0].device(), "sn_power: all weights must be on one device");
      // no-ops (no copy, no launch) for contiguous weights and buffers of the compute dtype
      w_c[l] = weights[l].to(ct).contiguous();
      u_in[l] = us[l].to(ct).contiguous();
      v_in[l] = vs[l].to(ct).contiguous();
      u_out[l] = at::empty({u_in[l].numel()}, u_in[l].options());
      v_out[l] = at::empty({v_in[l].numel()}, v_in[l].options());
      sigmas[l] = at::empty({}, w_c[l].options());
    }
    AT_DISPATCH_FLOATING_TYPES(ct, "sn_power_cuda", [&] {
      for (size_t g0 = 0; g0 < idx.size(); g0 += kMaxLayers) {
        SnBatch<scalar_t> batch;
        const size_t g1 = std::min(idx.size(), g0 + kMaxLayers);
        for (size_t g = g0; g < g1; ++g) {
          const size_t l = idx[g];
          const SnMat m = sn_mat(w_c[l], dims[l]);
          batch.layer[g - g0] = {w_c[l].const_data_ptr<scalar_t>(), u_in[l].const_data_ptr<scalar_t>(),
                                 v_in[l].const_data_ptr<scalar_t>(), u_out[l].mutable_data_ptr<scalar_t>(),
                                 v_out[l].mutable_data_ptr<scalar_t>(), sigmas[l].mutable_data_ptr<scalar_t>(),
                                 m.A, m.h, m.K};
        }
        sn_power_kernel<scalar_t><<<int(g1 - g0), kThreads, 0, stream>>>(batch, n_iter, static_cast<scalar_t>(eps));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  }
  for (size_t l = 0; l < n; ++l) {
    u_out[l] = u_out[l].to(us[l].scalar_type());
    v_out[l] = v_out[l].to(vs[l].scalar_type());
  }
  return {sigmas, u_out, v_out};
}

template <typename scalar_t, typename acc_t>
__global__ void sn_scale_kernel(const scalar_t* __restrict__ w, scalar_t* __restrict__ out, const acc_t* sigma,
                                int64_t n) {
  const acc_t s = *sigma;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = static_cast<scalar_t>(static_cast<acc_t>(w[i]) / s);
}

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

int64_t elem_blocks(int64_t n) { return std::max<int64_t>(1, std::min<int64_t>((n + kElemThreads - 1) / kElemThreads, 65535)); }

at::Tensor sn_normalize_cuda(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v,
                             const at::Tensor& sigma, int64_t dim) {
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()), "sn_normalize: weight must be floating point, got ",
              weight.scalar_type());
  c10::cuda::CUDAGuard guard(weight.device());
  at::Tensor w = weight.is_non_overlapping_and_dense() ? weight : weight.contiguous();
  at::Tensor out = at::empty_like(w);
  const int64_t n = w.numel();
  if (n == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "sn_normalize_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    at::Tensor s = sigma.to(c10::CppTypeToScalarType<acc_t>::value);
    sn_scale_kernel<scalar_t, acc_t><<<elem_blocks(n), kElemThreads, 0, stream>>>(
        w.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), s.const_data_ptr<acc_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kElemThreads) sn_dot_partial(const scalar_t* g, const scalar_t* w, acc_t* part,
                                                               int64_t n, int64_t chunk) {
  const int64_t start = int64_t(blockIdx.x) * chunk, end = min(n, start + chunk);
  acc_t x = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x)
    x += static_cast<acc_t>(g[i]) * static_cast<acc_t>(w[i]);
  x = block_sum(x);
  if (threadIdx.x == 0) part[blockIdx.x] = x;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kElemThreads) sn_normalize_bwd_kernel(const scalar_t* g, const scalar_t* u, const scalar_t* v, const acc_t* sigma,
                                        const acc_t* part, int64_t parts, scalar_t* out, int64_t n, int64_t h,
                                        int64_t K) {
  acc_t gw = 0;  // the same fixed order in every block: deterministic
  for (int64_t p = threadIdx.x; p < parts; p += blockDim.x) gw += part[p];
  gw = block_sum(gw);
  const acc_t s = *sigma;
  const acc_t c = gw / (s * s);
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t a = e / (h * K), i = (e / K) % h, k = e % K;
    out[e] = static_cast<scalar_t>(static_cast<acc_t>(g[e]) / s -
                                   c * static_cast<acc_t>(u[i]) * static_cast<acc_t>(v[a * K + k]));
  }
}

at::Tensor sn_normalize_backward_cuda(const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& u,
                                      const at::Tensor& v, const at::Tensor& sigma, int64_t dim) {
  const SnMat m = sn_check_backward(grad, weight, u, v, dim);
  c10::cuda::CUDAGuard guard(weight.device());
  at::Tensor g = grad.to(weight.scalar_type()).contiguous(), w = weight.contiguous();
  at::Tensor out = at::empty(weight.sizes(), w.options());
  const int64_t n = w.numel();
  if (n == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "sn_normalize_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    const auto acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
    at::Tensor s = sigma.to(acc_dtype);
    at::Tensor uc = u.to(w.scalar_type()).contiguous(), vc = v.to(w.scalar_type()).contiguous();
    const int64_t chunk = std::max<int64_t>(kElemThreads * 4, (n + kMaxParts - 1) / kMaxParts);
    const int64_t parts = (n + chunk - 1) / chunk;
    at::Tensor part = at::empty({parts}, w.options().dtype(acc_dtype));
    sn_dot_partial<scalar_t, acc_t><<<parts, kElemThreads, 0, stream>>>(
        g.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), part.mutable_data_ptr<acc_t>(), n, chunk);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    sn_normalize_bwd_kernel<scalar_t, acc_t><<<elem_blocks(n), kElemThreads, 0, stream>>>(
        g.const_data_ptr<scalar_t>(), uc.const_data_ptr<scalar_t>(), vc.const_data_ptr<scalar_t>(),
        s.const_data_ptr<acc_t>(), part.const_data_ptr<acc_t>(), parts, out.mutable_data_ptr<scalar_t>(), n, m.h,
        m.K);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("sn_power", &sn_power_cuda);
  m.impl("sn_normalize", &sn_normalize_cuda);
  m.impl("sn_normalize_backward", &sn_normalize_backward_cuda);
}

}  // namespace fastgan
