"""method="finite_difference" against the exact (double backward) path, and the approximated R1/R2.

Each comparison takes the penalty's parameter gradient both ways on the same critic and data, on
three seeds, and asserts the relative error (norm of the difference over the norm of the exact
gradient, in float64) below the issue's bounds: float64 < 1e-7 (the bound asked is 1e-5), float32
< 1e-3. Values must agree exactly: the finite-difference path needs only the first-order gradient.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastgan as fg
import fastgan.finite_difference as fd_mod

FD = "finite_difference"
SEEDS = (0, 1, 2)
TOL = {torch.float64: 1e-7, torch.float32: 1e-3}


def smooth_critic(dtype, d=6, seed=0, scale=1.0):
    torch.manual_seed(seed)
    D = nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, 24), nn.SiLU(), nn.Linear(24, 1)).to(dtype)
    if scale != 1.0:   # steeper critic: gradient norms around 1 (the one-sided LP active on some samples)
        with torch.no_grad():
            D[-1].weight.mul_(scale)
    return D


def data(dtype, b=7, d=6, seed=0):
    g = torch.Generator().manual_seed(100 + seed)
    return dict(real=torch.randn(b, d, generator=g).to(dtype),
                fake=(0.5 * torch.randn(b, d, generator=g) + 1).to(dtype),
                alpha=torch.rand(b, generator=g).to(dtype),
                noise=torch.randn(b, d, generator=g).to(dtype))


PENALTIES = {
    "gradient_penalty": lambda D, x, **k: fg.gradient_penalty(D, x["real"], x["fake"], alpha=x["alpha"], **k),
    "gradient_penalty_pac": lambda D, x, **k: fg.gradient_penalty(D, x["real"][:6], x["fake"][:6],
                                                                  alpha=x["alpha"][:3], pac=2, **k),
    "lipschitz_penalty": lambda D, x, **k: fg.lipschitz_penalty(D, x["real"], x["fake"], alpha=x["alpha"], **k),
    "dragan_penalty": lambda D, x, **k: fg.dragan_penalty(D, x["real"], noise=x["noise"], **k),
    "wgan_div_penalty": lambda D, x, **k: fg.wgan_div_penalty(D, x["real"], x["fake"], **k),
    "r1_penalty": lambda D, x, **k: fg.r1_penalty(D, x["real"], **k),
    "r2_penalty": lambda D, x, **k: fg.r2_penalty(D, x["fake"], **k),
}


def param_grads(D, loss):
    gs = torch.autograd.grad(loss, list(D.parameters()), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().double()
                      for g, p in zip(gs, D.parameters())])


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(PENALTIES))
def test_value_exact_and_gradient_close(name, dtype):
    pen = PENALTIES[name]
    for seed in SEEDS:
        D = smooth_critic(dtype, seed=seed, scale=30.0)
        x = data(dtype, seed=seed)
        exact, n_exact = pen(D, x, return_norms=True)
        approx, n_fd = pen(D, x, return_norms=True, method=FD)
        assert approx.dtype == exact.dtype and approx.shape == exact.shape
        assert torch.allclose(approx, exact, rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=0)
        for a, b in zip(n_fd if isinstance(n_fd, tuple) else (n_fd,), n_exact if isinstance(n_exact, tuple) else (n_exact,)):
            assert torch.allclose(a, b, rtol=1e-12 if dtype == torch.float64 else 1e-6)
        g_exact, g_fd = param_grads(D, exact), param_grads(D, approx)
        assert g_exact.norm() > 0
        err = rel(g_fd, g_exact)
        assert err < TOL[dtype], f"{name} {dtype} seed {seed}: relative error {err:.3g}"


def test_default_is_exact_and_loss_backward_works():
    """The default path is today's double backward; the finite-difference loss is a term of the
    critic loss like any other (loss.backward() accumulates into .grad)."""
    D = smooth_critic(torch.float64)
    x = data(torch.float64)
    loss = D(x["fake"]).mean() - D(x["real"]).mean() + fg.r1_penalty(D, x["real"], method=FD)
    loss.backward()
    g_fd = torch.cat([p.grad.flatten() for p in D.parameters()])
    D.zero_grad()
    (D(x["fake"]).mean() - D(x["real"]).mean() + fg.r1_penalty(D, x["real"])).backward()
    g_ex = torch.cat([p.grad.flatten() for p in D.parameters()])
    assert rel(g_fd, g_ex) < 1e-7


class _Recording(nn.Module):
    """Records whether each call's input requires grad."""

    def __init__(self, D):
        super().__init__()
        self.D, self.calls = D, []

    def forward(self, x):
        self.calls.append(x.requires_grad)
        return self.D(x)


