"""fastgan under torch.distributed: gradient penalties through a DistributedDataParallel critic.

DDP all-reduces a parameter's gradient from a hook on that parameter's AccumulateGrad node, armed
by DDP's forward, and launches a bucket only when *every* parameter in it has reported. A penalty
is built from ``autograd.grad(D(x), x, create_graph=True)`` and reaches the parameters only through
the double-backward graph, in which parameters that the input gradient does not depend on (the
critic's last bias, any bias feeding a piecewise-linear activation's zero region, ...) get no
gradient at all. When the penalty is backpropagated on its own (R1 every k steps, a separate
``penalty.backward()``), those hooks never fire, their buckets are never reduced, and every rank
steps on its own local gradients; DDP only complains at the *next* forward ("Expected to have
finished reduction in the prior iteration"), after the ranks have already diverged
(pytorch/pytorch#47562, #63812, #63929). StyleGAN2-ADA, rosinality's stylegan2 and StudioGAN add
``D(x).sum() * 0`` to the loss for this reason.

fastgan ties the critic's output ``D(x)`` into the returned gradient with an exactly-zero gradient
(:class:`_TieIn`), so the penalty's backward also runs a first-order backward through the critic
(the cost of one more critic backward on the penalty's batch) and every parameter's hook fires;
the gradients are unchanged (+0). Unlike ``D(x).sum() * 0`` the loss value stays bit-identical
even when ``D(x)`` holds inf. It is done only when torch.distributed is initialized and a DDP
module ran inside the critic call (``D`` itself, a module holding one, or any callable that calls
one), so single-process training pays nothing. StyleGAN3 instead drops DDP and all-reduces the
flattened gradients by hand after ``backward()``; that also works with fastgan (no DDP, no tie).

``DDP(static_graph=True)`` cannot work with a penalty: in its first iteration DDP queues its
delayed all-reduce from the backward of the critic's output, which runs inside the penalty's inner
``autograd.grad``, before the penalty's parameter gradients exist. fastgan raises instead of
training on unsynchronised gradients. FSDP (``fully_shard``) frees the gathered weights in the
backward hooks of the inner ``autograd.grad``, before the double backward needs them (torch 2.13:
"setStorage ... out of bounds for storage of size 0"); fastgan raises a clear error instead.
"""
import contextlib

import torch

try:
    from torch.nn.parallel import DistributedDataParallel as _DDP
except ImportError:  # torch built without distributed support
    _DDP = None
try:
    from torch.distributed.fsdp import FSDPModule as _FSDP
except ImportError:
    _FSDP = ()


def _distributed():
    return _DDP is not None and torch.distributed.is_available() and torch.distributed.is_initialized()


def _check_wrapper(module, fsdp_ok=False):
    if isinstance(module, _FSDP) and not fsdp_ok:
        raise ValueError(
            "D is (or calls) an FSDP (fully_shard) module: gradient penalties cannot run through it, because "
            "FSDP reshards (frees) the gathered weights in the backward hooks of the penalty's inner "
            "autograd.grad, and the double backward then needs them. Wrap the critic in "
            "DistributedDataParallel instead (critics are small), or pass method=\"finite_difference\" (first-order "
            "passes only, works through FSDP). FSDP's set_reshard_after_backward(False) (pytorch issue 172543) "
            "does not fix the exact path in torch 2.13: the double backward then runs, but the sharded "
            "parameters receive no gradient.")
    if not isinstance(module, _DDP):
        return
    if module.static_graph:
        raise ValueError(
            "D is (or calls) a DistributedDataParallel module with static_graph=True, which does not "
            "work with gradient penalties: DDP's first-iteration delayed all-reduce would run inside the "
            "penalty's inner autograd.grad, before the penalty's parameter gradients exist, and ranks "
            "would silently train on unsynchronised gradients. Construct DDP with static_graph=False "
            "(the default).")


@contextlib.contextmanager
def _watch_ddp(D, fsdp_ok=False):
    """Yields a list that collects the DDP modules whose forward runs inside the block (FSDP raises
    unless ``fsdp_ok``: first-order passes through FSDP are fine)."""
    seen = []
    if not _distributed():
        yield seen
        return
    if isinstance(D, (_DDP, _FSDP)):
        _check_wrapper(D, fsdp_ok)
        seen.append(D)
        yield seen
        return

    # D may be a wrapper module or a plain callable (``lambda x: ddp_D(x, labels)``): watch every
    # module call for the duration of D(x); the check runs before DDP's forward changes anything.
    def pre_hook(module, args):
        if isinstance(module, (_DDP, _FSDP)):
            _check_wrapper(module, fsdp_ok)
            seen.append(module)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(pre_hook)
    try:
        yield seen
    finally:
        handle.remove()


class _TieIn(torch.autograd.Function):
    """Identity on ``g``; sends an exactly-zero gradient to ``out`` so that a backward of anything
    computed from ``g`` also runs through the critic's first-order graph (and fires DDP's hooks)."""

    @staticmethod
    def forward(ctx, g, out):
        ctx.out_meta = (out.shape, out.dtype, out.device)
        return g.view_as(g)

    @staticmethod
    def backward(ctx, grad_g):
        shape, dtype, device = ctx.out_meta
        return grad_g, torch.zeros(shape, dtype=dtype, device=device)


def tie_in(g, out):
    """``g``, with ``out`` attached to its graph by an exactly-zero gradient (see module docstring)."""
    return _TieIn.apply(g, out)
