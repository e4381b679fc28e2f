"""The inner input gradient of a penalty, in real training loops.

``input_grads`` takes ``g = d(sum scores)/dx`` with ``create_graph`` from outputs the caller already
has (``scores=`` on R1, R2 and WGAN-div: the critic's outputs from the loss's own forward, no second
critic call), and both that path and the critic-calling one (``_critic_grad`` in penalty.py) go
through ``scaled_grad``, which applies a ``torch.amp.GradScaler`` and keeps the inner backward out
of ``torch.autocast`` as PyTorch's AMP recipe for gradient penalties prescribes
(https://pytorch.org/docs/stable/notes/amp_examples.html#gradient-penalty):

    scaled = autograd.grad(scaler.scale(out), x, create_graph=True)   # outside autocast
    g = scaled * (1 / scale)                                          # in float32 (or float64)
    penalty = phi(||g||)

Scaling lifts the inner gradient, which runs through the critic's float16 backward, out of float16's
underflow range; the quotient is exact for GradScaler's power-of-two scales. ``scaler.scale(out)``
is folded into ``grad_outputs`` (same gradients, no extra node) and the scale is read as a tensor:
no ``.item()``, no host synchronisation.
"""
import contextlib

import torch

from . import distributed


def check_scaler(scaler):
    """``scaler`` when it scales (an enabled torch.amp.GradScaler), None when nothing is to be scaled."""
    if scaler is None:
        return None
    if not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"scaler must be a torch.amp.GradScaler or None, got {type(scaler).__name__}")
    return scaler if scaler.is_enabled() else None


def scaled_grad(outs, xs, scaler):
    """``[d(sum outs)/dx for x in xs]`` with create_graph, through ``scaler`` (None: no scaling);
    None where no path exists. Autocast is off for the backward (AMP recipe: backward passes do not
    run under autocast; the ops reuse the dtypes the forward chose)."""
    dev = outs[0].device
    if scaler is None:
        grad_outputs = [torch.ones_like(o) for o in outs]
    else:
        # = scaler.scale(out) differentiated with ones; a float32 0-d tensor, read without a sync
        scale = scaler.scale(torch.ones((), dtype=torch.float32, device=dev))
        grad_outputs = [scale.to(o.dtype).expand(o.shape) for o in outs]
    off = torch.is_autocast_enabled(dev.type)
    with torch.enable_grad(), torch.autocast(dev.type, enabled=False) if off else contextlib.nullcontext():
        gs = torch.autograd.grad(outs, xs, grad_outputs=grad_outputs, create_graph=True, allow_unused=True)
    if scaler is None:
        return list(gs)
    inv = scale.reciprocal()
    # unscale in (at least) float32: a float16 inner gradient times 1/scale would underflow again
    return [None if g is None else g.to(torch.promote_types(g.dtype, torch.float32)) * inv for g in gs]


def input_grads(D, scores, inputs, scaler):
    """Input gradients from the critic's existing outputs: ``scores`` (one tensor, or a tuple in the
    order of ``inputs``, a dict {argument name: tensor}) were computed from ``inputs``, which
    require grad. Under torch.distributed each ``g`` is tied to its scores (see distributed.py)."""
    names = list(inputs)
    if D is not None:
        raise TypeError(f"pass either the critic D or scores= (its outputs on {' and '.join(names)}), not both")
    n = len(names)
    if n == 1:
        if not isinstance(scores, torch.Tensor):
            raise TypeError(f"scores must be a tensor (the critic's outputs on {names[0]}), "
                            f"got {type(scores).__name__}")
        scores = (scores,)
    elif not (isinstance(scores, (tuple, list)) and len(scores) == n):
        raise TypeError(f"scores must be a tuple of {n} tensors (the critic's outputs on "
                        f"{', '.join(names)}, in that order), got {type(scores).__name__}"
                        + (f" of length {len(scores)}" if isinstance(scores, (tuple, list)) else ""))
    labels = ["scores"] if n == 1 else [f"scores[{i}]" for i in range(n)]
    for lab, name, s in zip(labels, names, scores):
        x = inputs[name]
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"{lab} must be a tensor (the critic's outputs on {name}), got {type(s).__name__}")
        if not s.is_floating_point():
            raise TypeError(f"{lab} must be a floating-point tensor, got dtype {s.dtype}")
        if s.dim() == 0 or s.shape[0] != x.shape[0]:
            raise ValueError(f"{lab} must have one score per sample of {name} (batch size {x.shape[0]}), "
                             f"got shape {tuple(s.shape)}")
        if s.device != x.device:
            raise ValueError(f"{lab} is on {s.device} but {name} is on {x.device}")
        if not x.requires_grad:
            raise ValueError(f"{name} must require grad when scores= is given: create it with "
                             f"{name} = {name}.detach().requires_grad_() before the critic's forward")
        if not s.requires_grad:
            raise ValueError(f"{lab} does not depend on {name} (it does not require grad: computed under "
                             f"no_grad, or detached?)")
    gs = scaled_grad(list(scores), [inputs[k] for k in names], scaler)
    for lab, name, g in zip(labels, names, gs):
        if g is None:
            raise ValueError(f"{lab} does not depend on {name}: autograd found no path from {name} to {lab}")
    if distributed._distributed():
        # the scores may come from a DDP forward we did not see: tie them in (free when the
        # loss also backpropagates through them, one first-order backward when the penalty is alone)
        gs = [distributed.tie_in(g, s) for g, s in zip(gs, scores)]
    return gs