@pytest.mark.parametrize("name", ["gradient_penalty", "r1_penalty"])
def test_shifted_evaluations_take_constant_inputs(name):
    """Only the value pass differentiates w.r.t. the input; the two shifted evaluations take constant
    inputs, so loss.backward() spends nothing on the critic's input gradient (the first layer's
    transposed op) for them, and the result is unchanged."""
    D = _Recording(smooth_critic(torch.float64))
    x = data(torch.float64)
    loss = PENALTIES[name](D, x, method=FD)
    assert D.calls == [True, False, False]
    D.calls.clear()
    g_ex = param_grads(D, PENALTIES[name](D, x))
    assert rel(param_grads(D, loss), g_ex) < 1e-7


def sdpa_critic(dtype, seed=0, dropout=0.0):
    from fastgan._bench_models import ViTCritic
    torch.manual_seed(seed)
    return ViTCritic(img=8, patch=2, width=16, depth=1, heads=2, dropout=dropout).to(dtype)


def test_sdpa_critic_fused_kernel():
    """Fused attention has no double backward: the exact path raises, naming the finite-difference
    method; finite differences (fused kernel) match the exact gradient with the math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for seed in SEEDS:
        D = sdpa_critic(torch.float32, seed)
        g = torch.Generator().manual_seed(seed)
        real, fake = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
        alpha = torch.rand(4, generator=g)
        with pytest.raises(NotImplementedError, match="finite_difference"):
            fg.gradient_penalty(D, real, fake, alpha=alpha)
        with sdpa_kernel(SDPBackend.MATH):
            g_ex = param_grads(D, fg.gradient_penalty(D, real, fake, alpha=alpha))
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):   # the fused CPU kernel, no silent fallback
            g_fd = param_grads(D, fg.gradient_penalty(D, real, fake, alpha=alpha, method=FD))
        err = rel(g_fd, g_ex)
        assert err < 2e-3, f"seed {seed}: {err:.3g}"


def dropout_critic(dtype):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Dropout(0.3), nn.Linear(32, 1)).to(dtype)


def test_dropout_same_masks_and_rng_stream():
    """All evaluations see the value pass's dropout masks, and the RNG stream afterwards is where
    the exact path leaves it."""
    D = dropout_critic(torch.float64)
    x = data(torch.float64)
    for seed in SEEDS:
        torch.manual_seed(seed)
        g_ex = param_grads(D, fg.r1_penalty(D, x["real"]))
        after_ex = torch.rand(3)
        torch.manual_seed(seed)
        g_fd = param_grads(D, fg.r1_penalty(D, x["real"], method=FD))
        after_fd = torch.rand(3)
        assert rel(g_fd, g_ex) < 1e-7
        assert torch.equal(after_fd, after_ex)


def test_batchnorm_whole_batch_direction_and_running_stats():
    """BatchNorm in training mode couples the samples: the whole-batch direction is used (per-sample
    weights would be wrong), and the running statistics end as after the exact path's one forward."""
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 1)).double()

    for seed in SEEDS:
        x = data(torch.float64, b=8, seed=seed)
        D1, D2 = make(), make()
        g_ex = param_grads(D1, fg.gradient_penalty(D1, x["real"], x["fake"], alpha=x["alpha"]))
        g_fd = param_grads(D2, fg.gradient_penalty(D2, x["real"], x["fake"], alpha=x["alpha"], method=FD))
        assert rel(g_fd, g_ex) < 1e-7
        for a, b in zip(D1.buffers(), D2.buffers()):
            assert torch.equal(a, b)


