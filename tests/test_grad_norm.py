"""fg.grad_norm_penalty: every backend against an independent float64 computation."""
import math
import subprocess
import sys
import zlib

import pytest
import torch

import fastgan as fg
from conftest import DTYPES, RTOL, available_backends, backend_devices, rel_err

CONFIGS = [  # (target, power, one_sided)
    (1.0, 2.0, False),  # WGAN-GP
    (1.0, 2.0, True),  # LP
    (0.0, 2.0, False),  # R1/R2 (no square root)
    (0.0, 6.0, False),  # WGAN-div
    (0.5, 1.0, False),
    (2.0, 3.0, True),
]
REDUCTIONS = ["mean", "sum", "none"]
RUNS = [("reference", "cpu")] + backend_devices()


def expected(g, target, power, one_sided, reduction):
    """The penalty, its gradient, the upstream weights and error scales, in float64, written
    independently of fastgan.

    (n - t)^p cancels when n is close to t: the kernels' rounding of n is amplified there. The
    scales are the magnitudes before cancellation, ``(n + t)^p`` and ``p (n + t)^(p-1) |g| / n``,
    so "relative error" means relative to the problem's own conditioning, not a loose atol.
    """
    x = g.detach().double().clone().requires_grad_(True)
    flat = x.reshape(x.shape[0], -1)
    n = flat.detach().norm(dim=1)
    if target == 0 and power == 2 and not one_sided:
        phi = (flat * flat).sum(1)
    else:
        d = flat.norm(dim=1) - target
        phi = torch.relu(d) ** power if one_sided else d.abs() ** power
    reduce = {"mean": torch.mean, "sum": torch.sum, "none": lambda v: v}[reduction]
    out = reduce(phi)
    w = torch.randn(out.shape, dtype=torch.float64) if reduction == "none" else torch.ones((), dtype=torch.float64)
    (gx,) = torch.autograd.grad(out, x, w)
    per_row_w = {"mean": torch.full_like(n, 1 / len(n)), "sum": torch.ones_like(n), "none": w.abs()}[reduction]
    value_scale = reduce((n + target) ** power)
    coef_scale = power * (n + target) ** (power - 1) / n.clamp_min(1e-300) * per_row_w
    grad_scale = coef_scale.view((-1,) + (1,) * (g.dim() - 1)) * x.detach().abs()
    return out.detach(), gx, w, value_scale, grad_scale


def run(g, backend, target=1.0, power=2.0, one_sided=False, reduction="mean", w=None):
    x = g.detach().clone().requires_grad_(True)
    out = fg.grad_norm_penalty(x, target=target, power=power, one_sided=one_sided, reduction=reduction,
                               backend=backend)
    (gx,) = torch.autograd.grad(out, x, None if w is None else w.to(out.dtype))
    return out, gx


def close(a, b, scale, tol):
    """|a - b| <= tol * max(|b|, scale) elementwise, in float64, plus the rounding quantum of
    a's subnormal range (tiny gradients of half types are subnormal)."""
    fi = torch.finfo(a.dtype)
    a, b = a.detach().double(), b.detach().double()
    bound = tol * torch.maximum(b.abs(), scale) + fi.smallest_normal * fi.eps
    return bool(((a - b).abs() <= bound).all())


def check(g, backend, target, power, one_sided, reduction, dtype):
    ref, ref_grad, w, vscale, gscale = expected(g, target, power, one_sided, reduction)
    out, gx = run(g, backend, target, power, one_sided, reduction, w)
    assert out.dtype == g.dtype and out.shape == ref.shape
    assert gx.shape == g.shape and gx.dtype == g.dtype
    tol = RTOL[dtype]
    assert close(out, ref, vscale, tol), (out, ref)
    assert close(gx, ref_grad, gscale, tol), rel_err(gx, ref_grad)


def shapes_for(backend):
    base = [(1, 1), (1, 7), (7,), (5, 3, 7, 9), (13, 100)]
    if backend == "triton":
        return base  # interpreter: small; tiny blocks make these split rows anyway
    return base + [(3, 40000), (70, 3, 17, 5)]  # rows longer than a chunk; B not a multiple of anything


@pytest.fixture(autouse=True)
def _tiny_triton_blocks(request):
    if "triton" in request.node.name:
        request.getfixturevalue("small_triton_blocks")


@pytest.mark.parametrize("backend,device", RUNS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"t{c[0]}p{c[1]}{'os' if c[2] else ''}")
def test_matches_float64(backend, device, dtype, cfg):
    torch.manual_seed(zlib.crc32(f"{backend}{dtype}{cfg}".encode()))
    for shape in shapes_for(backend):
        n = math.prod(shape[1:])
        # norms around 1 (either side of the target), so n^6 stays finite in float16
        g = (torch.randn(shape, device=device) * (1.3 / math.sqrt(n))).to(dtype)
        check(g, backend, *cfg, "mean", dtype)


