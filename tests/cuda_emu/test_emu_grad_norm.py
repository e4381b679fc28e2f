"""csrc/cuda/grad_norm.cu, emulated on the CPU, against the float64 reference of tests/test_grad_norm.py."""
import math
import zlib

import pytest
import torch

from conftest import DTYPES, RTOL
from fastgan import reference
from test_grad_norm import CONFIGS, REDUCTIONS, close, expected, layouts

from .conftest import describe, run_child

IDS = [f"t{c[0]}p{c[1]}{'os' if c[2] else ''}" for c in CONFIGS]
# Rows of 1 element up to rows longer than a block's vector step many times over (split across
# blocks), B not a multiple of anything, odd sizes that take the scalar (non-vector) path.
SHAPES = [(1, 1), (1, 7), (7,), (5, 3, 7, 9), (13, 100), (2, 8192), (3, 10001)]


def run(emu, g, target=1.0, power=2.0, one_sided=False, reduction="mean", w=None):
    """What fastgan.ops.penalty does for a non-CPU backend: the op's phi, reduced in eager torch."""
    x = g.detach().clone().requires_grad_(True)
    phi, norms = emu.gnp_forward(x, float(target), float(power), bool(one_sided))
    out = reference.reduce(phi, reduction).to(g.dtype)
    (gx,) = torch.autograd.grad(out, x, None if w is None else w.to(out.dtype))
    return out, gx, norms


def check(emu, g, target, power, one_sided, reduction, dtype):
    ref, ref_grad, w, vscale, gscale = expected(g, target, power, one_sided, reduction)
    out, gx, norms = run(emu, g, target, power, one_sided, reduction, w)
    assert out.dtype == g.dtype and out.shape == ref.shape
    assert gx.shape == g.shape and gx.dtype == g.dtype
    tol = RTOL[dtype]
    assert close(out, ref, vscale, tol), (g.shape, out, ref)
    assert close(gx, ref_grad, gscale, tol), g.shape
    n_ref = g.detach().double().reshape(g.shape[0], -1).norm(dim=1)
    assert close(norms, n_ref, n_ref, tol), g.shape


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k", range(len(CONFIGS)), ids=IDS)
def test_matches_float64(emu, dtype, k):
    """Every dtype x config; the shapes rotate over the configs so each dtype sees every shape."""
    torch.manual_seed(zlib.crc32(f"emu{dtype}{k}".encode()))
    for shape in (SHAPES[k % len(SHAPES)], SHAPES[(k + 3) % len(SHAPES)], SHAPES[-1 if k % 2 else -2]):
        n = math.prod(shape[1:])
        g = (torch.randn(shape) * (1.3 / math.sqrt(n))).to(dtype)
        check(emu, g, *CONFIGS[k], "mean", dtype)


def test_many_rows(emu):
    """B = 70 rows of 255 elements (one block per row, scalar path); B = 260 (finalize: 2 blocks)."""
    torch.manual_seed(1)
    check(emu, torch.randn(70, 3, 17, 5, dtype=torch.float64) / 10, *CONFIGS[0], "none", torch.float64)
    g = torch.randn(260, 1, dtype=torch.float32) / 3
    check(emu, g, *CONFIGS[3], "sum", torch.float32)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reductions(emu, reduction):
    g = torch.randn(6, 2, 5, 3, dtype=torch.float64)
    for cfg in CONFIGS:
        check(emu, g, *cfg, reduction, torch.float64)


def test_layouts(emu):
    """channels_last, batch slices, permuted, expanded rows: read in place or copied, same result."""
    for name, g in layouts("cpu"):
        for cfg in CONFIGS[:3]:
            check(emu, g, *cfg, "none", torch.float64)


def test_misaligned_rows_take_the_scalar_path(emu):
    """Rows whose start is not 16-byte aligned (a view at offset 1) must not take the vector loads."""
    base = torch.randn(4 * 64 + 1, dtype=torch.float32)
    g = base[1:].view(4, 64)
    assert g.data_ptr() % 16 != 0
    for cfg in CONFIGS[:2]:
        check(emu, g, *cfg, "none", torch.float32)


def test_zero_rows(emu):
    g = torch.randn(4, 10, dtype=torch.float64)
    g[1] = 0
    g[3] = 0
    for cfg in CONFIGS:
        check(emu, g, *cfg, "none", torch.float64)
        _, gx, _ = run(emu, g, *cfg, "none", torch.ones(4))
        assert (gx[1] == 0).all() and (gx[3] == 0).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_propagates(emu, bad):
    g = torch.randn(4, 33)
    g[2, 5] = bad
    for cfg in CONFIGS:
        out, gx, _ = run(emu, g, *cfg, "none", torch.ones(4))
        assert not torch.isfinite(out[2]), cfg
        assert torch.isfinite(out[[0, 1, 3]]).all()
        assert not torch.isfinite(gx[2]).all()
        assert torch.isfinite(gx[[0, 1, 3]]).all()


def test_gradcheck(emu):
    torch.manual_seed(0)
    g = torch.randn(3, 2, 5, dtype=torch.float64).requires_grad_(True)
    for t, p, o in CONFIGS:  # fast mode: a few random directions, each launch is costly here
        assert torch.autograd.gradcheck(lambda x: emu.gnp_forward(x, t, p, o)[0], (g,), fast_mode=True)


def test_empty_rows_subprocess():
    """B > 0 rows of 0 elements (issue 14, defect 2: chunk = 0 and an integer division by zero,
    SIGFPE, in the launch plan). In a child process: a crash fails this test, not pytest."""
    res = run_child(
        "g = torch.randn(3, 0, requires_grad=True)\n"
        "phi, n = ops.gnp_forward(g, 1.0, 2.0, False)\n"
        "assert torch.equal(phi, torch.ones(3)) and torch.equal(n, torch.zeros(3)), (phi, n)\n"
        "(gx,) = torch.autograd.grad(phi.sum(), g)\n"
        "assert gx.shape == (3, 0)\n"
        "print('ok')\n")
    assert res.returncode == 0 and "ok" in res.stdout, describe(res)


def test_opcheck(emu):
    torch.manual_seed(0)
    for g in (torch.randn(4, 3, 5, requires_grad=True), torch.randn(3, 40, dtype=torch.float64, requires_grad=True)):
        for t, p, o in CONFIGS[:1]:
            torch.library.opcheck(emu.gnp_forward.default, (g, t, p, o))
            phi, norms = emu.gnp_forward(g.detach(), t, p, o)
            torch.library.opcheck(emu.gnp_backward.default, (torch.randn_like(phi), g.detach(), norms, t, p, o))