def test_spectral_norm_state_as_after_one_forward():
    """Spectral norm's u, v (updated in place by each training forward) end as after the exact path."""
    def make():
        D = smooth_critic(torch.float64)
        for m in D:
            if isinstance(m, nn.Linear):
                fg.spectral_norm(m)
        return D

    x = data(torch.float64)
    D1, D2 = make(), make()
    g_ex = param_grads(D1, fg.r1_penalty(D1, x["real"]))
    g_fd = param_grads(D2, fg.r1_penalty(D2, x["real"], method=FD))
    assert rel(g_fd, g_ex) < 1e-7
    for a, b in zip(D1.buffers(), D2.buffers()):
        assert torch.equal(a, b)


def test_leaky_relu_bias_is_real_and_warned():
    """Kinks: in float32 the step crosses LeakyReLU kinks, each crossing adds a jump / (2h), and the
    gradient is off by O(1) (the README's caveat); fastgan warns when it sees such a module."""
    torch.manual_seed(0)
    D = nn.Sequential(nn.Linear(6, 256), nn.LeakyReLU(0.2), nn.Linear(256, 256), nn.LeakyReLU(0.2),
                      nn.Linear(256, 1))
    x = data(torch.float32, b=64)
    with pytest.warns(UserWarning, match="kink"):
        g_fd = param_grads(D, fg.r1_penalty(D, x["real"], method=FD))
    assert rel(g_fd, param_grads(D, fg.r1_penalty(D, x["real"]))) > 1e-2


def test_nan_propagates():
    D = smooth_critic(torch.float64)
    x = data(torch.float64)
    x["real"][2, 1] = float("nan")
    loss = fg.r1_penalty(D, x["real"], method=FD)
    assert torch.isnan(loss)
    assert torch.isnan(param_grads(D, loss)).any()


@pytest.mark.parametrize("method", ["double_backward", FD])
def test_scalar_output_critic_is_rejected_by_both_methods(method):
    """A critic that reduces over the batch breaks the spec's batch-first contract (its gradient would be
    scaled by 1/B for a mean): both methods refuse it with the same error."""
    base = smooth_critic(torch.float64)
    D = lambda x: base(x).sum()   # noqa: E731
    x = data(torch.float64)
    with pytest.raises(ValueError, match="batch as its first dimension"):
        fg.r1_penalty(D, x["real"], method=method)


@pytest.mark.parametrize("name", list(PENALTIES))
def test_bad_method(name):
    D = smooth_critic(torch.float64)
    x = data(torch.float64)
    with pytest.raises(ValueError, match="'finite_differences'"):
        PENALTIES[name](D, x, method="finite_differences")
    with pytest.raises(TypeError, match="method"):
        PENALTIES[name](D, x, method=None)


def test_output_not_depending_on_input():
    w = torch.randn(1, requires_grad=True)
    x = data(torch.float64)
    with pytest.raises(ValueError, match="does not depend on its input"):
        fg.r1_penalty(lambda x: w.expand(x.shape[0]).double(), x["real"], method=FD)
    with pytest.raises(TypeError, match="tensor of scores"):
        fg.r1_penalty(lambda x: (x.sum(),), x["real"], method=FD)


# --------------------------------------------------------------------------------------------
# approximated R1/R2
def _approx_ref(D, x, n, weight, sigma):
    d = D(x) - D(x + sigma * n)
    return weight * (d.reshape(x.shape[0], -1) ** 2).sum(dim=1).mean()


@pytest.mark.parametrize("fn", [fg.approx_r1_penalty, fg.approx_r2_penalty])
def test_approx_value_and_gradient(fn):
    for seed in SEEDS:
        D = smooth_critic(torch.float64, seed=seed)
        D2 = lambda x: torch.cat([D(x), 2 * D(x)], dim=1)   # noqa: E731  two score elements per sample
        x = data(torch.float64, seed=seed)
        got = fn(D2, x["real"], weight=3.0, sigma=0.05, noise=x["noise"])
        want = _approx_ref(D2, x["real"], x["noise"], 3.0, 0.05)
        assert rel(got, want) < 1e-12
        assert rel(param_grads(D, got), param_grads(D, want)) < 1e-12
        # scores= reuses D(x): same value and gradient
        got2 = fn(D2, x["real"], weight=3.0, sigma=0.05, noise=x["noise"], scores=D2(x["real"]))
        want = _approx_ref(D2, x["real"], x["noise"], 3.0, 0.05)
        assert rel(got2, want) < 1e-12
        assert rel(param_grads(D, got2), param_grads(D, want)) < 1e-12


