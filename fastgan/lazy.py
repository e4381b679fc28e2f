"""Lazy regularization (Karras et al. 2020, StyleGAN2 section 3.1): the penalty every k-th step only.

StyleGAN2/3 compute R1 once every 16 minibatches with its weight multiplied by 16; GigaGAN and
lightweight-gan regularize every 4 steps. :class:`Lazy` wraps a penalty function and does the
counting, the weighting and the bookkeeping for resuming.
"""
import torch

from ._validate import check_int, check_real


class Lazy:
    r"""``penalty`` on every ``every``-th call, weighted by ``every``; a constant zero otherwise.

    Call ``k = every`` times per ``k`` steps. Calls ``0, k, 2k, ...`` (StyleGAN2's
    ``batch_idx % k == 0``) return ``k * penalty(*args, **kwargs)`` (``(k * loss, norms)`` for
    ``return_norms=True``); the others return a 0-d zero (dtype and device of the first tensor
    argument) that requires no grad and contributes nothing: the critic is not called and no
    graph is built. ``due`` says whether the next call computes the penalty, so a loop can skip
    the work that only the penalty needs (``real.requires_grad_(r1.due)`` for ``scores=``, or
    a whole separate regularization phase). The counter advances only when a call succeeds.

    Under DDP call it on every rank every step: the counters stay equal, so all ranks regularize
    on the same steps, and a penalty backpropagated on its own through a DDP critic already ties
    the critic's output in (fastgan/distributed.py), so its gradients are all-reduced.

    ``state_dict()`` / ``load_state_dict()`` hold the step counter (and ``every``) for resuming.
    :meth:`optimizer_kwargs` gives StyleGAN2's optimizer correction for a separate regularization
    phase.

    Example (StyleGAN2: R1 every 16 steps from the loss's own forward)::

        >>> r1 = fastgan.Lazy(fastgan.r1_penalty, every=16)
        >>> real = real.detach().requires_grad_(r1.due)
        >>> d_real = D(real)
        >>> d_loss = F.softplus(D(fake)).mean() + F.softplus(-d_real).mean()
        >>> d_loss = d_loss + r1(real=real, scores=d_real, gamma=10.0)   # 16 * R1, or 0
        >>> torch.save({"D": D.state_dict(), "r1": r1.state_dict()}, path)
    """

    def __init__(self, penalty, *, every):
        if not callable(penalty):
            raise TypeError(f"penalty must be callable (e.g. fastgan.r1_penalty), got {type(penalty).__name__}")
        self.penalty = penalty
        self.every = check_int(every, "every", low=1)
        self.step = 0

    @property
    def due(self):
        """True when the next call computes the penalty (the step counter is a multiple of ``every``)."""
        return self.step % self.every == 0

    def __call__(self, *args, **kwargs):
        if not self.due:
            self.step += 1
            zero = torch.zeros((), **_like(args, kwargs))
            return (zero, None) if kwargs.get("return_norms") else zero
        out = self.penalty(*args, **kwargs)
        self.step += 1
        if isinstance(out, tuple):
            return (self.every * out[0],) + out[1:]
        return self.every * out

    def state_dict(self):
        """``{"every": k, "step": n}`` (plain ints: torch.save / json friendly)."""
        return {"every": self.every, "step": self.step}

    def load_state_dict(self, state):
        """Restore the step counter; ``state["every"]`` must equal this helper's ``every``."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from Lazy.state_dict(), got {type(state).__name__}")
        missing = {"every", "step"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)} (expected Lazy.state_dict()'s keys every, step)")
        every = check_int(state["every"], "state['every']", low=1)
        step = check_int(state["step"], "state['step']", low=0)
        if every != self.every:
            raise ValueError(f"state['every'] is {every} but this Lazy has every={self.every}: "
                             f"resuming with another interval changes which steps regularize")
        self.step = step

    def optimizer_kwargs(self, *, lr, betas=(0.0, 0.99)):
        r"""StyleGAN2's correction for a *separate* regularization step (its own backward and
        ``opt.step()`` every k steps, i.e. k+1 optimizer steps per k minibatches):
        ``lr * c`` and ``betas ** c`` with ``c = k / (k + 1)``, for Adam-style optimizers.

        Not needed when the penalty is added to the main loss (k optimizer steps per k minibatches).

        Example::

            >>> opt_d = torch.optim.Adam(D.parameters(), **r1.optimizer_kwargs(lr=0.0025, betas=(0, 0.99)))
        """
        lr = check_real(lr, "lr", positive=True, finite=True)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        b = [check_real(x, f"betas[{i}]", nonnegative=True) for i, x in enumerate(betas)]
        for i, x in enumerate(b):
            if x >= 1:
                raise ValueError(f"betas[{i}] must be < 1, got {x!r}")
        c = self.every / (self.every + 1)
        return {"lr": lr * c, "betas": (b[0] ** c, b[1] ** c)}

    def __repr__(self):
        name = getattr(self.penalty, "__name__", type(self.penalty).__name__)
        return f"Lazy({name}, every={self.every}, step={self.step})"


def _like(args, kwargs):
    """dtype and device of the first floating-point tensor argument (default dtype on CPU if none)."""
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, (tuple, list)):
            a = next((t for t in a if isinstance(t, torch.Tensor)), None)
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return {"dtype": a.dtype, "device": a.device}
    return {}
