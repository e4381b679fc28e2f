// Autograd of fastgan::sn_normalize, in C++ for every device: the Python register_autograd path
// costs tens of microseconds per call, more than the kernel for most critic layers, and spectral
// norm runs once per layer per forward. u, v and sigma are constants (torch's semantics: the
// gradient flows through W only, via sigma = u^T W_mat v).
//
// Higher order: when the backward itself is recorded (create_graph=True, e.g. grad(loss, W,
// create_graph=True) in unrolled GANs or gradient-norm regularizers on G), the kernel's output would
// carry no graph; there the same formula is computed with differentiable ATen ops instead.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

namespace fastgan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_normalize(const at::Tensor& w, const at::Tensor& u, const at::Tensor& v, const at::Tensor& sigma,
                          int64_t dim) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::sn_normalize", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         int64_t)>();
  return op.call(w, u, v, sigma, dim);
}

std::vector<at::Tensor> call_normalize_list(at::TensorList w, at::TensorList u, at::TensorList v,
                                            at::TensorList sigma, at::IntArrayRef dims) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::sn_normalize_list", "")
                       .typed<std::vector<at::Tensor>(at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                                                      at::IntArrayRef)>();
  return op.call(w, u, v, sigma, dims);
}

std::tuple<std::vector<at::Tensor>, at::Tensor> call_power_normalize(at::TensorList w, at::TensorList u,
                                                                     at::TensorList v, at::IntArrayRef dims,
                                                                     int64_t n_iter, double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::sn_power_normalize", "")
                       .typed<std::tuple<std::vector<at::Tensor>, at::Tensor>(
                           at::TensorList, at::TensorList, at::TensorList, at::IntArrayRef, int64_t, double)>();
  return op.call(w, u, v, dims, n_iter, eps);
}

at::Tensor call_backward(const at::Tensor& g, const at::Tensor& w, const at::Tensor& u, const at::Tensor& v,
                         const at::Tensor& sigma, int64_t dim) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::sn_normalize_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, int64_t)>();
  return op.call(g, w, u, v, sigma, dim);
}

// dW = grad / sigma - <grad, W> / sigma^2 * u v^T with differentiable ATen ops, sigma = u^T W_mat v
// recomputed from W (so it carries W's graph) and u, v constants, as torch's parametrization.
at::Tensor differentiable_backward(const at::Tensor& grad, const at::Tensor& w, const at::Tensor& u,
                                   const at::Tensor& v, int64_t dim) {
  const auto acc = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  std::vector<int64_t> perm{dim}, inverse(w.dim());
  for (int64_t d = 0; d < w.dim(); ++d)
    if (d != dim) perm.push_back(d);
  for (int64_t d = 0; d < w.dim(); ++d) inverse[perm[d]] = d;
  at::Tensor wa = w.to(acc);
  at::Tensor wp = wa.permute(perm);
  at::Tensor ua = u.detach().to(acc), va = v.detach().to(acc);
  at::Tensor sigma = at::dot(ua, at::mv(wp.reshape({wp.size(0), -1}), va));
  at::Tensor uv = at::outer(ua, va).reshape(wp.sizes()).permute(inverse);  // d sigma / dW, laid out like W
  at::Tensor ga = grad.to(acc);
  return (ga / sigma - (ga * wa).sum() / (sigma * sigma) * uv).to(w.scalar_type());
}

at::Tensor backward_one(const at::Tensor& g, const at::Tensor& w, const at::Tensor& u, const at::Tensor& v,
                        const at::Tensor& sigma, int64_t dim) {
  return at::GradMode::is_enabled() ? differentiable_backward(g, w, u, v, dim) : call_backward(g, w, u, v, sigma, dim);
}

