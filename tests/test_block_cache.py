"""The CPU block cache (csrc/cpu/block_cache.h): large outputs reuse freed blocks, never a live one."""
import os
import subprocess
import sys

import pytest
import torch

import fastgan as fg
from conftest import available_backends, rel_err

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="needs the compiled CPU kernels")

stats = torch.ops.fastgan.cpu_cache_stats  # (cached bytes, cached blocks, limit)
B, N = 16, 20000  # 1.28 MB of float32: above the cache's 256 KiB floor


def penalty_grad(g):
    g = g.detach().requires_grad_(True)
    return torch.autograd.grad(fg.grad_norm_penalty(g, backend="cpu"), g)[0]


def reference_grad(g):
    g = g.detach().double().requires_grad_(True)
    return torch.autograd.grad(fg.reference.grad_norm_penalty(g), g)[0]


def test_freed_block_is_reused():
    fg.empty_cache()
    assert stats()[:2] == [0, 0]
    g = torch.randn(B, N)
    a = penalty_grad(g)
    ptr = a.data_ptr()
    del a
    assert stats()[:2] == [B * N * 4, 1]
    g2 = torch.randn(B, N)
    b = penalty_grad(g2)
    assert b.data_ptr() == ptr and stats()[:2] == [0, 0]
    assert rel_err(b, reference_grad(g2)) < 1e-5


def test_live_outputs_are_never_shared():
    gs = [torch.randn(B, N) for _ in range(3)]
    outs = [penalty_grad(g) for g in gs]
    copies = [o.clone() for o in outs]
    del outs[1]  # its block goes back and is handed to the next call, not to a live tensor
    outs.append(penalty_grad(torch.randn(B, N)))
    assert len({o.data_ptr() for o in outs}) == len(outs)
    assert torch.equal(outs[0], copies[0]) and torch.equal(outs[1], copies[2])
    for o, g in zip((outs[0], outs[1]), (gs[0], gs[2])):
        assert rel_err(o, reference_grad(g)) < 1e-5


def test_small_outputs_bypass_the_cache():
    fg.empty_cache()
    a = penalty_grad(torch.randn(4, 100))
    del a
    assert stats()[:2] == [0, 0]


def test_empty_cache_and_resize():
    a = penalty_grad(torch.randn(B, N))
    a.resize_(2 * B, N)  # storage growth goes through the cache's allocator (copy_data)
    a[B:] = 1
    assert a.shape == (2 * B, N) and (a[B:] == 1).all()
    del a
    assert stats()[0] > 0
    fg.empty_cache()
    assert stats()[:2] == [0, 0]


def test_spectral_norm_weights_from_the_cache_stay_intact():
    torch.manual_seed(0)
    lin = fg.apply_spectral_norm(torch.nn.Sequential(torch.nn.Linear(1024, 512)))  # 2 MiB weight
    x = torch.randn(3, 1024)
    y1 = lin(x)
    w1 = lin[0].weight  # W / sigma of the first forward, kept alive by y1's graph
    w1_copy = w1.detach().clone()
    y2 = lin(x)  # two forwards before one backward
    assert lin[0].weight.data_ptr() != w1.data_ptr() and torch.equal(w1, w1_copy)
    (y1.sum() + y2.sum()).backward()
    assert torch.isfinite(lin[0].parametrizations.weight.original.grad).all()


@pytest.mark.parametrize("limit_mb,cached", [("0", False), ("1", False), ("8", True)])
def test_limit_from_environment(limit_mb, cached):
    code = (
        "import torch, fastgan as fg\n"
        f"g = torch.randn({B}, {N}, requires_grad=True)\n"
        "a = torch.autograd.grad(fg.grad_norm_penalty(g, backend='cpu'), g)[0]\n"
        "del a\n"
        "print(*torch.ops.fastgan.cpu_cache_stats())\n"
    )
    env = dict(os.environ, FASTGAN_CPU_CACHE_MB=limit_mb)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    cached_bytes, blocks, limit = map(int, out.stdout.split())
    assert limit == int(limit_mb) << 20
    assert (cached_bytes, blocks) == ((B * N * 4, 1) if cached else (0, 0))
