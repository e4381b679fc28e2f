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
# spectral norm (issue 4): torch.nn.utils.parametrizations.spectral_norm written out
def sn_weight_matrix(weight, dim):
    """W viewed as a matrix (h, -1) with ``dim`` moved to the front, as torch does."""
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.dim()) if d != dim))
    return weight.flatten(1)


def sn_power(weights, us, vs, dims, n_iter, eps):
    """Power iteration on each weight: ``n_iter`` times ``u <- normalize(W v)`` then
    ``v <- normalize(W^T u)``; returns (sigmas, us, vs) as new tensors (inputs untouched) with
    ``sigma = u^T W v`` (0-d, accumulation dtype). ``n_iter = 0`` only evaluates sigma."""
    import torch.nn.functional as F

    sigmas, u_out, v_out = [], [], []
    with torch.no_grad():
        for w, u, v, dim in zip(weights, us, vs, dims):
            w_mat = sn_weight_matrix(w, dim)
            u, v = u.clone(), v.clone()
            for _ in range(n_iter):
                u = F.normalize(torch.mv(w_mat, v), dim=0, eps=eps)
                v = F.normalize(torch.mv(w_mat.H, u), dim=0, eps=eps)
            sigmas.append(torch.vdot(u, torch.mv(w_mat, v)).to(acc_dtype(w.dtype)))
            u_out.append(u)
            v_out.append(v)
    return sigmas, u_out, v_out


def sn_normalize(weight, u, v, dim):
    """``W / sigma`` with ``sigma = u^T W_mat v`` differentiable in W only (u, v constants)."""
    sigma = torch.vdot(u, torch.mv(sn_weight_matrix(weight, dim), v))
    return weight / sigma


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
