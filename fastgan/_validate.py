"""One argument-checking contract for every public entry point.

Type first, then range: a value of the wrong type is a ``TypeError``, a value of the right type
outside its range a ``ValueError``; both name the argument and show the value. Bools are bools
(``1`` is not ``True``); integers accept any ``numbers.Integral`` (numpy integers too) but not
bools; reals accept any ``numbers.Real`` but not bools (strings are never converted). Every
function returns the value as a plain Python ``bool``/``int``/``float``/``str`` so callers never
pass numpy scalars on to the kernels.
"""
import math
import numbers

import torch


def _is_numpy_bool(x):
    return type(x).__module__ == "numpy" and type(x).__name__ in ("bool_", "bool")


def check_bool(x, name):
    """``True``/``False`` (numpy bools too); ``1``, ``"False"`` or ``None`` are a TypeError."""
    if isinstance(x, bool):
        return x
    if _is_numpy_bool(x):
        return bool(x)
    raise TypeError(f"{name} must be a bool, got {x!r} ({type(x).__name__})")


def check_int(x, name, *, low=None, high=None):
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {x!r} ({type(x).__name__})")
    x = int(x)
    if low is not None and x < low:
        raise ValueError(f"{name} must be a positive int (>= 1), got {x!r}" if low == 1
                         else f"{name} must be >= {low}, got {x!r}")
    if high is not None and x > high:
        raise ValueError(f"{name} must be <= {high}, got {x!r}")
    return x


def check_real(x, name, *, positive=False, nonnegative=False, finite=False):
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {x!r} ({type(x).__name__})")
    x = float(x)
    if math.isnan(x):
        raise ValueError(f"{name} must not be NaN, got {x!r}")
    if finite and math.isinf(x):
        raise ValueError(f"{name} must be finite, got {x!r}")
    if positive and not x > 0:
        raise ValueError(f"{name} must be > 0, got {x!r}")
    if nonnegative and not x >= 0:
        raise ValueError(f"{name} must be >= 0, got {x!r}")
    return x


def check_generator(x, name="generator"):
    """None or a ``torch.Generator``."""
    if x is not None and not isinstance(x, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(x).__name__}")
    return x


def check_callable(x, name):
    if not callable(x):
        raise TypeError(f"{name} must be callable (a module or function), got {type(x).__name__}")
    return x


def check_choice(x, name, choices):
    if not isinstance(x, str):
        raise TypeError(f"{name} must be one of {tuple(choices)}, got {x!r} ({type(x).__name__})")
    if x not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {x!r}")
    return x


def check_tensor(x, name, *, floating=True, batch=True):
    """A tensor; ``floating``: of a floating dtype; ``batch``: with a non-empty batch dimension."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), "
                        f"got dtype {x.dtype}")
    if batch:
        if x.dim() == 0:
            raise ValueError(f"{name} must have a batch dimension (B, ...), got a 0-d tensor")
        if x.shape[0] == 0:
            raise ValueError(f"{name} has an empty batch (shape {tuple(x.shape)})")
    return x
