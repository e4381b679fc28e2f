// Autograd of fastgan::sn_normalize, in C++ for every device: the Python register_autograd path
// costs tens of microseconds per call, more than the kernel for most critic layers, and spectral
// norm runs once per layer per forward. u, v and sigma are constants (torch's semantics: the
// gradient flows through W only, via sigma = u^T W_mat v).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
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

at::Tensor call_backward(const at::Tensor& g, const at::Tensor& w, const at::Tensor& u, const at::Tensor& v,
                         const at::Tensor& sigma, int64_t dim) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::sn_normalize_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, int64_t)>();
  return op.call(g, w, u, v, sigma, dim);
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
    at::Tensor dw = grads[0].defined() ? call_backward(grads[0], saved[0], saved[1], saved[2], saved[3], dim)
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
      if (grads[l].defined()) out[l] = call_backward(grads[l], s[l], s[n + l], s[2 * n + l], s[3 * n + l], dims[l]);
    return out;
  }
};

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
}

}  // namespace fastgan
