"""fastgan.losses against naive textbook formulas; instance noise and its annealing schedule."""
import math

import pytest
import torch

import fastgan as fg
from fastgan import losses as L


def _sig(x):
    return 1 / (1 + torch.exp(-x))


# naive formulas, written from the papers (log of sigmoid: fine for moderate logits only)
NAIVE_D = {
    "minimax": lambda r, f: -torch.log(_sig(r)).mean() - torch.log(1 - _sig(f)).mean(),
    "nonsaturating": lambda r, f: -torch.log(_sig(r)).mean() - torch.log(1 - _sig(f)).mean(),
    "wasserstein": lambda r, f: f.mean() - r.mean(),
    "hinge": lambda r, f: torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean(),
    "least_squares": lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean(),
}
NAIVE_G = {
    "minimax": lambda f: torch.log(1 - _sig(f)).mean(),
    "nonsaturating": lambda f: -torch.log(_sig(f)).mean(),
    "wasserstein": lambda f: -f.mean(),
    "hinge": lambda f: -f.mean(),
    "least_squares": lambda f: 0.5 * ((f - 1) ** 2).mean(),
}
FAMILIES = sorted(NAIVE_D)


def test_families_complete():
    assert sorted(L.LOSSES) == FAMILIES
    for name, (d, g) in L.LOSSES.items():
        assert callable(d) and callable(g) and d.__doc__ and g.__doc__, name


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(7,), (5, 1), (3, 4)])
def test_matches_naive_formula(family, shape):
    gen = torch.Generator().manual_seed(FAMILIES.index(family) * 100 + sum(shape))
    # non-contiguous views of moderate logits, different batch sizes for real and fake
    r = (3 * torch.randn(shape + (2,), generator=gen, dtype=torch.float64))[..., 0].requires_grad_()
    f = (3 * torch.randn((shape[0] + 2,) + shape[1:], generator=gen, dtype=torch.float64)).requires_grad_()
    d_fn, g_fn = L.LOSSES[family]
    for got, want, inputs in ((d_fn(r, f), NAIVE_D[family](r, f), (r, f)), (g_fn(f), NAIVE_G[family](f), (f,))):
        assert got.shape == ()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        ga = torch.autograd.grad(got, inputs, allow_unused=True)
        gw = torch.autograd.grad(want, inputs, allow_unused=True)
        for a, b in zip(ga, gw):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_finite_on_extreme_logits(family, dtype):
    r = torch.tensor([1e4, -1e4, 0.0, 3.0], dtype=dtype, requires_grad=True)
    f = torch.tensor([-1e4, 1e4, 0.5, -2.0], dtype=dtype, requires_grad=True)
    d_fn, g_fn = L.LOSSES[family]
    for loss in (d_fn(r, f), g_fn(f)):
        assert torch.isfinite(loss), (family, loss)
        grads = torch.autograd.grad(loss, (r, f), allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads), (family, grads)


def test_naive_log_sigmoid_would_overflow():
    # the stable forms matter: the textbook expression is inf here, the library value exact
    r, f = torch.tensor([-1e4]), torch.tensor([1e4])
    assert torch.isinf(NAIVE_D["minimax"](r, f))
    assert L.d_minimax(r, f).item() == pytest.approx(2e4)
    assert L.g_nonsaturating(torch.tensor([-1e4])).item() == pytest.approx(1e4)
    assert L.g_minimax(torch.tensor([1e4])).item() == pytest.approx(-1e4)
    assert L.d_minimax(torch.tensor([1e4]), torch.tensor([-1e4])).item() == 0.0


def test_nan_propagates():
    nan = torch.tensor([float("nan"), 0.0])
    ok = torch.tensor([1.0, 0.0])
    for name, (d_fn, g_fn) in L.LOSSES.items():
        assert torch.isnan(d_fn(nan, ok)) and torch.isnan(d_fn(ok, nan)) and torch.isnan(g_fn(nan)), name


@pytest.mark.parametrize("bad, exc, words", [
    (torch.ones(3, dtype=torch.int64), TypeError, "floating-point"),
    ([1.0, 2.0], TypeError, "torch.Tensor"),
    (torch.ones(0), ValueError, "empty batch"),
    (torch.tensor(1.0), ValueError, "batch dimension"),
])
def test_bad_scores(bad, exc, words):
    ok = torch.zeros(3)
    for name, (d_fn, g_fn) in L.LOSSES.items():
        with pytest.raises(exc, match=words) as e:
            d_fn(ok, bad)
        assert "fake_scores" in str(e.value)
        with pytest.raises(exc, match="real_scores"):
            d_fn(bad, ok)
        with pytest.raises(exc, match="fake_scores"):
            g_fn(bad)


