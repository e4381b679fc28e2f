// Autograd of fastgan::gnp_forward and gnp_loss, in C++ for every device: the Python register_autograd path
// costs tens of microseconds per call, as much as the kernels themselves for a DCGAN-sized batch.
// norms are returned for logging and are not differentiable; the gradient of phi is
// dL/dg_i = c_i g_i (fastgan::gnp_backward / gnp_loss_backward).
//
// Higher order: when the backward itself is recorded (create_graph=True: backward(create_graph=True),
// grad(gp, params, create_graph=True) in unrolled GANs or consensus optimization, gradgradcheck), the
// kernels' output would carry no graph and every higher derivative would silently be wrong. There the
// same formula is computed with differentiable ATen ops instead (slower, first order stays fused).
#include <ATen/ATen.h>
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

// dL/dgrads with a graph: the eager reference's forward (fastgan/reference.py) recomputed from grads with
// ATen ops and differentiated by autograd with create_graph, so every higher derivative is the
// reference's own, edge cases included (e.g. NaN second derivatives at zero rows, as eager's norm).
// gphi: (B,) per-sample upstream gradients, or one element (times scale) broadcast to every row.
at::Tensor differentiable_backward(const at::Tensor& gphi, const at::Tensor& grads, double t, double p,
                                   bool one_sided, double scale = 1.0) {
  const int64_t B = grads.size(0);
  const auto acc = grads.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor g = grads.reshape({B, -1}).to(acc);
  at::Tensor phi;
  if (t == 0.0 && p == 2.0 && !one_sided) {
    phi = (g * g).sum(1);
  } else {
    at::Tensor d = at::linalg_vector_norm(g, 2, {1}) - t;
    phi = one_sided ? d.clamp_min(0).pow(p) : d.abs().pow(p);
  }
  at::Tensor gp = gphi.to(acc);
  if (scale != 1.0) gp = gp * scale;  // in the accumulation dtype: 1/B would underflow in half
  gp = gp.reshape({-1}).expand({B});
  return torch::autograd::grad({phi}, {grads}, {gp}, /*retain_graph=*/true, /*create_graph=*/true)[0];
}

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
      dg = at::GradMode::is_enabled() ? differentiable_backward(grad_out[0], s.grads, s.target, s.power, s.one_sided)
                                      : op.call(grad_out[0], s.grads, s.norms, s.target, s.power, s.one_sided);
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
      const double scale = ctx->saved_data["scale"].toDouble();
      dg = at::GradMode::is_enabled()
               ? differentiable_backward(grad_out[0], s.grads, s.target, s.power, s.one_sided, scale)
               : op.call(grad_out[0], s.grads, s.norms, s.target, s.power, s.one_sided, scale);
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
