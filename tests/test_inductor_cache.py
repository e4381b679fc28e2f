"""torch.compile under several ATEN_CPU_CAPABILITY values in a row (as one checks that a result holds
on every CPU kernel set): each capability must compile into its own inductor cache
(fastgan/_inductor_cache.py says why: torch 2.13 reuses one capability's kernels under another)."""
import os
import subprocess
import sys

CHILD = r"""
import sys
import torch
from fastgan._inductor_cache import separate_inductor_cache
separate_inductor_cache()

def clip_loop(ps):  # the original WGAN code's clipping, as fastgan bench compiles it
    for p in ps:
        p.data.clamp_(-0.01, 0.01)

gen = torch.Generator().manual_seed(1)
ps = [torch.randn(s, generator=gen).mul_(0.02) for s in [(64, 3, 4, 4), (128, 64, 4, 4)]]
torch.compile(clip_loop)(ps)
print(max(p.abs().max().item() for p in ps))
"""


def _compile_in_child(tmp_path, cap):
    env = dict(os.environ, TMPDIR=str(tmp_path))   # the default cache directory lives under TMPDIR
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)        # as on a fresh shell (inductor exports it once used)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if cap:
        env["ATEN_CPU_CAPABILITY"] = cap
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600)


def test_capabilities_do_not_share_compiled_kernels(tmp_path):
    # the machine's own capability first (it fills the default cache), then the scalar kernels:
    # without separate caches the second run failed to compile on an AVX-512 Xeon ('at::vec' has
    # not been declared) and an avx2 run returned its input unclamped
    for cap in (None, "default"):
        res = _compile_in_child(tmp_path, cap)
        assert res.returncode == 0, f"ATEN_CPU_CAPABILITY={cap}: {res.stderr[-2000:]}"
        assert float(res.stdout.split()[-1]) <= 0.01, f"ATEN_CPU_CAPABILITY={cap}: not clamped ({res.stdout})"
    caches = sorted(n for n in os.listdir(tmp_path) if n.startswith("torchinductor_"))
    assert len(caches) == 2 and caches[1].endswith("_cap_default"), caches


def test_an_explicit_cache_directory_is_kept(monkeypatch):
    from fastgan._inductor_cache import separate_inductor_cache

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/some/where")
    assert separate_inductor_cache() is None and os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/some/where"
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    assert separate_inductor_cache() is None and "TORCHINDUCTOR_CACHE_DIR" not in os.environ
