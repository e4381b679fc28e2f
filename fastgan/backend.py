"""Backend selection: which implementation runs an op.

Backends: "reference" (eager PyTorch, the ground truth), "cpu" (C++ kernels, csrc/cpu),
"cuda" (CUDA C++ kernels, csrc/cuda), "triton" (Triton kernels; on CPU tensors only under
TRITON_INTERPRET=1). "auto" resolves to the process default set with :func:`set_backend` /
:func:`use_backend`, or, when none is set, to the fastest implementation measured for the
tensor's device (the ``AUTO`` table below) among those available.
"""
import contextlib
import functools
import os
import threading

import torch

from . import _ext

BACKENDS = ("reference", "cpu", "cuda", "triton")

# What "auto" picks per (op, device type), from measurements. Regenerate with
# `python -m fastgan bench [--device cuda]`: it ends with the fastest backend per case for each
# entry below, and says when the answer depends on size (then this table needs a size rule).
# CPU: "cpu" was fastest on every measured case (benchmarks/results/cpu-epyc-2core/results.md).
# A backend is listed here only once its tests have passed on that device type: CUDA and Triton
# kernels have not yet run on a GPU (no GPU was lent), so CUDA tensors use the reference.
AUTO = {
    ("grad_norm_penalty", "cpu"): "cpu",
    ("grad_norm_penalty", "cuda"): "reference",
    ("spectral_norm", "cpu"): "cpu",
    ("spectral_norm", "cuda"): "reference",
    ("clip_weights", "cpu"): "cpu",
    ("clip_weights", "cuda"): "reference",
}

_state = threading.local()
_global_default = ["auto"]


def _triton_status():
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return False, f"triton is not installed ({e})"
    if torch.cuda.is_available():
        return True, "triton kernels on CUDA tensors"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "TRITON_INTERPRET=1: triton kernels run on CPU tensors through the interpreter (slow)"
    return False, "no CUDA device, and TRITON_INTERPRET=1 is not set (the interpreter runs on CPU tensors)"


@functools.lru_cache(maxsize=None)
def _status():
    out = {"reference": {"available": True, "reason": "eager PyTorch, always available"}}
    if _ext.EXT_ERROR:
        out["cpu"] = {"available": False, "reason": _ext.EXT_ERROR}
        out["cuda"] = {"available": False, "reason": _ext.EXT_ERROR}
    else:
        out["cpu"] = {"available": True, "reason": "C++ CPU kernels (fastgan._C)"}
        if not _ext.has_kernel("gnp_forward", "CUDA"):
            out["cuda"] = {"available": False, "reason": "fastgan._C was built without CUDA kernels "
                           "(needs torch with CUDA and a CUDA toolkit at build time, or FORCE_CUDA=1)"}
        elif not torch.cuda.is_available():
            out["cuda"] = {"available": False, "reason": "CUDA kernels built, but no CUDA device is visible"}
        else:
            out["cuda"] = {"available": True, "reason": "CUDA C++ kernels (fastgan._C)"}
    ok, why = _triton_status()
    out["triton"] = {"available": ok, "reason": why}
    return out


def backends() -> dict:
    """Which backends are available here, and why not.

    Returns ``{name: {"available": bool, "reason": str}}`` for every backend.

    Example::

        >>> fastgan.backends()["cpu"]
        {'available': True, 'reason': 'C++ CPU kernels (fastgan._C)'}
    """
    return {k: dict(v) for k, v in _status().items()}


def _check_name(name):
    from ._validate import check_choice  # the shared contract: a non-str is a TypeError

    check_choice(name, "backend", BACKENDS + ("auto",))


def _require_available(name):
    info = _status()[name]
    if not info["available"]:
        raise RuntimeError(f"backend {name!r} is not available here: {info['reason']}")


def set_backend(name: str) -> None:
    """Set the process-wide default backend ("auto" restores automatic choice).

    Example::

        >>> fastgan.set_backend("reference")   # every fastgan op now runs eager PyTorch
    """
    _check_name(name)
    if name != "auto":
        _require_available(name)
    _global_default[0] = name


def get_backend() -> str:
    """The default backend in effect here (innermost ``use_backend``, else ``set_backend``)."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else _global_default[0]


class use_backend(contextlib.ContextDecorator):
    """Scoped default backend (thread-local). The name is checked when the object is made; the
    object can be entered again, nested or later, and used as a decorator, like ``torch.no_grad()``.

    Example::

        >>> with fastgan.use_backend("cpu"):
        ...     loss = fastgan.gradient_penalty(D, real, fake)
    """

    def __init__(self, name: str):
        _check_name(name)
        if name != "auto":
            _require_available(name)
        self.name = name

    def __enter__(self):
        _state.__dict__.setdefault("stack", []).append(self.name)
        return self

    def __exit__(self, *exc):
        _state.stack.pop()
        return False

    def __repr__(self):
        return f"use_backend({self.name!r})"


# Under torch.compile the choice is made once, while tracing, and baked into the graph.
@torch.compiler.assume_constant_result
def resolve(op: str, name, device: torch.device) -> str:
    """The concrete backend that runs ``op`` on ``device`` for the requested ``name``."""
    if name is None:
        name = "auto"
    _check_name(name)
    if name == "auto":
        name = get_backend()
    if name == "auto":
        choice = AUTO.get((op, device.type), "reference")
        return choice if _status()[choice]["available"] else "reference"
    _require_available(name)
    if name in ("cpu", "cuda") and device.type != name:
        raise ValueError(f"backend {name!r} runs on {name} tensors, got a tensor on {device}")
    return name
