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

at::Tensor sn_normalize_autograd(const at::Tensor& w, const at::Tensor& u, const at::Tensor& v,
                                 const at::Tensor& sigma, int64_t dim) {
  return SnNormalize::apply(w, u, v, sigma, dim);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) { m.impl("sn_normalize", &sn_normalize_autograd); }

}  // namespace fastgan
