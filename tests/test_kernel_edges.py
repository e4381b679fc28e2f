"""Edge cases of the gradient-norm penalty and weight-clipping kernels, written to catch the bugs a
kernel author writes (tests/mutation lists them): lengths on both sides of every vector width and
chunk size, half-precision values whose square under/overflows in half, NaN/inf in the scalar
tails, zero rows, every reduction x one/two-sided x norms on both sides of the target, outputs
written through strided inputs (no clone first), and how many elements each clipping thread visits.

Every result is compared by value, per row, with a float64 computation written out here (not
fastgan.reference, so mutants of the reference are caught too). Vector widths: at::vec holds
32 bytes (AVX2, or the scalar fallback) or 64 bytes (AVX512): 4..32 elements; the kernels unroll
by 1, 2 or 4 vectors, so lengths around every multiple of 4 up to 128 (+-1) reach every loop exit.
"""
import math

import pytest
import torch

import fastgan as fg
from conftest import available_backends
from fastgan.ops import penalty as pen_ops

HAS_CPU = fg.backends()["cpu"]["available"]
HAS_TRITON = "triton" in available_backends()
# kernels under test; the reference backend is checked too (it is the ground truth of other tests)
GNP_BACKENDS = ["reference"] + [b for b in ("cpu", "triton") if b in available_backends()]

WIDTHS = (4, 8, 16, 32, 64, 128)
LENGTHS = sorted({1, 2, 3} | {m + d for m in WIDTHS for d in (-1, 0, 1)})
TRITON_LENGTHS = [1, 15, 16, 17, 33]  # with BLOCK=16 (small_triton_blocks): below, at, above a block
GNP_CHUNK = 16384  # csrc/cpu/grad_norm.cpp kChunk: rows longer than this are split into chunks
CHUNK_LENGTHS = [GNP_CHUNK - 1, GNP_CHUNK, GNP_CHUNK + 1, 2 * GNP_CHUNK + 33]
# float32 accumulation of <= 2*16384+33 squares: the error bound is far below this
ACC_RTOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-6, torch.bfloat16: 2e-6}
# one output rounding in the input dtype, plus the float32 coefficient
OUT_RTOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
HALF = (torch.float16, torch.bfloat16)
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _tiny_triton_blocks(request):
    if "triton" in request.node.name:
        request.getfixturevalue("small_triton_blocks")


def lengths_for(backend):
    return TRITON_LENGTHS if backend == "triton" else LENGTHS


# --------------------------------------------------------------------------------------------
# float64 ground truth of the penalty, per row
def phi64(norms, target, power, one_sided):
    if target == 0 and power == 2 and not one_sided:
        return norms * norms
    d = norms - target
    d = torch.where(d < 0, torch.zeros_like(d), d) if one_sided else d.abs()
    return d.pow(power)


def coef64(norms, gphi, target, power, one_sided):
    """c_r with dL/dg_r = c_r g_r, for upstream gradient gphi_r of phi_r."""
    if target == 0 and power == 2 and not one_sided:
        return 2 * gphi
    d = norms - target
    if one_sided:
        dphi = torch.where(d < 0, torch.zeros_like(d), power * d.clamp_min(0).pow(power - 1))
    else:
        dphi = power * d.abs().pow(power - 1) * torch.sign(d)
    c = gphi * dphi / norms
    return torch.where(norms == 0, torch.zeros_like(c), c)


def truth(g, target, power, one_sided):
    g64 = g.detach().double().reshape(g.shape[0], -1)
    n = (g64 * g64).sum(1).sqrt()
    return n, phi64(n, target, power, one_sided)


def close_rows(actual, want, rtol, what):
    """Per element relative error (rows of very different scale are each checked); float16 results
    below its smallest normal number may be off by one subnormal step."""
    atol = 2.0**-24 if actual.dtype == torch.float16 else 0.0
    torch.testing.assert_close(actual.double(), want.double(), rtol=rtol, atol=atol, equal_nan=True,
                               msg=lambda m: f"{what}: {m}")


