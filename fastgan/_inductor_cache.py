"""One torch.compile (inductor) cache directory per ``ATEN_CPU_CAPABILITY``.

torch 2.13's inductor cache is not keyed by ``ATEN_CPU_CAPABILITY``: a CPU kernel compiled under
one capability is taken from the cache under another. Measured on an AVX-512 Xeon with a clean
cache, a ``p.data.clamp_`` loop compiled first with the default capability (avx512) and then run
under ``ATEN_CPU_CAPABILITY=avx2`` returned its input unclamped (silently wrong), under ``=default``
failed to compile (``'at::vec' has not been declared``), and an avx512 run after avx2 runs aborted
with heap corruption. Each with its own cache directory, all three were right. fastgan's command
line, its test suite and its pytest benchmarks call :func:`separate_inductor_cache` first, so that
checking a result under several capabilities (as the README suggests) cannot mix their kernels.
"""
import os


def separate_inductor_cache():
    """Point ``TORCHINDUCTOR_CACHE_DIR`` at ``<default>_cap_<capability>`` when
    ``ATEN_CPU_CAPABILITY`` is set and the cache directory is torch's default (unset, or exported
    by torch itself: importing ``torch._dynamo`` writes the default into the environment). A
    directory the user chose is kept. Returns the directory set, or None (nothing changed). Call it
    before the first compilation."""
    cap = os.environ.get("ATEN_CPU_CAPABILITY")
    if not cap:
        return None
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    default = os.path.abspath(default_cache_dir())
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current and os.path.abspath(current) != default:
        return None
    path = f"{default}_cap_{cap}"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    return path
