// How the spectral-norm kernels (CPU and CUDA) address the matrix W_mat of a weight W.
//
// torch views W as W_mat = W.permute(dim, <other dims>).flatten(1), of shape (h, A*K) with
// A = prod(size[:dim]), h = size[dim], K = prod(size[dim+1:]). For a contiguous W that is
// W_mat[i, a*K + k] = W[a*h*K + i*K + k]: A blocks of h rows of K contiguous elements, so every
// dim (0 for Linear/Conv, 1 for ConvTranspose) is read in place, without the permuted copy torch makes.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace fastgan {

struct SnMat {
  int64_t A, h, K;
  int64_t cols() const { return A * K; }
};

inline SnMat sn_mat(const at::Tensor& w, int64_t dim) {
  TORCH_CHECK(w.dim() >= 2, "spectral norm: weight must have at least 2 dimensions, got ", w.dim());
  TORCH_CHECK(dim >= 0 && dim < w.dim(), "spectral norm: dim ", dim, " out of range for a ", w.dim(), "-d weight");
  SnMat m{1, w.size(dim), 1};
  for (int64_t d = 0; d < dim; ++d) m.A *= w.size(d);
  for (int64_t d = dim + 1; d < w.dim(); ++d) m.K *= w.size(d);
  return m;
}

// Checks shared by the sn_power kernels: one u (h) and v (A*K) per weight, all floating point.
inline void sn_check_lists(at::TensorList weights, at::TensorList us, at::TensorList vs, at::IntArrayRef dims) {
  const size_t n = weights.size();
  TORCH_CHECK(us.size() == n && vs.size() == n && dims.size() == n,
              "sn_power: weights, us, vs and dims must have the same length, got ", n, ", ", us.size(), ", ",
              vs.size(), ", ", dims.size());
  for (size_t l = 0; l < n; ++l) {
    const auto& w = weights[l];
    TORCH_CHECK(at::isFloatingType(w.scalar_type()), "sn_power: weight ", l, " must be floating point, got ",
                w.scalar_type());
    SnMat m = sn_mat(w, dims[l]);
    TORCH_CHECK(us[l].dim() == 1 && us[l].numel() == m.h && vs[l].dim() == 1 && vs[l].numel() == m.cols(),
                "sn_power: layer ", l, ": u must have shape (", m.h, ",) and v (", m.cols(), ",), got ",
                us[l].sizes(), " and ", vs[l].sizes());
    TORCH_CHECK(us[l].device() == w.device() && vs[l].device() == w.device(),
                "sn_power: layer ", l, ": u and v must be on the weight's device ", w.device());
    TORCH_CHECK(at::isFloatingType(us[l].scalar_type()) && at::isFloatingType(vs[l].scalar_type()),
                "sn_power: layer ", l, ": u and v must be floating point");
  }
}

inline SnMat sn_check_backward(const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& u,
                               const at::Tensor& v, int64_t dim) {
  TORCH_CHECK(grad.sizes() == weight.sizes(), "sn_normalize_backward: grad has shape ", grad.sizes(),
              ", weight ", weight.sizes());
  const SnMat m = sn_mat(weight, dim);
  TORCH_CHECK(u.numel() == m.h && v.numel() == m.cols(), "sn_normalize_backward: u must have ", m.h,
              " elements and v ", m.cols());
  return m;
}

}  // namespace fastgan