@pytest.mark.parametrize("backend,device", RUNS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reductions(backend, device, reduction):
    g = torch.randn(6, 2, 5, 3, device=device, dtype=torch.float64)
    for cfg in CONFIGS:
        check(g, backend, *cfg, reduction, torch.float64)


def layouts(device):
    base = torch.randn(6, 4, 5, 7, device=device, dtype=torch.float64)
    yield "channels_last", base.to(memory_format=torch.channels_last)
    yield "batch_slice", base[::2]
    yield "inner_slice", base[:, :, ::2]
    yield "permuted", base.permute(0, 3, 1, 2)
    yield "transposed_2d", torch.randn(11, 6, device=device, dtype=torch.float64).t()
    yield "expanded_batch", torch.randn(1, 9, device=device, dtype=torch.float64).expand(4, 9)


@pytest.mark.parametrize("backend,device", RUNS)
def test_layouts(backend, device):
    for name, g in layouts(device):
        for cfg in CONFIGS[:3]:
            check(g, backend, *cfg, "none", torch.float64)


@pytest.mark.parametrize("backend", [b for b in available_backends() if b == "cpu"])
def test_dense_layouts_are_not_copied(backend):
    """channels_last and batch-sliced gradients are read in place: no copy kernel runs."""
    def full_copies(g):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            torch.autograd.grad(fg.grad_norm_penalty(g, backend=backend), g)  # .backward() would add
            # AccumulateGrad's own copy into g's (non-dense) layout
        copies = [(e.name, e.input_shapes) for e in prof.events()
                  if e.name in ("aten::contiguous", "aten::clone", "aten::copy_", "aten::_to_copy")]
        return [c for c in copies if any(list(s) == list(g.shape) for s in c[1])]

    # control: a row with gaps must be copied, and the profiler must see that copy
    assert full_copies(torch.randn(4, 3, 16, 32)[..., ::2].requires_grad_(True)), "check the test"
    g = torch.randn(8, 3, 16, 16).to(memory_format=torch.channels_last)[::2].requires_grad_(True)
    assert not full_copies(g)


@pytest.mark.parametrize("backend,device", RUNS)
def test_zero_rows(backend, device):
    g = torch.randn(4, 10, device=device, dtype=torch.float64)
    g[1] = 0
    g[3] = 0
    for cfg in CONFIGS:
        check(g, backend, *cfg, "none", torch.float64)
        _, gx = run(g, backend, *cfg, "none", torch.ones(4))
        assert (gx[1] == 0).all() and (gx[3] == 0).all()


@pytest.mark.parametrize("backend,device", RUNS)
def test_empty_rows(backend, device):
    g = torch.randn(3, 0, device=device)
    out, gx = run(g, backend, reduction="none", w=torch.ones(3))
    assert torch.equal(out, torch.ones(3, device=device))  # (0 - 1)^2
    assert gx.shape == (3, 0)


@pytest.mark.parametrize("backend,device", RUNS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_propagates(backend, device, bad):
    g = torch.randn(4, 33, device=device)
    g[2, 5] = bad
    for cfg in CONFIGS:
        out, gx = run(g, backend, *cfg, "none", torch.ones(4))
        assert not torch.isfinite(out[2]), cfg
        assert torch.isfinite(out[[0, 1, 3]]).all()
        assert not torch.isfinite(gx[2]).all()
        assert torch.isfinite(gx[[0, 1, 3]]).all()
        assert not torch.isfinite(fg.grad_norm_penalty(g, target=cfg[0], power=cfg[1], one_sided=cfg[2],
                                                       backend=backend))


@pytest.mark.parametrize("backend,device", RUNS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"t{c[0]}p{c[1]}{'os' if c[2] else ''}")
def test_gradcheck(backend, device, cfg):
    torch.manual_seed(0)
    g = torch.randn(3, 2, 5, device=device, dtype=torch.float64).requires_grad_(True)
    t, p, o = cfg
    for reduction in ("none", "mean", "sum"):  # the CPU backend fuses mean/sum into its own op
        assert torch.autograd.gradcheck(
            lambda x: fg.grad_norm_penalty(x, target=t, power=p, one_sided=o, reduction=reduction, backend=backend),
            (g,))


def _op_samples(device):
    torch.manual_seed(0)
    for shape in [(4, 3, 5), (1, 1), (6, 40)]:
        for dtype in (torch.float32, torch.float64):
            g = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
            yield g
    yield torch.randn(4, 3, 6, 5, device=device).to(memory_format=torch.channels_last).requires_grad_(True)


@pytest.mark.parametrize("backend,device", backend_devices())
def test_opcheck(backend, device):
    from fastgan.ops import penalty

    ns = penalty.triton_ops() if backend == "triton" else torch.ops.fastgan
    for g in _op_samples(device):
        for t, p, o in CONFIGS[:4]:
            torch.library.opcheck(ns.gnp_forward.default, (g, t, p, o))
            phi, norms = ns.gnp_forward(g.detach(), t, p, o)
            torch.library.opcheck(ns.gnp_backward.default, (torch.randn_like(phi), g.detach(), norms, t, p, o))
            if backend == "cpu":  # the reduced form
                torch.library.opcheck(ns.gnp_loss.default, (g, t, p, o, 0.3))
                torch.library.opcheck(ns.gnp_loss_backward.default,
                                      (torch.randn((), dtype=g.dtype), g.detach(), norms, t, p, o, 0.3))


@pytest.mark.parametrize("backend", [b for b in available_backends() if b == "cpu"])
def test_torch_compile_fullgraph(backend):
    def f(g):
        return fg.grad_norm_penalty(g, target=1.0, backend=backend) + fg.grad_norm_penalty(
            g, target=0.0, reduction="sum", backend=backend)

    torch._dynamo.reset()
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    g = torch.randn(8, 3, 4, 4, requires_grad=True)
    out = cf(g)
    (gx,) = torch.autograd.grad(out, g)
    g2 = g.detach().double().requires_grad_(True)
    ref = fg.reference.grad_norm_penalty(g2) + fg.reference.grad_norm_penalty(g2, 0.0, 2.0, False, "sum")
    (gr,) = torch.autograd.grad(ref, g2)
    assert rel_err(out, ref) < 1e-5 and rel_err(gx, gr) < 1e-5


# ---------------------------------------------------------------------------------------------
# bad input
@pytest.mark.parametrize("grads,exc,match", [
    (torch.ones(3, 4, dtype=torch.int64), TypeError, "grads must be a floating-point"),
    (torch.ones(3, 4, dtype=torch.complex64), TypeError, "grads must be a floating-point"),
    (torch.tensor(1.0), ValueError, "0-d"),
    (torch.ones(0, 4), ValueError, "empty batch"),
    ([1.0, 2.0], TypeError, "grads must be a torch.Tensor"),
])
def test_bad_grads(grads, exc, match):
    with pytest.raises(exc, match=match):
        fg.grad_norm_penalty(grads)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(power=0.0), ValueError, "power must be > 0"),
    (dict(power=-2.0), ValueError, "power must be > 0"),
    (dict(power=math.nan), ValueError, "power"),
    (dict(power="2"), TypeError, "power"),
    (dict(target=-1.0), ValueError, "target must be >= 0"),
    (dict(target=math.nan), ValueError, "target"),
    (dict(reduction="avg"), ValueError, "reduction must be one of"),
    (dict(backend="tpu"), ValueError, "backend must be one of"),
    (dict(one_sided=1), TypeError, "one_sided"),
])
def test_bad_options(kw, exc, match):
    with pytest.raises(exc, match=match):
        fg.grad_norm_penalty(torch.randn(3, 4), **kw)


