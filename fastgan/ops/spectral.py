"""Op layer of spectral normalization: ``sn_power`` (power iterations of a list of weights),
``sn_normalize`` / ``sn_normalize_backward`` (W / sigma) and, on CPU, ``sn_normalize_list``.

Fake kernels and Python autograd for ``fastgan::`` and ``fastgan_triton::``; the C++ ops' autograd
is in csrc/spectral_norm_autograd.cpp.
"""
import functools

import torch
import torch._prims_common

from ._triton_ns import loader
from .. import _ext, reference
from .._layout import acc_dtype
from .penalty import functorch_fallback
from ..backend import get_backend, resolve

OP = "spectral_norm"


def _sn_power_fake(weights, us, vs, dims, n_iter, eps):
    return ([w.new_empty((), dtype=acc_dtype(w.dtype)) for w in weights],
            [u.new_empty(u.shape) for u in us], [v.new_empty(v.shape) for v in vs])


def _sn_normalize_fake(weight, u, v, sigma, dim):
    # the kernels keep any dense layout (channels_last) and make other weights contiguous
    dense = torch._prims_common.is_non_overlapping_and_dense_or_false(weight)
    return torch.empty_like(weight) if dense else weight.new_empty(weight.shape)


def _sn_normalize_list_fake(weights, us, vs, sigmas, dims):
    return [_sn_normalize_fake(w, u, v, s, d) for w, u, v, s, d in zip(weights, us, vs, sigmas, dims)]


def _sn_power_normalize_fake(weights, us, vs, dims, n_iter, eps):
    total = sum(1 + u.numel() + v.numel() for u, v in zip(us, vs))
    acc = acc_dtype(weights[0].dtype) if weights else torch.float32
    device = weights[0].device if weights else None
    return ([_sn_normalize_fake(w, None, None, None, d) for w, d in zip(weights, dims)],
            torch.empty(total, dtype=acc, device=device))


def _sn_normalize_backward_fake(grad, weight, u, v, sigma, dim):
    return weight.new_empty(weight.shape)


def differentiable_backward(grad, weight, u, v, dim):
    """``dW = grad / sigma - <grad, W> / sigma^2 * u v^T`` with differentiable torch ops and sigma
    recomputed from W, for a backward recorded with ``create_graph=True``; the same formula as
    csrc/spectral_norm_autograd.cpp."""
    acc = acc_dtype(weight.dtype)
    perm = [dim] + [d for d in range(weight.dim()) if d != dim]
    inverse = [perm.index(d) for d in range(weight.dim())]
    wa = weight.to(acc)
    wp = wa.permute(perm)
    ua, va = u.detach().to(acc), v.detach().to(acc)
    sigma = torch.dot(ua, torch.mv(wp.reshape(wp.shape[0], -1), va))
    uv = torch.outer(ua, va).reshape(wp.shape).permute(inverse)
    ga = grad.to(acc)
    return (ga / sigma - (ga * wa).sum() / (sigma * sigma) * uv).to(weight.dtype)


def register(ns: str, autograd: bool = True) -> None:
    """Fake kernels for ``{ns}::sn_*`` and (``autograd``) the autograd of ``{ns}::sn_normalize``.
    The C++ ops register their autograd in C++ (csrc/spectral_norm_autograd.cpp): it is per layer
    per forward, and the Python path costs more than the kernel."""
    backward_op = getattr(torch.ops, ns).sn_normalize_backward

    def setup_context(ctx, inputs, output):
        weight, u, v, sigma, dim = inputs
        ctx.save_for_backward(weight, u, v, sigma)
        ctx.dim = dim

    def backward(ctx, grad):
        weight, u, v, sigma = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the kernel's output would carry no graph
            return differentiable_backward(grad, weight, u, v, ctx.dim), None, None, None, None
        return backward_op(grad, weight, u, v, sigma, ctx.dim), None, None, None, None

    torch.library.register_fake(f"{ns}::sn_power")(_sn_power_fake)
    torch.library.register_fake(f"{ns}::sn_normalize")(_sn_normalize_fake)
    torch.library.register_fake(f"{ns}::sn_normalize_backward")(_sn_normalize_backward_fake)
    if autograd:
        torch.library.register_autograd(f"{ns}::sn_normalize", backward, setup_context=setup_context)


if _ext.has_kernel("sn_power", "CPU"):
    register("fastgan", autograd=False)
HAS_NORMALIZE_LIST = _ext.has_kernel("sn_normalize_list", "CPU")  # an extension built before it lacks it
if HAS_NORMALIZE_LIST:
    torch.library.register_fake("fastgan::sn_normalize_list")(_sn_normalize_list_fake)
HAS_POWER_NORMALIZE = _ext.has_kernel("sn_power_normalize", "CPU")
if HAS_POWER_NORMALIZE:
    torch.library.register_fake("fastgan::sn_power_normalize")(_sn_power_normalize_fake)


# fastgan_triton::sn_*, fakes and autograd registered here
triton_ops = loader("spectral_norm", register)


def ops(name):
    """The op namespace of a resolved non-reference backend."""
    return triton_ops() if name == "triton" else torch.ops.fastgan


@functools.lru_cache(maxsize=None)
def _resolve_cached(requested, default, device_type):
    return resolve(OP, requested, torch.device(device_type))


@torch.compiler.assume_constant_result
def resolve_backend(requested: str, device_type: str) -> str:
    # resolve() inspects the installation (imports, dispatcher tables): cache it, it is per-forward
    return _resolve_cached(requested, get_backend(), device_type)


def power(name, weights, us, vs, dims, n_iter, eps):
    """(sigmas, new us, new vs) for a list of weights (detached); buffers are not touched."""
    name = functorch_fallback(name, OP)
    if name == "reference":
        return reference.sn_power(weights, us, vs, dims, n_iter, eps)
    return ops(name).sn_power(weights, us, vs, dims, n_iter, eps)


def normalize(name, weight, u, v, sigma, dim):
    name = functorch_fallback(name, OP)
    if name == "reference":
        return reference.sn_normalize(weight, u, v, dim)
    return ops(name).sn_normalize(weight, u, v, sigma, dim)


def power_normalize(name, weights, us, vs, dims, n_iter, eps):
    """Every layer's power iteration (u, v updated in place) and ``W / sigma``, with autograd; on
    CPU one ``sn_power_normalize`` call (one dispatch, one autograd node, one allocation for the
    saved u, v, sigma) instead of ``power`` + a copy into the buffers + ``normalize_all``."""
    name = functorch_fallback(name, OP)
    if name == "cpu" and HAS_POWER_NORMALIZE and not torch.compiler.is_compiling():
        return torch.ops.fastgan.sn_power_normalize(weights, us, vs, dims, n_iter, eps)[0]
    sigmas, u_new, v_new = power(name, [w.detach() for w in weights], us, vs, dims, n_iter, eps)
    if n_iter:
        with torch.no_grad():
            torch._foreach_copy_(list(us) + list(vs), u_new + v_new)
    return normalize_all(name, weights, u_new, v_new, sigmas, dims)


def normalize_all(name, weights, us, vs, sigmas, dims):
    """``normalize`` of every layer; on CPU one ``sn_normalize_list`` call (one dispatch, one autograd
    node) instead of one op call per layer, which costs more than the division for most layers."""
    name = functorch_fallback(name, OP)
    if name == "cpu" and HAS_NORMALIZE_LIST:
        return torch.ops.fastgan.sn_normalize_list(weights, us, vs, sigmas, dims)
    return [normalize(name, *a) for a in zip(weights, us, vs, sigmas, dims)]
