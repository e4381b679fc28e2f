"""Per-sample gradient-norm penalties: the primitive and the GAN regularizers built on it.

Flow: public function -> validation -> op layer (fastgan/ops/penalty.py: backend.resolve, then
fastgan::gnp_loss on CPU; reference / fastgan::gnp_forward CUDA / fastgan_triton::gnp_forward)
-> backend kernel.
"""
import math

import torch

from . import _input_grad, _validate, distributed, reference
from . import finite_difference as _fd
from .ops.penalty import gnp_loss as _gnp_loss

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------
# validation: the shared contract of fastgan/_validate.py (type first, then range; the same bad
# argument gets the same error from every function and backend). Every check runs before any
# random draw or call of D, so nothing (tensor, buffer, RNG state) changes when one fails.
def _check_tensor(x, name):
    _validate.check_tensor(x, name)


_check_real = _validate.check_real


def _check_pair(real, fake):
    _check_tensor(real, "real")
    _check_tensor(fake, "fake")
    for what in ("shape", "dtype", "device"):
        a, b = getattr(real, what), getattr(fake, what)
        if a != b:
            raise ValueError(f"real and fake must have the same {what}, got {a} and {b}")


def _is_inference(x=None):
    """Inference mode is on (``x`` is None) or ``x`` is an inference tensor; dynamo cannot trace either
    question (and torch.compile'd code does not run under inference mode), so False while compiling."""
    if torch.compiler.is_compiling():
        return False
    return torch.is_inference_mode_enabled() if x is None else x.is_inference()


def _check_autograd_on(fn):
    """The regularizers need autograd: under no_grad the penalty would silently carry no gradient."""
    if _is_inference():
        raise RuntimeError(f"{fn} cannot run under torch.inference_mode(): the penalty needs autograd (the "
                           f"gradient of D at the samples, and a graph to D's parameters). Call it outside "
                           f"inference_mode.")
    if not torch.is_grad_enabled():
        raise RuntimeError(f"{fn} was called with gradient computation disabled (torch.no_grad() or "
                           f"set_grad_enabled(False)): the penalty would have no gradient and silently drop out "
                           f"of training. Compute it outside the no_grad block (e.g. `with torch.no_grad(): fake = "
                           f"G(z)`, then the penalty after the block).")


def _check_critic(fn, D, return_norms, scores=None):
    _check_autograd_on(fn)
    if D is None and scores is None and fn in ("r1_penalty", "r2_penalty", "wgan_div_penalty"):
        which = "real and fake" if fn == "wgan_div_penalty" else ("real" if fn == "r1_penalty" else "fake")
        raise TypeError(f"D (the critic) is required, or scores= (its outputs on {which})")
    if scores is None or D is not None:   # with scores= alone there is no critic to call
        _validate.check_callable(D, "D")
    return _validate.check_bool(return_norms, "return_norms")


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
    target = _check_real(target, "target", nonnegative=True)
    power = _check_real(power, "power", positive=True)
    one_sided = _validate.check_bool(one_sided, "one_sided")
    _validate.check_choice(reduction, "reduction", _REDUCTIONS)
    return _gnp_loss(grads, target, power, one_sided, reduction, 1.0, backend)[0]


# --------------------------------------------------------------------------------------------
# regularizers on a critic
def _critic_grad(D, x, batch=None, scaler=None):
    """g = d(sum D(x))/dx at x, with create_graph so the penalty reaches D's parameters.

    D's output must have one score (row) per sample: its first dimension is ``batch`` (x's batch by
    default; a tuple allows packed critics). Under DDP, D(x) is also tied into g (zero gradient) so
    DDP all-reduces the penalty's gradients: see fastgan/distributed.py.
    """
    x = x.detach()
    if _is_inference(x):  # an inference tensor cannot require grad: a normal copy can
        x = x.clone()
    x.requires_grad_(True)
    batch = (x.shape[0],) if batch is None else batch
    with torch.enable_grad():
        with distributed._watch_ddp(D) as ddp:
            out = D(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"D must return a tensor of scores, got {type(out).__name__}")
        if not (out.is_floating_point() or out.is_complex()):
            raise TypeError(f"D must return floating-point scores (autograd differentiates only floating-point "
                            f"outputs), got dtype {out.dtype}")
        if out.dim() == 0 or out.shape[0] not in batch:
            raise ValueError(f"D's output must have the batch as its first dimension (one score per sample, "
                             f"{' or '.join(map(str, batch))} rows), got shape {tuple(out.shape)}: a critic that "
                             f"reduces over the batch (e.g. D(x).mean()) would scale the gradient by 1/B")
        if not out.requires_grad:
            raise ValueError("the critic's output does not depend on its input (D(x) does not require grad)")
        (g,) = _input_grad.scaled_grad([out], [x], scaler)   # ``scaler``: fastgan/_input_grad.py
        if g is None:
            raise ValueError("the critic's output does not depend on its input: autograd found no path from x to D(x)")
        _fd.raise_if_no_double_backward(g, D)   # fused attention & co: fail here, naming method="finite_difference"
        return distributed.tie_in(g, out) if ddp else g