# --------------------------------------------------------------------------------------------
# instance noise
def test_instance_noise_statistics():
    x = torch.full((400, 250), 3.0, dtype=torch.float64)
    y = fg.instance_noise(x, 0.5, generator=torch.Generator().manual_seed(1))
    eps = (y - 3.0) / 0.5
    assert y.shape == x.shape and y.dtype == x.dtype
    assert abs(eps.mean().item()) < 0.01          # 1e5 draws: se of the mean 0.003
    assert abs(eps.std().item() - 1) < 0.01
    assert abs(((eps ** 4).mean() / 3 - 1).item()) < 0.05  # Gaussian kurtosis, not uniform
    assert torch.equal(x, torch.full_like(x, 3.0))  # input untouched


def test_instance_noise_generator_and_independence():
    x = torch.randn(64, 3)[:, ::2]  # non-contiguous
    a = fg.instance_noise(x, 0.1, generator=torch.Generator().manual_seed(5))
    b = fg.instance_noise(x, 0.1, generator=torch.Generator().manual_seed(5))
    c = fg.instance_noise(x, 0.1, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(5)
    real, fake = fg.instance_noise(x, 0.1, generator=g), fg.instance_noise(x, 0.1, generator=g)
    assert not torch.equal(real, fake)  # real and fake get independent draws


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_instance_noise_dtype_and_gradient(dtype):
    x = torch.randn(5, 2, 3).to(dtype).requires_grad_()
    y = fg.instance_noise(x, 0.3)
    assert y.dtype == dtype and y.shape == x.shape
    w = torch.randn(5, 2, 3).to(dtype)
    (gx,) = torch.autograd.grad((y * w).sum(), x)
    torch.testing.assert_close(gx, w)  # the noise is a constant: d(x + std*eps)/dx = I


def test_instance_noise_zero_std_and_nan():
    x = torch.tensor([[float("nan"), 1.0]])
    assert fg.instance_noise(x, 0.0) is x
    assert torch.isnan(fg.instance_noise(x, 1.0)[0, 0])


@pytest.mark.parametrize("kw, exc, words", [
    (dict(std=-0.1), ValueError, "std"),
    (dict(std=float("nan")), ValueError, "std"),
    (dict(std=float("inf")), ValueError, "std"),
    (dict(std="0.1"), TypeError, "std"),
    (dict(std=0.1, generator=0), TypeError, "generator"),
    (dict(x=torch.ones(2, 2, dtype=torch.int32), std=0.1), TypeError, "x"),
])
def test_instance_noise_bad_input(kw, exc, words):
    args = {"x": torch.ones(2, 2), **kw}
    with pytest.raises(exc, match=words):
        fg.instance_noise(**args)


def test_anneal_std():
    for s in range(12):
        t = min(s / 10, 1)
        assert fg.anneal_std(s, 10, start=0.8, end=0.2) == pytest.approx(0.8 - 0.6 * t)
        assert fg.anneal_std(s, 10, 0.8, 0.2, "cosine") == pytest.approx(0.2 + 0.3 * (1 + math.cos(math.pi * t)))
    assert fg.anneal_std(0, 1, 1.0) == 1.0 and fg.anneal_std(1, 1, 1.0) == 0.0
    assert fg.anneal_std(3, 4, start=0.0, end=1.0) == pytest.approx(0.75)  # can also grow


@pytest.mark.parametrize("args, exc, words", [
    ((-1, 10, 1.0), ValueError, "step"),
    ((1.5, 10, 1.0), TypeError, "step"),
    ((0, 0, 1.0), ValueError, "total_steps"),
    ((0, True, 1.0), TypeError, "total_steps"),
    ((0, 10, -1.0), ValueError, "start"),
    ((0, 10, 1.0, -0.5), ValueError, "end"),
    ((0, 10, 1.0, 0.0, "exp"), ValueError, "kind"),
])
def test_anneal_std_bad_input(args, exc, words):
    with pytest.raises(exc, match=words):
        fg.anneal_std(*args)
