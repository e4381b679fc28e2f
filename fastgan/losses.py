r"""GAN losses on critic/discriminator scores (logits), in numerically stable forms.

Each family is a pair ``d_<name>(real_scores, fake_scores)`` (minimized by the critic) and
``g_<name>(fake_scores)`` (minimized by the generator); every loss is a mean over the batch.
Sigmoid-based losses take raw logits and use ``softplus`` (``-log sigmoid(s) = softplus(-s)``,
``-log(1 - sigmoid(s)) = softplus(s)``), never ``log(sigmoid(.))``, so they stay finite and
keep useful gradients for logits of any size.

=================  ===============================================  ===============================
family             critic loss                                      generator loss
=================  ===============================================  ===============================
minimax            ``softplus(-r) + softplus(f)`` (BCE with logits)  ``-softplus(f)`` = ``log(1-σ(f))``
non-saturating     same as minimax                                   ``softplus(-f)`` = ``-log σ(f)``
wasserstein        ``f - r``                                          ``-f``
hinge              ``relu(1 - r) + relu(1 + f)``                      ``-f``
least squares      ``((r - 1)^2 + f^2) / 2``                          ``(f - 1)^2 / 2``
=================  ===============================================  ===============================

``LOSSES[name]`` gives the ``(d_loss, g_loss)`` pair by family name.

Example::

    >>> d_loss = fastgan.losses.d_hinge(D(real), D(fake.detach()))
    >>> g_loss = fastgan.losses.g_hinge(D(fake))
"""
import torch
import torch.nn.functional as F

from .penalty import _check_tensor

__all__ = [
    "d_minimax", "g_minimax", "d_nonsaturating", "g_nonsaturating", "d_wasserstein",
    "g_wasserstein", "d_hinge", "g_hinge", "d_least_squares", "g_least_squares", "LOSSES",
]


def _scores(real, fake):
    _check_tensor(real, "real_scores")
    _check_tensor(fake, "fake_scores")
    if real.device != fake.device:
        raise ValueError(f"real_scores and fake_scores must be on the same device, got {real.device} and {fake.device}")
    return real, fake


def d_minimax(real_scores, fake_scores):
    r"""Discriminator BCE with logits (Goodfellow 2014): ``mean softplus(-r) + mean softplus(f)``.

    Equals ``-mean log σ(r) - mean log(1 - σ(f))`` without overflow for large ``|logits|``.

    Example::

        >>> loss = fastgan.losses.d_minimax(D(real), D(fake.detach()))
    """
    r, f = _scores(real_scores, fake_scores)
    return F.softplus(-r).mean() + F.softplus(f).mean()


def g_minimax(fake_scores):
    r"""Saturating generator loss of the minimax game: ``mean log(1 - σ(f)) = -mean softplus(f)``.

    Its gradient vanishes when the discriminator confidently rejects the fakes (``f << 0``).

    Example::

        >>> loss = fastgan.losses.g_minimax(D(G(z)))
    """
    _check_tensor(fake_scores, "fake_scores")
    return -F.softplus(fake_scores).mean()


d_nonsaturating = d_minimax


def g_nonsaturating(fake_scores):
    r"""Non-saturating generator loss (Goodfellow 2014): ``-mean log σ(f) = mean softplus(-f)``.

    Example::

        >>> loss = fastgan.losses.g_nonsaturating(D(G(z)))
    """
    _check_tensor(fake_scores, "fake_scores")
    return F.softplus(-fake_scores).mean()


def d_wasserstein(real_scores, fake_scores):
    r"""WGAN critic loss (Arjovsky 2017): ``mean f - mean r`` (the negated Wasserstein estimate).

    Example::

        >>> loss = fastgan.losses.d_wasserstein(D(real), D(fake.detach())) + fastgan.gradient_penalty(D, real, fake)
    """
    r, f = _scores(real_scores, fake_scores)
    return f.mean() - r.mean()


def g_wasserstein(fake_scores):
    r"""WGAN generator loss, also SNGAN's hinge generator loss (``g_hinge``): ``-mean f``.

    Example::

        >>> loss = fastgan.losses.g_wasserstein(D(G(z)))
    """
    _check_tensor(fake_scores, "fake_scores")
    return -fake_scores.mean()


def d_hinge(real_scores, fake_scores):
    r"""Hinge critic loss (SNGAN, Miyato 2018): ``mean relu(1 - r) + mean relu(1 + f)``.

    Example::

        >>> loss = fastgan.losses.d_hinge(D(real), D(fake.detach()))
    """
    r, f = _scores(real_scores, fake_scores)
    return F.relu(1 - r).mean() + F.relu(1 + f).mean()


g_hinge = g_wasserstein


def d_least_squares(real_scores, fake_scores):
    r"""LSGAN critic loss (Mao 2017, targets a=0, b=1): ``mean (r - 1)^2 / 2 + mean f^2 / 2``.

    Example::

        >>> loss = fastgan.losses.d_least_squares(D(real), D(fake.detach()))
    """
    r, f = _scores(real_scores, fake_scores)
    return 0.5 * (r - 1).square().mean() + 0.5 * f.square().mean()


def g_least_squares(fake_scores):
    r"""LSGAN generator loss (target c=1): ``mean (f - 1)^2 / 2``.

    Example::

        >>> loss = fastgan.losses.g_least_squares(D(G(z)))
    """
    _check_tensor(fake_scores, "fake_scores")
    return 0.5 * (fake_scores - 1).square().mean()


LOSSES = {
    "minimax": (d_minimax, g_minimax),
    "nonsaturating": (d_nonsaturating, g_nonsaturating),
    "wasserstein": (d_wasserstein, g_wasserstein),
    "hinge": (d_hinge, g_hinge),
    "least_squares": (d_least_squares, g_least_squares),
}
