r"""Instance noise (Sønderby et al. 2016; Arjovsky & Bottou 2017, seed 004) and its annealing.

Real and generated distributions live on low-dimensional manifolds that almost never overlap,
so a perfect discriminator exists and its gradients vanish. Adding the same Gaussian noise
``N(0, std^2 I)`` to the critic's real AND fake inputs spreads both distributions until they
overlap; annealing ``std`` towards 0 recovers the original problem at the end of training.
"""
import math

import torch

from . import _validate
from .penalty import _check_real, _check_tensor

_KINDS = ("linear", "cosine")


def _check_int(v, name, lo):
    return _validate.check_int(v, name, low=lo)


def instance_noise(x, std, generator=None):
    r"""``x + std * eps`` with ``eps ~ N(0, I)`` of x's shape, dtype and device.

    Apply it to both the real and the generated batch before they enter the critic.
    Differentiable w.r.t. ``x`` (the noise is a constant). ``std=0`` returns ``x`` itself.

    Example::

        >>> std = fastgan.anneal_std(step, total_steps, start=0.5)
        >>> d_loss = losses.d_minimax(D(fastgan.instance_noise(real, std)),
        ...                           D(fastgan.instance_noise(fake, std)))
    """
    _check_tensor(x, "x")
    _check_real(std, "std", nonnegative=True)
    if not math.isfinite(std):
        raise ValueError(f"std must be finite, got {std!r}")
    _validate.check_generator(generator)
    if std == 0:
        return x
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + std * eps


def anneal_std(step, total_steps, start, end=0.0, kind="linear"):
    r"""Noise level at ``step`` of ``total_steps``, going from ``start`` (step 0) to ``end``.

    ``t = min(step / total_steps, 1)``; ``"linear"``: ``start + (end - start) * t``;
    ``"cosine"``: ``end + (start - end) * (1 + cos(pi t)) / 2``. Steps past ``total_steps`` give
    ``end``.

    Example::

        >>> [fastgan.anneal_std(s, 4, start=1.0) for s in range(5)]
        [1.0, 0.75, 0.5, 0.25, 0.0]
    """
    _check_int(step, "step", 0)
    _check_int(total_steps, "total_steps", 1)
    _check_real(start, "start", nonnegative=True)
    _check_real(end, "end", nonnegative=True)
    _validate.check_choice(kind, "kind", _KINDS)
    t = min(step / total_steps, 1.0)
    if kind == "linear":
        return start + (end - start) * t
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))