def test_backend_device_mismatch():
    if not fg.backends()["cuda"]["available"]:
        with pytest.raises(RuntimeError, match="backend 'cuda' is not available here"):
            fg.grad_norm_penalty(torch.randn(3, 4), backend="cuda")
    else:
        with pytest.raises(ValueError, match="runs on cuda tensors"):
            fg.grad_norm_penalty(torch.randn(3, 4), backend="cuda")


# ---------------------------------------------------------------------------------------------
# backend selection
def test_backends_report():
    st = fg.backends()
    assert set(st) == {"reference", "cpu", "cuda", "triton"}
    for info in st.values():
        assert isinstance(info["available"], bool) and info["reason"]


def test_set_and_use_backend(monkeypatch):
    from fastgan import backend as bk

    dev = torch.device("cpu")
    auto = bk.resolve("grad_norm_penalty", "auto", dev)
    assert auto == ("cpu" if fg.backends()["cpu"]["available"] else "reference")
    with fg.use_backend("reference"):
        assert bk.resolve("grad_norm_penalty", "auto", dev) == "reference"
        assert bk.resolve("grad_norm_penalty", "cpu" if auto == "cpu" else "reference", dev) == auto
    assert bk.resolve("grad_norm_penalty", "auto", dev) == auto
    monkeypatch.setattr(bk, "_global_default", ["reference"])
    assert bk.resolve("grad_norm_penalty", "auto", dev) == "reference"
    fg.set_backend("auto")
    assert bk.resolve("grad_norm_penalty", "auto", dev) == auto
    with pytest.raises(ValueError, match="backend must be one of"):
        fg.set_backend("fast")
    if not fg.backends()["cuda"]["available"]:
        with pytest.raises(RuntimeError, match="not available"):
            fg.set_backend("cuda")


def test_imports_without_extension():
    """If fastgan._C is missing, fastgan still imports, says why, and "auto" falls back."""
    code = (
        "import sys; sys.modules['fastgan._C'] = None\n"
        "import torch, fastgan as fg\n"
        "st = fg.backends(); assert not st['cpu']['available'] and 'fastgan._C' in st['cpu']['reason']\n"
        "g = torch.randn(4, 5, dtype=torch.float64)\n"
        "ref = ((g.norm(dim=1) - 1) ** 2).mean()\n"
        "assert torch.allclose(fg.grad_norm_penalty(g), ref)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
