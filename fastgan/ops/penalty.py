"""Op layer of the per-sample gradient-norm penalty: ``gnp_forward`` / ``gnp_backward`` (every
backend) and ``gnp_loss`` / ``gnp_loss_backward`` (CPU: the reduction inside the op).

Fake kernels and Python autograd for ``fastgan::`` and ``fastgan_triton::``; the C++ ops' autograd
is in csrc/grad_norm_autograd.cpp.
"""
import warnings

import torch

from ._triton_ns import loader
from .. import _ext, reference
from .._layout import acc_dtype, as_dense_rows, empty_like_rows
from ..backend import resolve

OP = "grad_norm_penalty"


def _gnp_forward_fake(grads, target, power, one_sided):
    b = grads.shape[0]
    dt = acc_dtype(grads.dtype)
    return grads.new_empty((b,), dtype=dt), grads.new_empty((b,), dtype=dt)


def _gnp_backward_fake(grad_out, grads, *settings):
    """gnp_backward and gnp_loss_backward: dL/dgrads, laid out like the kernels write it."""
    return empty_like_rows(as_dense_rows(grads))


def _gnp_loss_fake(grads, target, power, one_sided, scale):
    return grads.new_empty(()), grads.new_empty((grads.shape[0],), dtype=acc_dtype(grads.dtype))


def differentiable_backward(gphi, grads, target, power, one_sided):
    """dL/dgrads with a graph, for a backward recorded with ``create_graph=True`` (double backward):
    the reference's forward recomputed from grads and differentiated by autograd, so every higher
    derivative is the reference's own; the same as csrc/grad_norm_autograd.cpp."""
    with torch.enable_grad():
        phi, _ = reference.gnp_forward(grads, target, power, one_sided)
        gp = gphi.to(phi.dtype).reshape(-1).expand(phi.shape)
        return torch.autograd.grad(phi, grads, gp, retain_graph=True, create_graph=True)[0]


def register(ns: str, autograd: bool = True) -> None:
    """Fake kernels and (``autograd``) the autograd of ``{ns}::gnp_forward`` / ``{ns}::gnp_backward``.

    The C++ ops register their autograd in C++ (csrc/grad_norm_autograd.cpp): the Python path
    costs tens of microseconds per call."""
    backward_op = getattr(getattr(torch.ops, ns), "gnp_backward")

    def setup_context(ctx, inputs, output):
        grads, target, power, one_sided = inputs
        ctx.save_for_backward(grads, output[1])
        ctx.args = (target, power, one_sided)
        # The norms are returned for logging (return_norms=True); only phi is differentiated.
        ctx.mark_non_differentiable(output[1])

    def backward(ctx, grad_phi, _grad_norms):
        grads, norms = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the kernel's output would carry no graph
            return differentiable_backward(grad_phi, grads, *ctx.args), None, None, None
        return backward_op(grad_phi, grads, norms, *ctx.args), None, None, None

    torch.library.register_fake(f"{ns}::gnp_forward")(_gnp_forward_fake)
    torch.library.register_fake(f"{ns}::gnp_backward")(_gnp_backward_fake)
    if autograd:
        torch.library.register_autograd(f"{ns}::gnp_forward", backward, setup_context=setup_context)


if _ext._C is not None:
    register("fastgan", autograd=False)
    torch.library.register_fake("fastgan::gnp_loss")(_gnp_loss_fake)
    torch.library.register_fake("fastgan::gnp_loss_backward")(_gnp_backward_fake)


# fastgan_triton::gnp_*, fakes and autograd registered here
triton_ops = loader("grad_norm", register)


def gnp(name, grads, target, power, one_sided):
    """Per-sample (phi, norms) in the accumulation dtype, on the already resolved backend ``name``."""
    if name == "reference":
        return reference.gnp_forward(grads, target, power, one_sided)
    ns = triton_ops() if name == "triton" else torch.ops.fastgan
    return ns.gnp_forward(grads, float(target), float(power), bool(one_sided))


_warned_functorch = []


def under_functorch() -> bool:
    """True inside a torch.func transform (grad, vmap, jacrev, ...). The kernels' autograd (a C++
    ``torch::autograd::Function`` or ``register_autograd``) cannot be transformed, so the op layer runs
    the reference (pure torch ops, transformable) there."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.peek_interpreter_stack() is not None


def functorch_fallback(name, what):
    """``name``, or "reference" (warning once per process) inside a torch.func transform."""
    if name == "reference" or not under_functorch():
        return name
    if not _warned_functorch:
        _warned_functorch.append(True)
        warnings.warn(f"fastgan: {what} runs the reference implementation inside torch.func transforms "
                      f"(grad, vmap, jacrev, ...): the {name!r} kernels' autograd cannot be transformed. "
                      f"The numbers are the same; only the speed differs.", stacklevel=3)
    return "reference"


def gnp_loss(grads, target, power, one_sided, reduction, weight, backend):
    """(weight * reduce_i phi_i in grads' dtype, norms in the accumulation dtype)."""
    name = functorch_fallback(resolve(OP, backend, grads.device), OP)
    if name == "cpu" and reduction != "none":
        # one op for phi, the reduction and the weight: the eager mean and its backward node cost
        # more than the kernels at GAN sizes on CPU
        scale = weight / grads.shape[0] if reduction == "mean" else weight
        return torch.ops.fastgan.gnp_loss(grads, float(target), float(power), bool(one_sided), float(scale))
    phi, norms = gnp(name, grads, target, power, one_sided)
    loss = reference.reduce(phi, reduction)
    return (loss if weight == 1 else weight * loss).to(grads.dtype), norms