def _check_method(method, scores, scaler):
    _fd.check_method(method)
    if method == "finite_difference" and scores is not None:
        raise ValueError("scores= cannot be used with method='finite_difference' (the finite difference calls D "
                         "at shifted inputs): pass D instead")
    if method == "finite_difference" and scaler is not None:
        raise ValueError("scaler= is not supported with method='finite_difference' (its gradient is first-order "
                         "only); use method='double_backward' with a GradScaler, or no scaler")
    return _input_grad.check_scaler(scaler)


def _regularize(D, x, method, weight, target, power, one_sided, return_norms, pac=1, batch=None, scaler=None):
    """The penalty on grad_x sum D(x) by ``method`` (exact: double backward; else finite_difference.py)."""
    def on_grad(g):
        return _penalty(g.reshape(g.shape[0] // pac, -1) if pac > 1 else g, weight, target, power, one_sided, True)

    if method == "finite_difference":
        loss, norms = _fd.penalty(D, x, on_grad, batch)
    else:
        loss, norms = on_grad(_critic_grad(D, x, batch, scaler))
    return (loss, norms) if return_norms else loss


def _penalty(g, weight, target, power, one_sided, return_norms):
    loss, norms = _gnp_loss(g, target, power, one_sided, "mean", weight, "auto")
    return (loss, norms.to(g.dtype)) if return_norms else loss


def _per_sample(v, b, x, name):
    """Broadcast a per-sample vector (B,) against x (B, ...)."""
    return v.to(device=x.device, dtype=x.dtype).view((b,) + (1,) * (x.dim() - 1))


def _check_alpha(alpha, b, groups, x):
    """alpha as a (n,) vector, n = b or groups, from shape (n,) or (n, 1, ..., 1) (eager's (B, 1, 1, 1))."""
    if not isinstance(alpha, torch.Tensor):
        raise TypeError(f"alpha must be a tensor of shape ({b},), got {type(alpha).__name__}")
    if not alpha.is_floating_point():
        raise TypeError(f"alpha must be a floating-point tensor, got dtype {alpha.dtype}")
    shape = tuple(alpha.shape)
    if not (1 <= len(shape) <= x.dim() and shape[0] in (b, groups) and all(s == 1 for s in shape[1:])):
        also = f" or ({groups},) (one per pack)" if groups != b else ""
        raise ValueError(f"alpha must have shape ({b},) (one value per sample, or ({b}, 1, ...)){also}, "
                         f"got {shape}")
    return alpha.detach().reshape(shape[0])


def gradient_penalty(D, real, fake, *, weight=10.0, target=1.0, one_sided=False, alpha=None,
                     generator=None, pac=1, scaler=None, return_norms=False, method="double_backward"):
    r"""WGAN-GP (Gulrajani et al. 2017): ``weight * mean_i (||grad D(x̂_i)|| - target)^2``.

    ``x̂ = alpha*real + (1-alpha)*fake`` with one ``alpha ~ U[0,1)`` per sample (or per group of
    ``pac`` samples, CTGAN-style packing: the gradient is viewed as ``(B/pac, pac*features)``
    before the norm). ``one_sided=True`` gives ``max(0, n - target)^2`` (see lipschitz_penalty).
    ``alpha`` (shape (B,), (B, 1, ..., 1) or (B//pac,)) and ``generator`` make it reproducible;
    alpha, real and fake are constants (an alpha that requires grad is detached, as real and fake
    are). ``scaler``: a ``torch.amp.GradScaler`` for float16 critics (see :func:`r1_penalty`).
    Returns the weighted loss, differentiable w.r.t. D's parameters; with ``return_norms``
    also the per-sample (per-pack) gradient norms. D's output must keep the batch as its first
    dimension (one score per sample, or per pack with ``pac``). Raises RuntimeError under
    ``torch.no_grad()`` / ``inference_mode()`` (the penalty would carry no gradient).

    ``method="double_backward"`` (default): exact, through ``create_graph``. ``"finite_difference"``:
    same value; the parameter gradient is ``grad_theta <grad_x sum D(x), v>``, ``v = stopgrad(dP/dg)``,
    by central differences of two first-order critic evaluations at ``x_i +- h_i v_i/||v_i||``
    (fastgan/finite_difference.py): for smooth critics, and where double backward does not exist
    (fused attention, FSDP2, compiled steps). The other regularizers take the same ``method``.

    Example::

        >>> d_loss = D(fake).mean() - D(real).mean() + fastgan.gradient_penalty(D, real, fake)
        >>> d_loss.backward()
        >>> gp = fastgan.gradient_penalty(vit_D, real, fake, method="finite_difference")  # fused SDPA
    """
    return_norms = _check_critic("gradient_penalty", D, return_norms)
    _check_pair(real, fake)
    weight = _check_real(weight, "weight")
    target = _check_real(target, "target", nonnegative=True)
    one_sided = _validate.check_bool(one_sided, "one_sided")
    pac = _validate.check_int(pac, "pac", low=1)
    _validate.check_generator(generator)
    scaler = _check_method(method, None, scaler)
    b = real.shape[0]
    if b % pac:
        raise ValueError(f"pac={pac} does not divide the batch size {b}")
    groups = b // pac
    if alpha is not None:
        alpha = _check_alpha(alpha, b, groups, real)
    if alpha is None:
        alpha = torch.rand(groups, generator=generator, device=real.device, dtype=real.dtype)
    if alpha.shape == (groups,) and pac > 1:
        alpha = alpha.repeat_interleave(pac)
    a = _per_sample(alpha, b, real, "alpha")
    interp = a * real.detach() + (1 - a) * fake.detach()
    return _regularize(D, interp, method, weight, target, 2.0, one_sided, return_norms, pac, (b, groups), scaler)


def lipschitz_penalty(D, real, fake, **kw):
    r"""One-sided penalty (WGAN-LP, Petzka et al. 2018): ``weight * mean_i max(0, n_i - target)^2``.

    Same arguments as :func:`gradient_penalty`, with ``one_sided=True``.

    Example::

        >>> d_loss = D(fake).mean() - D(real).mean() + fastgan.lipschitz_penalty(D, real, fake)
    """
    if "one_sided" in kw:
        raise TypeError("lipschitz_penalty is one-sided by definition; do not pass one_sided")
    _check_autograd_on("lipschitz_penalty")
    return gradient_penalty(D, real, fake, one_sided=True, **kw)


def dragan_penalty(D, real, *, weight=10.0, target=1.0, c=10.0, perturbation="gaussian", noise=None,
                   generator=None, scaler=None, return_norms=False, method="double_backward"):
    r"""DRAGAN (Kodali et al. 2017): ``weight * mean_i (||grad D(real_i + delta_i)|| - target)^2``.

    ``perturbation="gaussian"``: ``delta ~ N(0, c*I)`` (std ``sqrt(c)``), as in the paper.
    ``perturbation="uniform"``: the authors' reference code, ``x_p = real + 0.5*std(real)*U[0,1)``
    and ``x̂ = real + alpha*(x_p - real)`` with one ``alpha ~ U[0,1)`` per sample.
    ``noise`` gives delta explicitly (``x̂ = real + noise``), for reproducibility. ``scaler``: see
    :func:`r1_penalty`; ``method``: see :func:`gradient_penalty`.

    Example::

        >>> d_loss = bce(D(real), 1) + bce(D(fake), 0) + fastgan.dragan_penalty(D, real)
    """
    return_norms = _check_critic("dragan_penalty", D, return_norms)
    _check_tensor(real, "real")
    weight = _check_real(weight, "weight")
    target = _check_real(target, "target", nonnegative=True)
    c = _check_real(c, "c", positive=True)
    _validate.check_choice(perturbation, "perturbation", ("gaussian", "uniform"))
    _validate.check_generator(generator)
    scaler = _check_method(method, None, scaler)
    real = real.detach()
    if _is_inference(real):
        real = real.clone()
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
    return _regularize(D, real + delta, method, weight, target, 2.0, False, return_norms, scaler=scaler)


def _at_samples(D, inputs, scores, scaler, method, weight, power, return_norms):
    """R1/R2/WGAN-div: the penalty at each of ``inputs`` themselves, by calling D (either method) or from
    the loss's own outputs (``scores=``, no critic call); a list of (loss, norms)."""
    if scores is None:
        if D is None:
            raise TypeError(f"D (the critic) is required, or scores= (its outputs on {' and '.join(inputs)})")
        return [_regularize(D, x, method, weight, 0.0, power, False, True, scaler=scaler) for x in inputs.values()]
    return [_penalty(g, weight, 0.0, power, False, True) for g in _input_grad.input_grads(D, scores, inputs, scaler)]


def wgan_div_penalty(D=None, real=None, fake=None, *, k=2.0, p=6.0, scores=None, scaler=None,
                     return_norms=False, method="double_backward"):
    r"""WGAN-div (Wu et al. 2018): ``k/2 * mean_i (||grad D(real_i)||^p + ||grad D(fake_i)||^p)``.

    Gradients are taken at the real and the fake samples themselves, so they can come from the
    loss's own forward: ``scores=(d_real, d_fake)`` instead of ``D`` (see :func:`r1_penalty`; both
    ``real`` and ``fake`` must require grad). ``scaler``: see :func:`r1_penalty`; ``method``: see
    :func:`gradient_penalty`. With ``return_norms`` the second result is ``(real_norms, fake_norms)``.

    Example::

        >>> d_loss = D(fake).mean() - D(real).mean() + fastgan.wgan_div_penalty(D, real, fake)
        >>> real, fake = real.detach().requires_grad_(), fake.detach().requires_grad_()
        >>> d_real, d_fake = D(real), D(fake)                 # one forward each, no extra critic call
        >>> d_loss = d_fake.mean() - d_real.mean() + fastgan.wgan_div_penalty(
        ...     real=real, fake=fake, scores=(d_real, d_fake))
    """
    return_norms = _check_critic("wgan_div_penalty", D, return_norms, scores)
    _check_pair(real, fake)
    k = _check_real(k, "k")
    p = _check_real(p, "p", positive=True)
    scaler = _check_method(method, scores, scaler)
    lr, lf = _at_samples(D, {"real": real, "fake": fake}, scores, scaler, method, k / 2, p, True)
    loss = lr[0] + lf[0]
    return (loss, (lr[1], lf[1])) if return_norms else loss


def r1_penalty(D=None, real=None, *, gamma=10.0, scores=None, scaler=None, return_norms=False,
               method="double_backward"):
    r"""R1 (Mescheder et al. 2018): ``gamma/2 * mean_i ||grad D(real_i)||^2``.

    ``scores=``: the critic's outputs on ``real`` from the loss's own forward, instead of ``D``
    (``real`` must require grad before that forward). Same value and parameter gradients, one
    critic forward and one first-order backward fewer; ``real.grad`` gets filled by the loss's
    backward (ignore it). A keyword on the same function rather than a second function: the
    formula, defaults and options stay in one place and switching forms is one edit.
    ``scaler``: a ``torch.amp.GradScaler`` (float16): the inner gradient is taken of the scaled
    scores and unscaled in float32, as PyTorch's AMP recipe for gradient penalties does; backward
    the total loss with ``scaler.scale(loss).backward()`` as usual. ``method``: see
    :func:`gradient_penalty`.

    Example::

        >>> d_loss = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean() + fastgan.r1_penalty(D, real)
        >>> real = real.detach().requires_grad_()
        >>> d_real = D(real)                                  # the loss's forward, used twice
        >>> d_loss = F.softplus(D(fake)).mean() + F.softplus(-d_real).mean() + fastgan.r1_penalty(
        ...     real=real, scores=d_real)
    """
    return_norms = _check_critic("r1_penalty", D, return_norms, scores)
    _check_tensor(real, "real")
    gamma = _check_real(gamma, "gamma")
    scaler = _check_method(method, scores, scaler)
    (res,) = _at_samples(D, {"real": real}, scores, scaler, method, gamma / 2, 2.0, True)
    return res if return_norms else res[0]


def r2_penalty(D=None, fake=None, *, gamma=10.0, scores=None, scaler=None, return_norms=False,
               method="double_backward"):
    r"""R2: ``gamma/2 * mean_i ||grad D(fake_i)||^2``, R1 on the generated samples.

    ``scores=`` (the critic's outputs on ``fake``, which requires grad), ``scaler`` and ``method``:
    see :func:`r1_penalty`.

    Example::

        >>> d_loss = d_loss + fastgan.r2_penalty(D, fake.detach())
        >>> fake = G(z).detach().requires_grad_()
        >>> d_fake = D(fake)
        >>> d_loss = F.softplus(d_fake).mean() + ... + fastgan.r2_penalty(fake=fake, scores=d_fake)
    """
    return_norms = _check_critic("r2_penalty", D, return_norms, scores)
    _check_tensor(fake, "fake")
    gamma = _check_real(gamma, "gamma")
    scaler = _check_method(method, scores, scaler)
    (res,) = _at_samples(D, {"fake": fake}, scores, scaler, method, gamma / 2, 2.0, True)
    return res if return_norms else res[0]
