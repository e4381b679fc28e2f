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
