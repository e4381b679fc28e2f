"""Per-sample gradient-norm penalties: the primitive and the GAN regularizers built on it.

Flow: public function -> validation -> op layer (fastgan/ops/penalty.py: backend.resolve, then
fastgan::gnp_loss on CPU; reference / fastgan::gnp_forward CUDA / fastgan_triton::gnp_forward)
-> backend kernel.
"""
import math
import numbers

import torch

from . import _input_grad, distributed, reference
from .ops.penalty import gnp_loss as _gnp_loss

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------
# validation
def _check_tensor(x, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), "
                        f"got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension (B, ...), got a 0-d tensor")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch (shape {tuple(x.shape)})")


def _check_real(x, name, *, positive=False, nonnegative=False):
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or math.isnan(x):
        raise (TypeError if not isinstance(x, numbers.Real) or isinstance(x, bool) else ValueError)(
            f"{name} must be a real number, got {x!r}")
    if positive and not x > 0:
        raise ValueError(f"{name} must be > 0, got {x!r}")
    if nonnegative and not x >= 0:
        raise ValueError(f"{name} must be >= 0, got {x!r}")


def _check_pair(real, fake):
    _check_tensor(real, "real")
    _check_tensor(fake, "fake")
    for what in ("shape", "dtype", "device"):
        a, b = getattr(real, what), getattr(fake, what)
        if a != b:
            raise ValueError(f"real and fake must have the same {what}, got {a} and {b}")


