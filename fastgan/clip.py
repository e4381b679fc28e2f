"""Weight clipping (WGAN, Arjovsky 2017): clamp every critic parameter to [lo, hi] in place.

Flow: clip_weights_ -> validation of the whole list (nothing is touched on error) -> split by
device type -> backend.resolve -> op layer (fastgan/ops/clip.py): reference (two foreach passes) /
fastgan::clip_weights_ (C++ CPU or CUDA, one call for the list) / fastgan_triton::clip_weights_ -> kernel.
"""
import math
import numbers

import torch

from .backend import resolve
from .ops import clip as _ops



def _real(x, name):
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {x!r}")
    if math.isnan(x):
        raise ValueError(f"{name} must not be NaN, got {x!r}")
    return float(x)


def _bounds(clip_value):
    """(lo, hi) from ``c`` (> 0: [-c, c]) or a pair ``(lo, hi)`` with lo <= hi."""
    if isinstance(clip_value, (tuple, list)):
        if len(clip_value) != 2:
            raise ValueError(f"clip_value must be a number c or a pair (lo, hi), got {clip_value!r}")
        lo, hi = _real(clip_value[0], "clip_value[0] (lo)"), _real(clip_value[1], "clip_value[1] (hi)")
        if lo > hi:
            raise ValueError(f"clip_value (lo, hi) needs lo <= hi, got {clip_value!r}")
        return lo, hi
    if not isinstance(clip_value, numbers.Real) or isinstance(clip_value, bool):
        raise TypeError(f"clip_value must be a number c or a pair (lo, hi), got {clip_value!r}")
    c = _real(clip_value, "clip_value")
    if not c > 0:
        raise ValueError(f"clip_value must be > 0, got {clip_value!r}")
    return -c, c


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _as_list(parameters):
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    try:
        return list(parameters)
    except TypeError:
        raise TypeError(f"parameters must be a tensor or an iterable of tensors, "
                        f"got {type(parameters).__name__}") from None


def _check_items(tensors):
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"parameters[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"parameters[{i}] must be a floating-point tensor "
                            f"(float16/bfloat16/float32/float64), got dtype {t.dtype}")


def _tensor_list(parameters):
    """The tensors of ``parameters`` (a tensor or an iterable of tensors, a generator too), checked."""
    tensors = _as_list(parameters)
    _check_items(tensors)
    return tensors


def clip_weights_(parameters, clip_value, *, backend="auto"):
    r"""Clamp weights in place: ``w <- clamp(w, lo, hi)`` for every tensor of ``parameters``.

    Like ``torch.nn.utils.clip_grad_value_``, but on the weights (WGAN's critic after each
    update). ``clip_value`` is ``c > 0`` for ``[-c, c]`` or a pair ``(lo, hi)``; ``parameters`` a
    tensor or any iterable of floating-point tensors (a generator too), of any dtypes and
    devices. Storage and ``data_ptr`` are kept, so optimizer state and views stay valid; no
    autograd history is recorded. NaN stays NaN, ``±inf`` becomes ``hi``/``lo``. The whole list is
    checked before any tensor is modified; an empty list is a no-op. Returns None.

    Example::

        >>> opt_d.step()
        >>> fastgan.clip_weights_(D.parameters(), 0.01)      # every weight now in [-0.01, 0.01]
    """
    lo, hi = _bounds(clip_value)
    tensors = _as_list(parameters)
    if not tensors:
        return
    with torch.no_grad():
        first = tensors[0]
        if isinstance(first, torch.Tensor) and resolve(_ops.OP, backend, first.device) in ("cpu", "cuda"):
            # Fast path, one device type (the usual case): the op checks every item's dtype and
            # device before it touches any, so per-item Python checks (~0.3 us each) are skipped.
            # A non-tensor item cannot reach the op; any other bad item makes it raise, and the
            # general path below then names the item or splits the list by device.
            if all(issubclass(ty, torch.Tensor) for ty in set(map(type, tensors))):
                try:
                    _ops.fused_(tensors, lo, hi)
                    return
                except (TypeError, ValueError, NotImplementedError):
                    pass
        _check_items(tensors)
        by_device = {}
        for t in tensors:
            by_device.setdefault(t.device.type, []).append(t)
        # resolve every group first: an unavailable backend raises before anything is clipped
        plan = [(resolve(_ops.OP, backend, torch.device(dev)), ts) for dev, ts in by_device.items()]
        for name, ts in plan:
            _ops.run(name, ts, lo, hi)


class WeightClipper:
    r"""Clips ``parameters`` to ``clip_value`` (``c`` or ``(lo, hi)``) on every call, or after
    every ``optimizer.step()`` once attached: ``w <- clamp(w, lo, hi)`` via :func:`clip_weights_`.

    ``skip_1d=True`` leaves 1-D parameters (biases, norm scales) unclipped. The parameter list is
    taken (and checked) when the clipper is built, so a generator such as ``D.parameters()`` works.
    Attaching does not clip by itself; the first clip follows the first step.

    Example::

        >>> clipper = fastgan.WeightClipper(D.parameters(), 0.01).attach(opt_d)
        >>> for _ in range(5):
        ...     critic_step(D, G, opt_d, real, z)               # weights clipped after each step
        >>> clipper.detach()
    """

    def __init__(self, parameters, clip_value, *, skip_1d=False, backend="auto"):
        self.lo, self.hi = _bounds(clip_value)
        self.params = [p for p in _tensor_list(parameters) if not (skip_1d and p.dim() == 1)]
        self.backend = backend
        self._handles = []

    def __call__(self):
        clip_weights_(self.params, (self.lo, self.hi), backend=self.backend)

    def attach(self, optimizer):
        """Clip after every ``optimizer.step()`` (a step post-hook); returns ``self``."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self._handles.append(optimizer.register_step_post_hook(lambda opt, args, kwargs: self()))
        return self

    def detach(self):
        """Stop clipping after the steps of every attached optimizer."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __repr__(self):
        return (f"WeightClipper({len(self.params)} tensors, lo={self.lo}, hi={self.hi}, "
                f"attached={len(self._handles)})")
