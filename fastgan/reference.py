"""Eager PyTorch reference implementations: the ground truth every kernel is tested against.

Written for clarity, not speed. Accumulation happens in float32 for half types and in float64
for float64, like the kernels; results come back in the input dtype.
"""
import torch

from ._layout import acc_dtype


def gnp_forward(grads, target, power, one_sided):
    """(phi, norms) per sample, in the accumulation dtype; see fastgan.grad_norm_penalty."""
    g = grads.reshape(grads.shape[0], -1).to(acc_dtype(grads.dtype))
    if target == 0 and power == 2 and not one_sided:
        phi = (g * g).sum(dim=1)  # gradient 2g exactly, no square root
        return phi, phi.detach().sqrt()
    norms = g.norm(dim=1)
    d = norms - target
    phi = d.clamp_min(0).pow(power) if one_sided else d.abs().pow(power)
    return phi, norms.detach()


def reduce(phi, reduction):
    if reduction == "mean":
        return phi.mean()
    if reduction == "sum":
        return phi.sum()
    return phi


def grad_norm_penalty(grads, target=1.0, power=2.0, one_sided=False, reduction="mean"):
    phi, _ = gnp_forward(grads, target, power, one_sided)
    return reduce(phi, reduction).to(grads.dtype)


# ---------------------------------------------------------------------------------------------
# weight clipping (issue 5): two eager baselines, both kept for the benchmarks
def clip_weights_foreach_(tensors, lo, hi):
    """In place ``t <- clamp(t, lo, hi)`` for a list: two foreach passes (the fastest eager code)."""
    if not tensors:
        return
    with torch.no_grad():
        torch._foreach_clamp_min_(tensors, lo)
        torch._foreach_clamp_max_(tensors, hi)


def clip_weights_loop_(tensors, lo, hi):
    """In place ``t <- clamp(t, lo, hi)``, one kernel per tensor (the public WGAN code)."""
    with torch.no_grad():
        for t in tensors:
            t.clamp_(lo, hi)
