// Autograd of fastgan::gnp_forward and gnp_loss, in C++ for every device: the Python register_autograd path
// costs tens of microseconds per call, as much as the kernels themselves for a DCGAN-sized batch.
// norms are returned for logging and are not differentiable; the gradient of phi is
// dL/dg_i = c_i g_i (fastgan::gnp_backward / gnp_loss_backward).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace fastgan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class GnpForward : public torch::autograd::Function<GnpForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grads, double target, double power,
                               bool one_sided) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgan::gnp_forward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, double, bool)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [phi, norms] = op.call(grads, target, power, one_sided);
    ctx->save_for_backward({grads, norms});
    ctx->saved_data["target"] = target;
    ctx->saved_data["power"] = power;
    ctx->saved_data["one_sided"] = one_sided;
    ctx->mark_non_differentiable({norms});
    return {phi, norms};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgan::gnp_backward", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                                           bool)>();
    auto saved = ctx->get_saved_variables();
    at::Tensor dg;
    if (grad_out[0].defined())
      dg = op.call(grad_out[0], saved[0], saved[1], ctx->saved_data["target"].toDouble(),
                   ctx->saved_data["power"].toDouble(), ctx->saved_data["one_sided"].toBool());
    return {dg, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class GnpLoss : public torch::autograd::Function<GnpLoss> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grads, double target, double power,
                               bool one_sided, double scale) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgan::gnp_loss", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, double, bool, double)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, norms] = op.call(grads, target, power, one_sided, scale);
    ctx->save_for_backward({grads, norms});
    ctx->saved_data["target"] = target;
    ctx->saved_data["power"] = power;
    ctx->saved_data["one_sided"] = one_sided;
    ctx->saved_data["scale"] = scale;
    ctx->mark_non_differentiable({norms});
    return {loss, norms};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgan::gnp_loss_backward", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                                           bool, double)>();
    auto saved = ctx->get_saved_variables();
    at::Tensor dg;
    if (grad_out[0].defined())
      dg = op.call(grad_out[0], saved[0], saved[1], ctx->saved_data["target"].toDouble(),
                   ctx->saved_data["power"].toDouble(), ctx->saved_data["one_sided"].toBool(),
                   ctx->saved_data["scale"].toDouble());
    return {dg, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> gnp_loss_autograd(const at::Tensor& grads, double target, double power,
                                                     bool one_sided, double scale) {
  auto out = GnpLoss::apply(grads, target, power, one_sided, scale);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> gnp_forward_autograd(const at::Tensor& grads, double target, double power,
                                                        bool one_sided) {
  auto out = GnpForward::apply(grads, target, power, one_sided);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) {
  m.impl("gnp_forward", &gnp_forward_autograd);
  m.impl("gnp_loss", &gnp_loss_autograd);
}

}  // namespace fastgan