# --------------------------------------------------------------------------------------------
# the primitive
def grad_norm_penalty(grads, *, target=1.0, power=2.0, one_sided=False, reduction="mean", backend="auto"):
    r"""Per-sample gradient-norm penalty: ``reduce_i phi(||g_i||_2)``.

    ``phi(n) = |n - target|^power``, or ``max(0, n - target)^power`` when ``one_sided``; the norm
    is taken over all non-batch dimensions of each sample. ``target=0, power=2`` gives
    ``sum(g**2)`` (R1/R2) with gradient exactly ``2g``. At a zero row the gradient is 0, like
    eager ``g.flatten(1).norm(dim=1)``. Accumulates in float32 (float64 for float64) and returns
    the input dtype; ``reduction`` is "mean" | "sum" | "none" (per-sample, shape (B,)).

    Example::

        >>> x = real.detach().requires_grad_()
        >>> g, = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        >>> loss = 10 * fastgan.grad_norm_penalty(g)          # WGAN-GP term
        >>> loss.backward()                                   # reaches D's parameters
    """
    _check_tensor(grads, "grads")
    _check_real(target, "target", nonnegative=True)
    _check_real(power, "power", positive=True)
    if not isinstance(one_sided, bool):
        raise TypeError(f"one_sided must be a bool, got {one_sided!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return _gnp_loss(grads, target, power, one_sided, reduction, 1.0, backend)[0]


# --------------------------------------------------------------------------------------------
# regularizers on a critic
def _critic_grad(D, x, scaler=None):
    """g = d(sum D(x))/dx at x, with create_graph so the penalty reaches D's parameters
    (``scaler``: a torch.amp.GradScaler, see fastgan/_input_grad.py).

    Under DDP, D(x) is also tied into g (zero gradient) so DDP all-reduces the penalty's gradients:
    see fastgan/distributed.py.
    """
    scaler = _input_grad.check_scaler(scaler)  # before D runs: a bad scaler changes nothing
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with distributed._watch_ddp(D) as ddp:
            out = D(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"D must return a tensor of scores, got {type(out).__name__}")
        if not out.requires_grad:
            raise ValueError("the critic's output does not depend on its input (D(x) does not require grad)")
        (g,) = _input_grad.scaled_grad([out], [x], scaler)
        if g is None:
            raise ValueError("the critic's output does not depend on its input: autograd found no path from x to D(x)")
        return distributed.tie_in(g, out) if ddp else g


def _grads(D, inputs, scores, scaler):
    """Input gradients at each of ``inputs`` ({argument name: x}): from a call of the critic D, or
    (``scores=``) from the critic's outputs that the loss already computed (fastgan/_input_grad.py)."""
    if scores is None:
        if D is None:
            raise TypeError(f"D (the critic) is required, or scores= (its outputs on {' and '.join(inputs)})")
        return [_critic_grad(D, x, scaler) for x in inputs.values()]
    return _input_grad.input_grads(D, scores, inputs, _input_grad.check_scaler(scaler))


def _penalty(g, weight, target, power, one_sided, return_norms):
    loss, norms = _gnp_loss(g, target, power, one_sided, "mean", weight, "auto")
    return (loss, norms.to(g.dtype)) if return_norms else loss


def _per_sample(v, b, x, name):
    """Broadcast a per-sample vector (B,) against x (B, ...)."""
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape ({b},), got {type(v).__name__}")
    if v.shape != (b,):
        raise ValueError(f"{name} must have shape ({b},) (one value per sample), got {tuple(v.shape)}")
    return v.to(device=x.device, dtype=x.dtype).view((b,) + (1,) * (x.dim() - 1))


def gradient_penalty(D, real, fake, *, weight=10.0, target=1.0, one_sided=False, alpha=None,
                     generator=None, pac=1, scaler=None, return_norms=False):
    r"""WGAN-GP (Gulrajani et al. 2017): ``weight * mean_i (||grad D(x̂_i)|| - target)^2``.

    ``x̂ = alpha*real + (1-alpha)*fake`` with one ``alpha ~ U[0,1)`` per sample (or per group of
    ``pac`` samples, CTGAN-style packing: the gradient is viewed as ``(B/pac, pac*features)``
    before the norm). ``one_sided=True`` gives ``max(0, n - target)^2`` (see lipschitz_penalty).
    ``alpha`` (shape (B,) or (B//pac,)) and ``generator`` make it reproducible. ``scaler``: a
    ``torch.amp.GradScaler`` for float16 critics (see :func:`r1_penalty`). Returns the weighted
    loss, differentiable w.r.t. D's parameters; with ``return_norms`` also the per-sample (per-pack)
    gradient norms.

    Example::

        >>> d_loss = D(fake).mean() - D(real).mean() + fastgan.gradient_penalty(D, real, fake)
        >>> d_loss.backward()
    """
    _check_pair(real, fake)
    _check_real(weight, "weight")
    _input_grad.check_scaler(scaler)
    if isinstance(pac, bool) or not isinstance(pac, int) or pac < 1:
        raise ValueError(f"pac must be a positive int, got {pac!r}")
    b = real.shape[0]
    if b % pac:
        raise ValueError(f"pac={pac} does not divide the batch size {b}")
    groups = b // pac
    if alpha is None:
        alpha = torch.rand(groups, generator=generator, device=real.device, dtype=real.dtype)
    if isinstance(alpha, torch.Tensor) and alpha.shape == (groups,) and pac > 1:
        alpha = alpha.repeat_interleave(pac)
    a = _per_sample(alpha, b, real, "alpha")
    interp = a * real.detach() + (1 - a) * fake.detach()
    g = _critic_grad(D, interp, scaler)
    if pac > 1:
        g = g.reshape(groups, -1)
    return _penalty(g, weight, target, 2.0, one_sided, return_norms)


def lipschitz_penalty(D, real, fake, **kw):
    r"""One-sided penalty (WGAN-LP, Petzka et al. 2018): ``weight * mean_i max(0, n_i - target)^2``.

    Same arguments as :func:`gradient_penalty`, with ``one_sided=True``.

    Example::

        >>> d_loss = D(fake).mean() - D(real).mean() + fastgan.lipschitz_penalty(D, real, fake)
    """
    if "one_sided" in kw:
        raise TypeError("lipschitz_penalty is one-sided by definition; do not pass one_sided")
    return gradient_penalty(D, real, fake, one_sided=True, **kw)


def dragan_penalty(D, real, *, weight=10.0, target=1.0, c=10.0, perturbation="gaussian", noise=None,
                   generator=None, scaler=None, return_norms=False):
    r"""DRAGAN (Kodali et al. 2017): ``weight * mean_i (||grad D(real_i + delta_i)|| - target)^2``.

    ``perturbation="gaussian"``: ``delta ~ N(0, c*I)`` (std ``sqrt(c)``), as in the paper.
    ``perturbation="uniform"``: the authors' reference code, ``x_p = real + 0.5*std(real)*U[0,1)``
    and ``x̂ = real + alpha*(x_p - real)`` with one ``alpha ~ U[0,1)`` per sample.
    ``noise`` gives delta explicitly (``x̂ = real + noise``), for reproducibility. ``scaler``: see
    :func:`r1_penalty`.

    Example::

        >>> d_loss = bce(D(real), 1) + bce(D(fake), 0) + fastgan.dragan_penalty(D, real)
    """
    _check_tensor(real, "real")
    _check_real(weight, "weight")
    _check_real(c, "c", positive=True)
    _input_grad.check_scaler(scaler)
    if perturbation not in ("gaussian", "uniform"):
        raise ValueError(f"perturbation must be 'gaussian' or 'uniform', got {perturbation!r}")
    real = real.detach()
    if noise is not None:
        _check_tensor(noise, "noise")
        if noise.shape != real.shape:
            raise ValueError(f"noise must have the shape of real {tuple(real.shape)}, got {tuple(noise.shape)}")
        delta = noise.detach().to(device=real.device, dtype=real.dtype)
    elif perturbation == "gaussian":
        delta = math.sqrt(c) * torch.randn(real.shape, generator=generator, device=real.device, dtype=real.dtype)
    else:
        u = torch.rand(real.shape, generator=generator, device=real.device, dtype=real.dtype)
        alpha = torch.rand(real.shape[0], generator=generator, device=real.device, dtype=real.dtype)
        delta = _per_sample(alpha, real.shape[0], real, "alpha") * (0.5 * real.std() * u)
    g = _critic_grad(D, real + delta, scaler)
    return _penalty(g, weight, target, 2.0, False, return_norms)


def wgan_div_penalty(D=None, real=None, fake=None, *, k=2.0, p=6.0, scores=None, scaler=None,
                     return_norms=False):
    r"""WGAN-div (Wu et al. 2018): ``k/2 * mean_i (||grad D(real_i)||^p + ||grad D(fake_i)||^p)``.

    Gradients are taken at the real and the fake samples themselves, so they can come from the
    loss's own forward: ``scores=(d_real, d_fake)`` instead of ``D`` (see :func:`r1_penalty`; both
    ``real`` and ``fake`` must require grad). ``scaler``: see :func:`r1_penalty`. With
    ``return_norms`` the second result is ``(real_norms, fake_norms)``.

    Example::

        >>> d_loss = D(fake).mean() - D(real).mean() + fastgan.wgan_div_penalty(D, real, fake)
        >>> real, fake = real.detach().requires_grad_(), fake.detach().requires_grad_()
        >>> d_real, d_fake = D(real), D(fake)                 # one forward each, no extra critic call
        >>> d_loss = d_fake.mean() - d_real.mean() + fastgan.wgan_div_penalty(
        ...     real=real, fake=fake, scores=(d_real, d_fake))
    """
    _check_pair(real, fake)
    _check_real(k, "k")
    _check_real(p, "p", positive=True)
    _input_grad.check_scaler(scaler)
    g_real, g_fake = _grads(D, {"real": real, "fake": fake}, scores, scaler)
    lr = _penalty(g_real, k / 2, 0.0, p, False, True)
    lf = _penalty(g_fake, k / 2, 0.0, p, False, True)
    loss = lr[0] + lf[0]
    return (loss, (lr[1], lf[1])) if return_norms else loss


def r1_penalty(D=None, real=None, *, gamma=10.0, scores=None, scaler=None, return_norms=False):
    r"""R1 (Mescheder et al. 2018): ``gamma/2 * mean_i ||grad D(real_i)||^2``.

    ``scores=``: the critic's outputs on ``real`` from the loss's own forward, instead of ``D``
    (``real`` must require grad before that forward). Same value and parameter gradients, one
    critic forward and one first-order backward fewer; ``real.grad`` gets filled by the loss's
    backward (ignore it). A keyword on the same function rather than a second function: the
    formula, defaults and options stay in one place and switching forms is one edit.
    ``scaler``: a ``torch.amp.GradScaler`` (float16): the inner gradient is taken of the scaled
    scores and unscaled in float32, as PyTorch's AMP recipe for gradient penalties does; backward
    the total loss with ``scaler.scale(loss).backward()`` as usual.

    Example::

        >>> d_loss = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean() + fastgan.r1_penalty(D, real)
        >>> real = real.detach().requires_grad_()
        >>> d_real = D(real)                                  # the loss's forward, used twice
        >>> d_loss = F.softplus(D(fake)).mean() + F.softplus(-d_real).mean() + fastgan.r1_penalty(
        ...     real=real, scores=d_real)
    """
    _check_tensor(real, "real")
    _check_real(gamma, "gamma")
    _input_grad.check_scaler(scaler)
    return _penalty(_grads(D, {"real": real}, scores, scaler)[0], gamma / 2, 0.0, 2.0, False, return_norms)


def r2_penalty(D=None, fake=None, *, gamma=10.0, scores=None, scaler=None, return_norms=False):
    r"""R2: ``gamma/2 * mean_i ||grad D(fake_i)||^2``, R1 on the generated samples.

    ``scores=`` (the critic's outputs on ``fake``, which requires grad) and ``scaler``: see
    :func:`r1_penalty`.

    Example::

        >>> d_loss = d_loss + fastgan.r2_penalty(D, fake.detach())
        >>> fake = G(z).detach().requires_grad_()
        >>> d_fake = D(fake)
        >>> d_loss = F.softplus(d_fake).mean() + ... + fastgan.r2_penalty(fake=fake, scores=d_fake)
    """
    _check_tensor(fake, "fake")
    _check_real(gamma, "gamma")
    _input_grad.check_scaler(scaler)
    (g,) = _grads(D, {"fake": fake}, scores, scaler)
    return _penalty(g, gamma / 2, 0.0, 2.0, False, return_norms)