class SnNormalize : public torch::autograd::Function<SnNormalize> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& w, const at::Tensor& u, const at::Tensor& v,
                            const at::Tensor& sigma, int64_t dim) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({w, u, v, sigma});
    ctx->saved_data["dim"] = dim;
    return call_normalize(w, u, v, sigma, dim);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const int64_t dim = ctx->saved_data["dim"].toInt();
    at::Tensor dw = grads[0].defined() ? backward_one(grads[0], saved[0], saved[1], saved[2], saved[3], dim)
                                       : at::Tensor();
    return {dw, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// One node for all layers: apply() flattens the lists, so the inputs (and the gradients backward
// returns) are w_0..w_n-1, u_0.., v_0.., sigma_0.., then dims.
class SnNormalizeList : public torch::autograd::Function<SnNormalizeList> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList w, at::TensorList u, at::TensorList v,
                               at::TensorList sigma, at::IntArrayRef dims) {
    at::AutoDispatchBelowADInplaceOrView guard;
    variable_list saved;
    saved.reserve(4 * w.size());
    for (at::TensorList list : {w, u, v, sigma}) saved.insert(saved.end(), list.begin(), list.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["dims"] = dims.vec();
    return call_normalize_list(w, u, v, sigma, dims);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto dims = ctx->saved_data["dims"].toIntVector();
    const size_t n = grads.size();
    variable_list out(4 * n + 1);
    for (size_t l = 0; l < n; ++l)
      if (grads[l].defined()) out[l] = backward_one(grads[l], s[l], s[n + l], s[2 * n + l], s[3 * n + l], dims[l]);
    return out;
  }
};

// One node for apply_spectral_norm's whole forward. Inputs flatten to w_0..w_n-1, u_0.., v_0.., then
// dims, n_iter, eps; outputs are the n W / sigma and the state (non-differentiable), which is saved:
// per layer [sigma, u, v] as the normalization used them.
class SnPowerNormalize : public torch::autograd::Function<SnPowerNormalize> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList w, at::TensorList u, at::TensorList v,
                               at::IntArrayRef dims, int64_t n_iter, double eps) {
    variable_list outs;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      auto [normalized, state] = call_power_normalize(w, u, v, dims, n_iter, eps);
      outs = std::move(normalized);
      outs.push_back(state);
    }
    if (n_iter)  // u, v were written in place: autograd must see it (as after torch's in-place copy)
      for (at::TensorList list : {u, v})
        for (const at::Tensor& t : list) torch::autograd::impl::bump_version(t);
    variable_list saved(w.begin(), w.end());
    saved.push_back(outs.back());
    ctx->save_for_backward(saved);
    ctx->saved_data["dims"] = dims.vec();
    ctx->mark_non_differentiable({outs.back()});
    return outs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto dims = ctx->saved_data["dims"].toIntVector();
    const size_t n = dims.size();
    const at::Tensor& state = s[n];
    variable_list out(3 * n + 3);
    int64_t off = 0;
    for (size_t l = 0; l < n; ++l) {
      const at::Tensor& w = s[l];
      int64_t h = w.size(dims[l]);
      const int64_t cols = w.numel() / std::max<int64_t>(h, 1);
      if (grads[l].defined())
        out[l] = backward_one(grads[l], w, state.narrow(0, off + 1, h), state.narrow(0, off + 1 + h, cols),
                              state.narrow(0, off, 1), dims[l]);
      off += 1 + h + cols;
    }
    return out;
  }
};

std::tuple<std::vector<at::Tensor>, at::Tensor> sn_power_normalize_autograd(at::TensorList w, at::TensorList u,
                                                                            at::TensorList v, at::IntArrayRef dims,
                                                                            int64_t n_iter, double eps) {
  variable_list outs = SnPowerNormalize::apply(w, u, v, dims, n_iter, eps);
  at::Tensor state = outs.back();
  outs.pop_back();
  return {std::move(outs), std::move(state)};
}

std::vector<at::Tensor> sn_normalize_list_autograd(at::TensorList w, at::TensorList u, at::TensorList v,
                                                   at::TensorList sigma, at::IntArrayRef dims) {
  return SnNormalizeList::apply(w, u, v, sigma, dims);
}

at::Tensor sn_normalize_autograd(const at::Tensor& w, const at::Tensor& u, const at::Tensor& v,
                                 const at::Tensor& sigma, int64_t dim) {
  return SnNormalize::apply(w, u, v, sigma, dim);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) {
  m.impl("sn_normalize", &sn_normalize_autograd);
  m.impl("sn_normalize_list", &sn_normalize_list_autograd);
  m.impl("sn_power_normalize", &sn_power_normalize_autograd);
}

}  // namespace fastgan
