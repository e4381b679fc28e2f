"""Weight clipping (WGAN, Arjovsky 2017): clamp every critic parameter to [lo, hi] in place.

Flow: clip_weights_ -> fast path (one fused C++ op call, which checks the whole list itself) or
validation of the whole list in Python (nothing is touched on error) -> split by device type ->
backend.resolve -> op layer (fastgan/ops/clip.py): reference (two foreach passes) /
fastgan::clip_weights_ (C++ CPU or CUDA, one call for the list) / fastgan_triton::clip_weights_.
"""
import functools
import math
import numbers

import torch

from . import backend as _backend
from .backend import resolve
from .ops import clip as _ops


class ClipError(ValueError, RuntimeError):
    """A ``clip_weights_`` argument eager ``clamp_`` refuses with a RuntimeError (an inference
    tensor outside inference mode, elements sharing memory, a bound beyond a dtype's range): a
    ValueError by fastgan's contract, still caught by ``except RuntimeError`` as eager's."""


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


def _check_items(tensors, lo, hi):
    """Everything eager ``clamp_`` would refuse, for every item, before any is modified."""
    # dynamo cannot trace the inference and overlap queries; a compiled graph holds neither kind
    eager = not torch.compiler.is_compiling()
    inference_mode = eager and torch.is_inference_mode_enabled()
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"parameters[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"parameters[{i}] must be a floating-point tensor "
                            f"(float16/bfloat16/float32/float64), got dtype {t.dtype}")
        if eager and t.is_inference() and not inference_mode:
            raise ClipError(f"parameters[{i}] is an inference tensor, which cannot be updated in place "
                            f"outside torch.inference_mode() (clone it first)")
        if eager and torch._debug_has_internal_overlap(t) == 1:  # 1: MemOverlap::Yes (2, "too hard", is allowed)
            raise ClipError(f"parameters[{i}] has elements that share memory (e.g. from expand()); "
                            f"clamp a clone() of it")
        fmax = torch.finfo(t.dtype).max
        for which, v in (("lo", lo), ("hi", hi)):
            if not math.isinf(v) and abs(v) > fmax:
                raise ClipError(f"clip_value's {which}={v!r} cannot be stored in parameters[{i}]'s dtype "
                                f"{t.dtype} (largest finite {fmax}) without overflow")


@functools.lru_cache(maxsize=None)
def _resolve_cached(backend, default, device_type):
    return resolve(_ops.OP, backend, torch.device(device_type))


# under torch.compile the choice is made once, while tracing (as backend.resolve)
@torch.compiler.assume_constant_result
def _resolve_fast(backend, device_type):
    return _resolve_cached(backend, _backend.get_backend(), device_type)


def _fused(backend, first):
    """Whether ``backend`` resolves to a fused C++ op (cpu/cuda) for ``first``'s device, cheaply:
    resolution depends only on the requested name, the default in effect and the device type."""
    if first.is_cpu:
        dev = "cpu"
    elif first.is_cuda:
        dev = "cuda"
    else:
        return False
    try:
        return _resolve_fast(backend, dev) in ("cpu", "cuda")
    except TypeError:  # an unhashable backend argument: the general path says what is wrong
        return False


