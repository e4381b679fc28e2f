r"""Approximated R1/R2 (adversarial post-training, Lin et al. 2025): no input gradient at all.

``weight * mean_i ||D(x)_i - D(x + sigma*n_i)||^2`` with ``n ~ N(0, I)``: for small ``sigma`` the
expectation is ``weight * sigma^2 * mean_i ||J_i||_F^2``, R1/R2's ``||grad D(x_i)||^2`` scaled, from
two ordinary forwards whose backward is first order (works with fused attention, FSDP, compile).
"""
import torch

from . import _validate as _v
from .finite_difference import _State


def _approx(D, x, name, weight, sigma, noise, generator, scores):
    _v.check_tensor(x, name)
    weight = _v.check_real(weight, "weight", finite=True)
    sigma = _v.check_real(sigma, "sigma", positive=True, finite=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    b = x.shape[0]
    if noise is not None:
        _v.check_tensor(noise, "noise")
        if noise.shape != x.shape:
            raise ValueError(f"noise must have the shape of {name} {tuple(x.shape)}, got {tuple(noise.shape)}")
        if noise.device != x.device:
            raise ValueError(f"noise must be on {name}'s device {x.device}, got {noise.device}")
    if scores is not None:
        _v.check_tensor(scores, "scores")
        if scores.shape[0] != b:
            raise ValueError(f"scores must be D({name}) with batch size {b} first, got shape {tuple(scores.shape)}")
    x = x.detach()
    n = (noise.detach().to(x.dtype) if noise is not None
         else torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
    # when both forwards are ours, the perturbed one sees the same dropout masks as D(x) (the
    # difference then measures the critic's smoothness, not dropout noise) and the RNG stream ends
    # where one forward leaves it
    st = _State(x.device) if scores is None and not torch.compiler.is_compiling() else None
    with torch.enable_grad():
        if scores is None:
            scores = D(x)
            if not isinstance(scores, torch.Tensor):
                raise TypeError(f"D must return a tensor of scores, got {type(scores).__name__}")
        if st is not None:
            st.after_value_pass()
            st.before_evaluation()
        pert = D(x + sigma * n)
        if st is not None:
            st.done()
    if not isinstance(pert, torch.Tensor):
        raise TypeError(f"D must return a tensor of scores, got {type(pert).__name__}")
    if pert.shape != scores.shape:
        raise ValueError(f"scores has shape {tuple(scores.shape)} but D({name} + sigma*noise) returned "
                         f"{tuple(pert.shape)}")
    d = (scores - pert).reshape(b, -1)
    return weight * d.pow(2).sum(dim=1).mean()


def approx_r1_penalty(D, real, *, weight=100.0, sigma=0.01, noise=None, generator=None, scores=None):
    r"""Approximated R1 (Lin et al. 2025): ``weight * mean_i ||D(real)_i - D(real + sigma*n)_i||^2``.

    ``n ~ N(0, I)`` drawn from ``generator`` (or given as ``noise``, the shape of ``real``); the norm
    is over each sample's score elements. Both terms are differentiable w.r.t. D's parameters; no
    double backward (fused attention, FSDP and compiled steps work). ``scores=D(real)`` reuses the
    scores of the adversarial loss (saves a forward; then the two evaluations see different dropout
    masks when D has dropout; without it both see the same ones).

    Example::

        >>> s_real = D(real)
        >>> d_loss = F.softplus(-s_real).mean() + F.softplus(D(fake)).mean()
        >>> d_loss = d_loss + fastgan.approx_r1_penalty(D, real, scores=s_real)
    """
    return _approx(D, real, "real", weight, sigma, noise, generator, scores)


def approx_r2_penalty(D, fake, *, weight=100.0, sigma=0.01, noise=None, generator=None, scores=None):
    r"""Approximated R2: :func:`approx_r1_penalty` on the generated samples,
    ``weight * mean_i ||D(fake)_i - D(fake + sigma*n)_i||^2`` (``fake`` is detached).

    Example::

        >>> d_loss = d_loss + fastgan.approx_r2_penalty(D, fake.detach())
    """
    return _approx(D, fake, "fake", weight, sigma, noise, generator, scores)