def test_approx_r1_estimates_sigma2_r1():
    """E_n ||D(x) - D(x + sigma n)||^2 ~= sigma^2 ||grad D(x)||^2 for small sigma."""
    D = smooth_critic(torch.float64)
    x = data(torch.float64, b=1)["real"].expand(20000, -1)
    sigma = 1e-3
    a = fg.approx_r1_penalty(D, x, weight=1.0, sigma=sigma, generator=torch.Generator().manual_seed(0))
    r1 = fg.r1_penalty(D, x[:1], gamma=2.0)            # gamma/2 * ||g||^2 = ||g||^2
    assert abs(float(a) / (sigma ** 2 * float(r1)) - 1) < 0.05


def test_approx_reproducible_with_generator_and_same_dropout_masks():
    D = dropout_critic(torch.float64)
    x = data(torch.float64)["real"]
    torch.manual_seed(0)       # dropout draws from the global generator, the noise from `generator`
    a = fg.approx_r1_penalty(D, x, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    b = fg.approx_r1_penalty(D, x, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    c = fg.approx_r1_penalty(D, x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # with sigma -> 0 both evaluations see the same masks: the penalty vanishes (it would be
    # dropout noise, O(1), with different masks)
    assert float(fg.approx_r1_penalty(D, x, sigma=1e-12)) < 1e-12


@pytest.mark.parametrize("kw, exc, words", [
    (dict(sigma=0.0), ValueError, "sigma"), (dict(sigma=-1.0), ValueError, "sigma"),
    (dict(sigma="0.1"), TypeError, "sigma"), (dict(weight=float("nan")), ValueError, "weight"),
    (dict(weight=True), TypeError, "weight"), (dict(noise=torch.zeros(3, 6, dtype=torch.float64)), ValueError, "noise"),
    (dict(noise=[0.0]), TypeError, "noise"), (dict(generator=0), TypeError, "generator"),
    (dict(scores=torch.zeros(3, 1, dtype=torch.float64)), ValueError, "scores"),
])
def test_approx_bad_input(kw, exc, words):
    D = smooth_critic(torch.float64)
    x = data(torch.float64)["real"]
    for fn in (fg.approx_r1_penalty, fg.approx_r2_penalty):
        with pytest.raises(exc, match=words):
            fn(D, x, **kw)
    with pytest.raises(TypeError, match="real"):
        fg.approx_r1_penalty(D, x.long())
    with pytest.raises(ValueError, match="fake"):
        fg.approx_r2_penalty(D, x[:0])


def test_step_constant_is_what_the_tests_measured():
    """Guard: the accuracy bounds above were established with this step rule."""
    assert fd_mod.STEP == 4.0


def test_compiled_critic_step_fullgraph():
    """A whole critic step (losses, finite-difference WGAN-GP, backward) compiles with fullgraph=True
    once dynamo may trace torch.autograd.grad (torch 2.13: trace_autograd_ops), and matches eager."""
    import torch._dynamo

    torch.manual_seed(0)
    D = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 1))
    g = torch.Generator().manual_seed(0)
    real, fake, alpha = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g), torch.rand(16, generator=g)

    def step(real, fake, alpha):
        loss = D(fake).mean() - D(real).mean() + fg.gradient_penalty(D, real, fake, alpha=alpha, method=FD)
        loss.backward()
        return loss.detach()

    def grads():
        out = torch.cat([p.grad.flatten() for p in D.parameters()])
        D.zero_grad(set_to_none=True)
        return out

    l_eager, g_eager = step(real, fake, alpha), grads()
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(step, fullgraph=True)
        l_comp, g_comp = compiled(real, fake, alpha), grads()
    torch._dynamo.reset()
    assert torch.allclose(l_comp, l_eager, rtol=1e-5)
    assert rel(g_comp, g_eager) < 1e-3
