"""Loads the compiled ops (fastgan._C) and registers their fake kernels and autograd.

fastgan imports without the extension; ``fastgan.backends()`` then says why "cpu"/"cuda" are
unavailable and "auto" falls back to the reference implementation.
"""
import torch

from ._layout import acc_dtype, as_dense_rows, empty_like_rows

try:
    from . import _C  # noqa: F401  (importing runs the TORCH_LIBRARY registrations)

    EXT_ERROR = None
except ImportError as e:  # not built, or built against another torch
    _C = None
    EXT_ERROR = f"fastgan._C did not load ({e}); build it with `pip install --no-build-isolation -e .`"


def has_kernel(op: str, dispatch_key: str) -> bool:
    return _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgan::{op}", dispatch_key)


def empty_cache() -> None:
    """Return to the system the CPU blocks fastgan keeps for reuse.

    The CPU kernels take their gradient-sized outputs (dL/dgrads of the penalties, W / sigma of
    spectral norm and its gradient) from a small cache of freed blocks of >= 256 KiB, so the next
    training step does not page-fault fresh memory (csrc/cpu/block_cache.h). The cache holds at most
    ``FASTGAN_CPU_CACHE_MB`` (environment, read at import; default 256, 0 turns it off).

    Example::

        >>> fastgan.empty_cache()
    """
    if _C is not None:
        torch.ops.fastgan.cpu_cache_clear()


# ---------------------------------------------------------------------------------------------
# gnp_forward / gnp_backward: the per-sample gradient-norm penalty
def _gnp_forward_fake(grads, target, power, one_sided):
    b = grads.shape[0]
    dt = acc_dtype(grads.dtype)
    return grads.new_empty((b,), dtype=dt), grads.new_empty((b,), dtype=dt)


def _gnp_backward_fake(grad_out, grads, *settings):
    """gnp_backward and gnp_loss_backward: dL/dgrads, laid out like the kernels write it."""
    return empty_like_rows(as_dense_rows(grads))


def _gnp_loss_fake(grads, target, power, one_sided, scale):
    return grads.new_empty(()), grads.new_empty((grads.shape[0],), dtype=acc_dtype(grads.dtype))


def register_gnp(ns: str, autograd: bool = True) -> None:
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
        return backward_op(grad_phi, grads, norms, *ctx.args), None, None, None

    torch.library.register_fake(f"{ns}::gnp_forward")(_gnp_forward_fake)
    torch.library.register_fake(f"{ns}::gnp_backward")(_gnp_backward_fake)
    if autograd:
        torch.library.register_autograd(f"{ns}::gnp_forward", backward, setup_context=setup_context)


if _C is not None:
    register_gnp("fastgan", autograd=False)
    # gnp_loss (CPU): the penalty reduced inside the kernel; autograd in C++ as well.
    torch.library.register_fake("fastgan::gnp_loss")(_gnp_loss_fake)
    torch.library.register_fake("fastgan::gnp_loss_backward")(_gnp_backward_fake)
