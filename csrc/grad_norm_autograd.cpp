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

// Both functions keep grads, norms and the penalty's settings for their backward.
void save(AutogradContext* ctx, const at::Tensor& grads, const at::Tensor& norms, double target, double power,
          bool one_sided) {
  ctx->save_for_backward({grads, norms});
  ctx->saved_data["target"] = target;
  ctx->saved_data["power"] = power;
  ctx->saved_data["one_sided"] = one_sided;
  ctx->mark_non_differentiable({norms});
}

struct Saved {
  at::Tensor grads, norms;
  double target, power;
  bool one_sided;
};

Saved saved(AutogradContext* ctx) {
  auto t = ctx->get_saved_variables();
  return {t[0], t[1], ctx->saved_data["target"].toDouble(), ctx->saved_data["power"].toDouble(),
          ctx->saved_data["one_sided"].toBool()};
}

class GnpForward : public torch::autograd::Function<GnpForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grads, double target, double power,
                               bool one_sided) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgan::gnp_forward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, double, bool)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [phi, norms] = op.call(grads, target, power, one_sided);
    save(ctx, grads, norms, target, power, one_sided);
    return {phi, norms};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgan::gnp_backward", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                                           bool)>();
    at::Tensor dg;
    if (grad_out[0].defined()) {
      Saved s = saved(ctx);
      dg = op.call(grad_out[0], s.grads, s.norms, s.target, s.power, s.one_sided);
    }
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
    save(ctx, grads, norms, target, power, one_sided);
    ctx->saved_data["scale"] = scale;
    return {loss, norms};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgan::gnp_loss_backward", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                                           bool, double)>();
    at::Tensor dg;
    if (grad_out[0].defined()) {
      Saved s = saved(ctx);
      dg = op.call(grad_out[0], s.grads, s.norms, s.target, s.power, s.one_sided, ctx->saved_data["scale"].toDouble());
    }
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
