"""Loads the compiled ops (fastgan._C); their fake kernels and autograd live in fastgan/ops.

fastgan imports without the extension; ``fastgan.backends()`` then says why "cpu"/"cuda" are
unavailable and "auto" falls back to the reference implementation.
"""
import torch

try:
    from . import _C  # noqa: F401  (importing runs the TORCH_LIBRARY registrations)

    EXT_ERROR = None
except ImportError as e:  # not built, or built against another torch
    _C = None
    EXT_ERROR = f"fastgan._C did not load ({e}); build it with `pip install --no-build-isolation -e .`"


def has_kernel(op: str, dispatch_key: str) -> bool:
    return _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgan::{op}", dispatch_key)


def empty_cache() -> None:
    """Return to the system the CPU blocks fastgan keeps for reuse.

    The CPU kernels take their gradient-sized outputs (dL/dgrads of the penalties, W / sigma of
    spectral norm and its gradient) from a small cache of freed blocks of >= 256 KiB, so the next
    training step does not page-fault fresh memory (csrc/cpu/block_cache.h). The cache holds at most
    ``FASTGAN_CPU_CACHE_MB`` (environment, read at import; default 256, 0 turns it off).

    Example::

        >>> fastgan.empty_cache()
    """
    if _C is not None:
        torch.ops.fastgan.cpu_cache_clear()