def clip_weights_(parameters, clip_value, *, backend="auto"):
    r"""Clamp weights in place: ``w <- clamp(w, lo, hi)`` for every tensor of ``parameters``.

    Like ``torch.nn.utils.clip_grad_value_``, but on the weights (WGAN's critic after each
    update). ``clip_value`` is ``c > 0`` for ``[-c, c]`` or a pair ``(lo, hi)``; ``parameters`` a
    tensor or any iterable of floating-point tensors (a generator too), of any dtypes and
    devices. Storage and ``data_ptr`` are kept, so optimizer state and views stay valid; no
    autograd history is recorded. NaN stays NaN, ``±inf`` becomes ``hi``/``lo``. The whole list is
    checked before any tensor is modified (what eager ``clamp_`` refuses, such as an inference
    tensor or a bound beyond a dtype's range, raises :class:`ClipError`, a ValueError and a
    RuntimeError); an empty list is a no-op. Returns None.

    Example::

        >>> opt_d.step()
        >>> fastgan.clip_weights_(D.parameters(), 0.01)      # every weight now in [-0.01, 0.01]
    """
    if type(clip_value) is float and clip_value > 0:  # the usual call, checked in two comparisons
        lo, hi = -clip_value, clip_value
    else:
        lo, hi = _bounds(clip_value)
    tensors = parameters if type(parameters) is list else _as_list(parameters)
    if not tensors:
        return
    first = tensors[0]
    if isinstance(first, torch.Tensor) and _fused(backend, first):
        # Fast path, one device type (the usual case): the op checks every item (dtype, device,
        # inference, overlap, bounds) before it touches any, so no per-item Python checks. The
        # op has no autograd kernel (Autograd falls through, as for p.data.clamp_): no no_grad
        # needed. Any bad item makes it raise; the general path below then names the item in
        # fastgan's terms or splits a mixed list by device.
        try:
            _ops.fused_(tensors, lo, hi)
            return
        except (TypeError, ValueError, RuntimeError, NotImplementedError):
            pass
    _check_items(tensors, lo, hi)
    with torch.no_grad():
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
    taken (and checked, with ``backend``) when the clipper is built, so a generator such as
    ``D.parameters()`` works; an empty one (e.g. already consumed by the optimizer built from
    the same generator object) is a ValueError. Attaching does not clip by itself; the first clip
    follows the first step. A copy (``copy.deepcopy``, pickling) of an attached clipper is
    attached to the copies of its optimizers, made in the same copy (a clipper copied alone
    brings its own copy of each optimizer along).

    Example::

        >>> clipper = fastgan.WeightClipper(D.parameters(), 0.01).attach(opt_d)
        >>> for _ in range(5):
        ...     critic_step(D, G, opt_d, real, z)               # weights clipped after each step
        >>> clipper.detach()
    """

    def __init__(self, parameters, clip_value, *, skip_1d=False, backend="auto"):
        self.lo, self.hi = _bounds(clip_value)
        if not isinstance(skip_1d, bool):
            raise TypeError(f"skip_1d must be a bool, got {skip_1d!r} ({type(skip_1d).__name__})")
        tensors = _as_list(parameters)
        _check_items(tensors, self.lo, self.hi)
        if not tensors:
            raise ValueError("parameters is empty: a WeightClipper over no tensor would clip nothing. If you "
                             "passed D.parameters() after building the optimizer from the same generator "
                             "object, that generator was already consumed: pass D.parameters() again or "
                             "a list")
        self.params = [p for p in tensors if not (skip_1d and p.dim() == 1)]
        if not self.params:
            raise ValueError(f"parameters holds only 1-D tensors and skip_1d=True: nothing would be clipped "
                             f"(got {len(tensors)} tensors)")
        # resolve now for every device present: a bad or unavailable backend raises here, not in
        # the optimizer's step hook after the update
        for dev in sorted({p.device.type for p in self.params}):
            resolve(_ops.OP, backend, torch.device(dev))
        self.backend = backend
        self._optimizers = []
        self._handles = []

    def __call__(self):
        clip_weights_(self.params, (self.lo, self.hi), backend=self.backend)

    def _hook(self, optimizer, args, kwargs):
        self()

    def _register(self, optimizer):
        self._handles.append(optimizer.register_step_post_hook(self._hook))

    def attach(self, optimizer):
        """Clip after every ``optimizer.step()`` (a step post-hook); returns ``self``. Attaching
        twice to one optimizer clips once per step."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not any(o is optimizer for o in self._optimizers):
            self._optimizers.append(optimizer)
            self._register(optimizer)
        return self

    def detach(self):
        """Stop clipping after the steps of every attached optimizer."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._optimizers.clear()

    @property
    def attached(self):
        """The optimizers this clipper clips after (a new list)."""
        return list(self._optimizers)

    # A hook handle refers to the optimizer's hook dict, which neither pickling nor deepcopy of an
    # optimizer keeps (Optimizer.__getstate__ drops hooks): a copy re-registers its hooks on the
    # copies of its optimizers instead.
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_handles"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._handles = []
        for opt in self._optimizers:
            self._register(opt)

    def __repr__(self):
        return (f"WeightClipper({len(self.params)} tensors, lo={self.lo}, hi={self.hi}, "
                f"attached={len(self._optimizers)})")