def forward_and_grad(backend, g, target, power, one_sided, w):
    """(phi, norms) in the accumulation dtype from the op layer, and d(sum w*phi)/dg."""
    x = g.detach().requires_grad_(True)
    phi, norms = pen_ops.gnp(backend, x, target, power, one_sided)
    (gx,) = torch.autograd.grad((phi * w.to(phi.dtype)).sum(), x)
    return phi.detach(), norms, gx


def half_rows(n, dtype, gen):
    """Rows whose squares underflow (1e-4) and overflow (300) in float16, and values whose squares
    are not representable in bfloat16, then a random row."""
    rows = [torch.full((n,), 1e-4), torch.full((n,), 300.0), torch.full((n,), 1.0 + 3 / 256),
            torch.randn(n, generator=gen)]
    return torch.stack(rows).to(dtype)


# --------------------------------------------------------------------------------------------
# gradient-norm penalty: lengths around vector widths and chunks, half under/overflow
@pytest.mark.parametrize("backend", [b for b in GNP_BACKENDS if b != "reference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gnp_every_length_accumulates_in_float32(backend, dtype):
    """Norms come back in float32 (float64): they must be accurate to that precision at every
    length, even when the input's own squares under/overflow in float16 (scalar tails included)."""
    gen = torch.Generator().manual_seed(1)
    for n in lengths_for(backend):
        g = half_rows(n, dtype, gen)
        w = torch.rand(g.shape[0], generator=gen, dtype=torch.float64) + 0.5
        for cfg in ((0.0, 2.0, False), (1.0, 2.0, False)):
            phi, norms, gx = forward_and_grad(backend, g, *cfg, w)
            n_ref, phi_ref = truth(g, *cfg)
            close_rows(norms, n_ref, ACC_RTOL[dtype], f"n={n} {cfg} norms")
            close_rows(phi, phi_ref, ACC_RTOL[dtype] * 4, f"n={n} {cfg} phi")
            want = (coef64(n_ref, w, *cfg)[:, None] * g.double()).to(dtype)
            close_rows(gx, want, OUT_RTOL[dtype], f"n={n} {cfg} grad")


@pytest.mark.parametrize("backend", [b for b in GNP_BACKENDS if b == "cpu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_gnp_rows_around_the_chunk_size(backend, dtype):
    """Rows just below, at and above the CPU kernel's chunk (partial sums per chunk, per row), read
    through a batch slice (row stride != row length), forward and backward, reduced and not."""
    gen = torch.Generator().manual_seed(2)
    for n in CHUNK_LENGTHS:
        base = (torch.randn(7, n, generator=gen, dtype=torch.float64) / math.sqrt(n) * 1.3).to(dtype)
        base[3] = 1e-4  # float16: squares underflow; the norm is still 1e-4 * sqrt(n)
        g = base[1::2]  # rows 1, 3, 5 of base: row stride 2n
        w = torch.rand(3, generator=gen, dtype=torch.float64) + 0.5
        for cfg in ((1.0, 2.0, False), (1.0, 2.0, True), (0.0, 2.0, False)):
            phi, norms, gx = forward_and_grad(backend, g, *cfg, w)
            n_ref, phi_ref = truth(g, *cfg)
            close_rows(norms, n_ref, 1e-5, f"n={n} norms")
            close_rows(phi, phi_ref, 4e-5, f"n={n} phi")
            close_rows(gx, (coef64(n_ref, w, *cfg)[:, None] * g.double()).to(dtype), max(OUT_RTOL[dtype], 1e-5), f"n={n} grad")
            # reduced (CPU: one fused op with its own backward)
            x = base.detach().requires_grad_(True)
            loss = fg.grad_norm_penalty(x[1::2], target=cfg[0], one_sided=cfg[2], reduction="sum", backend=backend)
            loss.backward()
            close_rows(loss.float(), phi_ref.sum().float(), 4e-5 if dtype == torch.float32 else 1e-3, f"n={n} sum")
            want = torch.zeros(7, n, dtype=torch.float64)
            want[1::2] = coef64(n_ref, torch.ones(3, dtype=torch.float64), *cfg)[:, None] * g.double()
            close_rows(x.grad, want.to(dtype), max(OUT_RTOL[dtype], 1e-5), f"n={n} grad of the sum")


# --------------------------------------------------------------------------------------------
# non-finite values in the scalar tails
@pytest.mark.parametrize("backend", GNP_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gnp_nonfinite_in_the_tail(backend, dtype):
    """NaN, +inf and -inf as the LAST element of a row (the scalar tail of every unrolled loop):
    that row's norm and phi are NaN/inf (one-sided too: max(0, NaN) is NaN), the others exact."""
    gen = torch.Generator().manual_seed(3)
    nan, inf = float("nan"), float("inf")
    for n in ([17, 33] if backend == "triton" else [5, 17, 33, 65, 129]):
        g = (torch.randn(5, n, generator=gen, dtype=torch.float64) * 2.5 / math.sqrt(n)).to(dtype)  # norms ~2.5
        g[1, -1], g[2, -1], g[3, -1] = nan, inf, -inf
        w = torch.ones(5, dtype=torch.float64)
        for cfg in ((1.0, 2.0, False), (1.0, 2.0, True), (0.0, 2.0, False), (0.5, 3.0, True)):
            phi, norms, gx = forward_and_grad(backend, g, *cfg, w)
            n_ref, phi_ref = truth(g, *cfg)
            assert math.isnan(norms[1]) and math.isnan(phi[1]), (n, cfg, norms, phi)
            assert norms[2] == inf and norms[3] == inf and phi[2] == inf and phi[3] == inf, (n, cfg, norms, phi)
            keep = [0, 4]
            close_rows(norms[keep], n_ref[keep], ACC_RTOL[dtype], f"n={n} {cfg} finite norms")
            close_rows(phi[keep], phi_ref[keep], 4 * ACC_RTOL[dtype], f"n={n} {cfg} finite phi")
            sumsq = cfg == (0.0, 2.0, False)  # gradient 2g: NaN only where g is; else c = NaN scales the row
            assert (gx[1, -1].isnan() if sumsq else gx[1].isnan().all()), (n, cfg)
            assert torch.isfinite(gx[keep]).all()
            loss = fg.grad_norm_penalty(g, target=cfg[0], power=cfg[1], one_sided=cfg[2], backend=backend)
            assert math.isnan(loss), (n, cfg, loss)


# --------------------------------------------------------------------------------------------
# every reduction x one/two-sided x norms on both sides of the target
def rows_with_norms(norms, n, dtype, gen):
    g = torch.randn(len(norms), n, generator=gen, dtype=torch.float64)
    g = g / g.norm(dim=1, keepdim=True) * torch.tensor(norms, dtype=torch.float64)[:, None]
    return g.to(dtype)


CFGS = [(t, p, o) for t in (1.0, 0.5) for p in (2.0, 1.0, 3.0) for o in (False, True)] + [(0.0, 2.0, False),
                                                                                          (0.0, 2.0, True),
                                                                                          (0.0, 6.0, False)]
# a zero row, rows below the target and rows above it (for targets 1 and 0.5)
NORMS = [0.0, 0.2, 0.45, 0.9, 0.55, 1.3, 2.5]


@pytest.mark.parametrize("backend", GNP_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gnp_every_reduction_side_and_target(backend, dtype, reduction):
    """Loss and gradient of the public function against float64, for every reduction, one- and
    two-sided, powers 1/2/3(/6), with norms below AND above the target in the same batch (a
    one-sided row below the target has zero gradient; the flag must reach the backward)."""
    gen = torch.Generator().manual_seed(4)
    n = 17 if backend == "triton" else 37
    g = rows_with_norms(NORMS, n, dtype, gen)
    w = torch.rand(len(NORMS), generator=gen, dtype=torch.float64) + 0.5
    for cfg in CFGS:
        t, p, o = cfg
        x = g.detach().requires_grad_(True)
        out = fg.grad_norm_penalty(x, target=t, power=p, one_sided=o, reduction=reduction, backend=backend)
        n_ref, phi_ref = truth(g, *cfg)
        if reduction == "none":
            assert out.shape == (len(NORMS),) and out.dtype == dtype
            want, gphi = phi_ref, w
            (out * w.to(dtype)).sum().backward()
        else:
            assert out.shape == () and out.dtype == dtype
            want = phi_ref.sum() / (len(NORMS) if reduction == "mean" else 1)
            gphi = torch.full((len(NORMS),), 1.0 / len(NORMS) if reduction == "mean" else 1.0, dtype=torch.float64)
            out.backward()
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        close_rows(out, want, tol, f"{cfg} {reduction} loss")
        want_g = coef64(n_ref, gphi, *cfg)[:, None] * g.double()
        close_rows(x.grad, want_g.to(dtype), tol, f"{cfg} {reduction} grad")
        if o:  # rows below the target: exactly zero gradient
            below = [i for i, v in enumerate(NORMS) if v < t]
            assert (x.grad[below] == 0).all(), cfg


@pytest.mark.parametrize("backend", GNP_BACKENDS)
def test_gnp_weighted_penalties_scale(backend):
    """The regularizers' weight reaches the fused op's scale (mean: weight / B), forward and back."""
    gen = torch.Generator().manual_seed(5)
    g = rows_with_norms([0.3, 1.7, 2.2], 11, torch.float64, gen)
    for weight, reduction in ((10.0, "mean"), (3.0, "sum"), (2.5, "none")):
        x = g.detach().requires_grad_(True)
        loss, norms = pen_ops.gnp_loss(x, 1.0, 2.0, False, reduction, weight, backend)
        n_ref, phi_ref = truth(g, 1.0, 2.0, False)
        red = {"mean": phi_ref.mean(), "sum": phi_ref.sum(), "none": phi_ref}[reduction]
        close_rows(loss, weight * red, 1e-12, reduction)
        close_rows(norms, n_ref, 1e-12, reduction)
        loss.sum().backward()
        scale = weight / 3 if reduction == "mean" else weight
        close_rows(x.grad, coef64(n_ref, torch.full((3,), scale, dtype=torch.float64), 1.0, 2.0, False)[:, None]
                   * g, 1e-12, reduction)


# --------------------------------------------------------------------------------------------
# outputs written through strided inputs, compared by value (no clone of the input first)
def strided_views(dtype, gen):
    base = torch.randn(9, 3, 5, 7, generator=gen, dtype=torch.float64).to(dtype)  # 105 per row: odd
    yield "batch_slice", base, lambda b: b[1::2]
    yield "batch_slice_channels_last", base.contiguous(memory_format=torch.channels_last), lambda b: b[::3]
    yield "inner_slice", base, lambda b: b[:, :, ::2]
    yield "permuted", base, lambda b: b.permute(0, 3, 1, 2)
    yield "narrow", base, lambda b: b.narrow(0, 2, 5)


@pytest.mark.parametrize("backend", GNP_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_gnp_backward_into_strided_views_by_value(backend, dtype, reduction):
    """The penalty of a VIEW of a leaf (rows with a stride larger than their length, channels_last
    rows, rows with gaps): the gradient reaching the leaf, element by element, is c_r * g_r in the
    view's elements and 0 elsewhere. A backward that wrote its packed output with the input's row
    stride leaves rows 1.. wrong (or unwritten)."""
    gen = torch.Generator().manual_seed(6)
    for name, base, view in strided_views(dtype, gen):
        leaf = base.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        g = view(leaf)
        b = g.shape[0]
        w = torch.rand(b, generator=gen, dtype=torch.float64) + 0.5
        out = fg.grad_norm_penalty(g, reduction=reduction, backend=backend)
        (out * w.to(dtype)).sum().backward() if reduction == "none" else out.backward()
        gphi = w if reduction == "none" else torch.full((b,), 1.0 / b, dtype=torch.float64)
        n_ref, _ = truth(g, 1.0, 2.0, False)
        want = torch.zeros(base.shape, dtype=torch.float64)
        view(want).copy_(coef64(n_ref, gphi, 1.0, 2.0, False).view(b, 1, 1, 1) * g.detach().double())
        close_rows(leaf.grad, want.to(dtype), OUT_RTOL[dtype], f"{name} {reduction}")


# --------------------------------------------------------------------------------------------
# weight clipping
CLIP_WIDTHS = sorted({1, 2, 3} | {m + d for m in (4, 8, 16, 32, 64) for d in (-1, 0, 1)})
CLIP_BACKENDS = ["reference"] + [b for b in ("cpu", "triton") if b in available_backends()]


@pytest.fixture
def small_clip_chunks(monkeypatch):
    if HAS_TRITON:
        from fastgan._triton import clip

        monkeypatch.setattr(clip, "CHUNK", 64)
        monkeypatch.setattr(clip, "BLOCK", 16)


def clip_case(n, dtype, gen, c=0.01):
    """n weights around +-c, with NaN, +inf, -inf, and values just past both bounds in the LAST
    positions (the scalar tail of an unrolled loop), and the same at the front."""
    x = torch.randn(n, generator=gen, dtype=torch.float64) * 2 * c
    special = [float("nan"), float("inf"), -float("inf"), 3 * c, -3 * c]
    for k, s in enumerate(special[: max(0, n - 1)]):
        x[n - 1 - k] = s
    if n > 8:
        x[0], x[1] = float("nan"), 5 * c
    return x.to(dtype)


@pytest.mark.parametrize("backend", CLIP_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_clip_nonfinite_in_the_tail_every_length(backend, dtype, small_clip_chunks):
    """Every length around the vector widths, in one list (one span per tensor) and one tensor at
    a time: NaN stays NaN, +-inf become hi/lo, exactly like eager clamp_, tails included."""
    gen = torch.Generator().manual_seed(7)
    ts = [clip_case(n, dtype, gen) for n in CLIP_WIDTHS]
    want = [t.clone().clamp_(-0.01, 0.01) for t in ts]
    fg.clip_weights_(ts, 0.01, backend=backend)
    for n, t, w in zip(CLIP_WIDTHS, ts, want):
        torch.testing.assert_close(t, w, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"n={n}: {m}")
    for n in CLIP_WIDTHS[::3]:
        t = clip_case(n, dtype, gen)
        w = t.clone().clamp_(-0.02, 0.005)
        fg.clip_weights_(t, (-0.02, 0.005), backend=backend)
        torch.testing.assert_close(t, w, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"single n={n}: {m}")


def big_list(gen):
    """> 2 thread grains (1M elements each) of mixed dtypes and odd sizes: the thread boundaries
    fall inside tensors, at odd offsets; non-finite values sit at every tensor's ends."""
    sizes = [(1_048_583, torch.float32), (13, torch.float64), (700_001, torch.float16), (5, torch.float32),
             (650_003, torch.bfloat16), (31, torch.float64), (220_009, torch.float64), (3, torch.float16)]
    ts = []
    for n, dt in sizes:
        t = (torch.rand(n, generator=gen) * 0.04 - 0.02).to(dt)
        t[0], t[-1] = float("nan"), float("inf")
        if n > 2:
            t[-2] = -float("inf")
        ts.append(t)
    return ts


@pytest.mark.skipif(not HAS_CPU, reason="needs the C++ extension")
def test_clip_threads_split_spans_by_value_and_visit_each_element_once():
    """Two threads over a list cut at element ranges inside tensors: values exact, and each element
    visited once. Clamping twice gives the same values (clamp is idempotent), so a thread that
    searched its first span from 0 instead of its own start is seen only by the kernel's test-only
    element counter (fastgan::_clip_span_elements; deterministic, no timing)."""
    gen = torch.Generator().manual_seed(8)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    # force the split: the kernel may otherwise choose one thread by timing (adaptive mode)
    mode = torch.ops.fastgan.clip_cpu_threading("parallel")
    try:
        ts = big_list(gen)
        strided = torch.randn(40, generator=gen)[::3]  # not a span: eager clamp_, not counted
        want = [t.clone().clamp_(-0.01, 0.01) for t in ts]
        want_s = strided.clone().clamp_(-0.01, 0.01)
        before = torch.ops.fastgan._clip_span_elements()
        fg.clip_weights_(ts + [strided], 0.01, backend="cpu")
        visited = torch.ops.fastgan._clip_span_elements() - before
    finally:
        torch.set_num_threads(threads)
        torch.ops.fastgan.clip_cpu_threading(mode)
    for k, (t, w) in enumerate(zip(ts, want)):
        torch.testing.assert_close(t, w, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"tensor {k}: {m}")
    torch.testing.assert_close(strided, want_s, rtol=0, atol=0)
    assert visited == sum(t.numel() for t in ts)


@pytest.mark.skipif(not HAS_CPU, reason="needs the C++ extension")
def test_clip_span_counter_counts_single_thread_too():
    """The counter itself: one thread, a small list, exactly its elements (so the test above can fail
    only through the threads)."""
    ts = [torch.randn(5), torch.randn(17, dtype=torch.float64), torch.zeros(0)]
    before = torch.ops.fastgan._clip_span_elements()
    fg.clip_weights_(ts, 0.5, backend="cpu")
    assert torch.ops.fastgan._clip_span_elements() - before == 22


@pytest.mark.parametrize("backend", CLIP_BACKENDS)
def test_clip_bounds_inclusive_and_asymmetric(backend, small_clip_chunks):
    """Values exactly at lo and hi stay; lo == hi gives a constant; asymmetric bounds are not +-c."""
    for dtype in DTYPES:
        x = torch.tensor([-0.5, -0.25, 0.0, 0.125, 0.25, 0.75, float("nan")] * 5, dtype=dtype)
        for lo, hi in ((-0.25, 0.125), (0.125, 0.125), (-1.0, 1.0)):
            t = x.clone()
            fg.clip_weights_(t, (lo, hi), backend=backend)
            torch.testing.assert_close(t, x.clone().clamp_(lo, hi), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_regularizers_return_norms_in_the_input_dtype(dtype):
    """return_norms gives the per-sample gradient norms in the input's dtype (not the float32
    accumulator), with the norms of the critic's actual input gradients."""
    gen = torch.Generator().manual_seed(9)
    real = torch.randn(5, 7, generator=gen).to(dtype)
    fake = torch.randn(5, 7, generator=gen).to(dtype)
    scale = torch.linspace(0.5, 2.0, 7).to(dtype)

    def D(x):  # gradient of sum D(x) at x is 2 * scale * x: known in closed form
        return (scale * x * x).sum(1)

    for name, (loss, norms) in {
        "r1": fg.r1_penalty(D, real, return_norms=True),
        "dragan": fg.dragan_penalty(D, real, noise=torch.zeros_like(real), return_norms=True),
    }.items():
        assert norms.dtype == dtype and loss.dtype == dtype, name
        want = (2 * scale.double() * real.double()).norm(dim=1)
        close_rows(norms, want, OUT_RTOL[dtype] * 2, name)
    loss, (nr, nf) = fg.wgan_div_penalty(D, real, fake, return_norms=True)
    assert nr.dtype == dtype and nf.dtype == dtype


def test_gradient_and_lipschitz_penalties_on_both_sides_of_the_target():
    """WGAN-GP (two-sided) and WGAN-LP (one-sided) with per-sample gradient norms on both sides of
    1, against the closed form: D(x) = sum(s * x^2) has input gradient 2 s x."""
    gen = torch.Generator().manual_seed(10)
    s = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)
    real = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    real = real / real.norm(dim=1, keepdim=True) * torch.tensor([0.1, 0.2, 0.3, 0.6, 0.9, 1.4], dtype=torch.float64)[:, None]
    fake = real * 1.1
    alpha = torch.rand(6, generator=gen, dtype=torch.float64)

    def D(x):
        return (s * x * x).sum(1)

    x = alpha[:, None] * real + (1 - alpha[:, None]) * fake
    n = (2 * s * x).norm(dim=1)
    assert (n < 1).any() and (n > 1).any(), "check the test: norms must straddle the target"
    two = 10 * ((n - 1) ** 2).mean()
    one = 10 * ((n - 1).clamp_min(0) ** 2).mean()
    for backend in GNP_BACKENDS:
        with fg.use_backend(backend):
            torch.testing.assert_close(fg.gradient_penalty(D, real, fake, alpha=alpha), two, rtol=1e-12, atol=0)
            torch.testing.assert_close(fg.lipschitz_penalty(D, real, fake, alpha=alpha), one, rtol=1e-12, atol=0)


@pytest.mark.skipif(not HAS_CPU, reason="needs the C++ extension")
def test_cpu_backend_refuses_other_devices():
    with pytest.raises(ValueError, match="runs on cpu tensors"):
        fg.grad_norm_penalty(torch.randn(3, 4, device="meta"), backend="cpu")
