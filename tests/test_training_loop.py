"""Regularizers in real training loops: penalties from the loss's own forward (scores=), lazy
regularization (fg.Lazy), mixed precision (autocast, scaler=).

Equality is checked against today's critic-calling form and against independent eager code, in
float64, on whole critic steps (value and every parameter's .grad after backward()).
"""
import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import fastgan as fg
from conftest import leave_process_group, rel_err, run_ranks

TOL = 1e-12  # float64


def conv_critic():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(8 * 2 * 3, 1),
    ).double()


def mlp_critic(d=5):
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 1)).double()


CRITICS = {"conv": (conv_critic, (7, 3, 7, 9)), "mlp": (mlp_critic, (5, 5))}  # odd shapes


def data(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64),
            torch.randn(shape, generator=g, dtype=torch.float64) + 0.3)


class Counting(nn.Module):
    """Counts the critic's forward calls."""

    def __init__(self, D):
        super().__init__()
        self.D, self.calls = D, 0

    def forward(self, x):
        self.calls += 1
        return self.D(x)


def param_grads(D, loss):
    """Every parameter's .grad after loss.backward() (zeros where it got none), as a training loop sees it."""
    for p in D.parameters():
        p.grad = None
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in D.parameters()]


def assert_same_step(D, ours, theirs, tol=TOL):
    assert rel_err(ours, theirs) <= tol, (float(ours.detach()), float(theirs.detach()))
    for i, (a, b) in enumerate(zip(param_grads(D, ours), param_grads(D, theirs))):
        assert rel_err(a, b) <= tol, f"parameter {i}: {rel_err(a, b):.3g}"


def eager_grad(D, x):
    """Independent eager code (StyleGAN2 / seed 002 style): the input gradient of the same forward."""
    out = D(x)
    return out, torch.autograd.grad(out.sum(), x, create_graph=True)[0]


# --- 1. penalties from the loss's own forward ---------------------------------------------------
@pytest.mark.parametrize("critic", list(CRITICS))
@pytest.mark.parametrize("which", ["r1", "r2"])
def test_r1_r2_from_scores_equal_today(critic, which):
    make, shape = CRITICS[critic]
    D = make()
    real, fake = data(shape)
    fn, name = (fg.r1_penalty, "real") if which == "r1" else (fg.r2_penalty, "fake")
    x, other = (real, fake) if which == "r1" else (fake, real)
    sign = -1 if which == "r1" else 1          # softplus(-D(real)) and softplus(D(fake))

    def ours():
        xr = x.detach().requires_grad_()
        scores = D(xr)                            # the loss's forward, used by the penalty too
        return (F.softplus(sign * scores).mean() + F.softplus(-sign * D(other)).mean()
                + fn(**{name: xr}, scores=scores, gamma=3.0))

    today = F.softplus(sign * D(x)).mean() + F.softplus(-sign * D(other)).mean() + fn(D, x, gamma=3.0)
    assert_same_step(D, ours(), today)

    # independent eager code written the StyleGAN2 way (same forward, autograd.grad)
    out, g = eager_grad(D, x.detach().requires_grad_())
    eager = (F.softplus(sign * out).mean() + F.softplus(-sign * D(other)).mean()
             + 1.5 * g.square().flatten(1).sum(1).mean())
    assert_same_step(D, ours(), eager)


@pytest.mark.parametrize("critic", list(CRITICS))
def test_wgan_div_from_scores_equal_today(critic):
    make, shape = CRITICS[critic]
    D = make()
    real, fake = data(shape, seed=3)
    today = D(fake).mean() - D(real).mean() + fg.wgan_div_penalty(D, real, fake, k=2.0, p=6.0)

    def ours():
        r, f = real.detach().requires_grad_(), fake.detach().requires_grad_()
        d_real, d_fake = D(r), D(f)
        return d_fake.mean() - d_real.mean() + fg.wgan_div_penalty(real=r, fake=f, scores=(d_real, d_fake))

    assert_same_step(D, ours(), today)

    # seed 002's eager code: gradients of the same forward, ||g||^p per sample
    r, f = real.detach().requires_grad_(), fake.detach().requires_grad_()
    d_real, d_fake = D(r), D(f)
    gr = torch.autograd.grad(d_real.sum(), r, create_graph=True)[0].flatten(1).norm(dim=1) ** 6
    gf = torch.autograd.grad(d_fake.sum(), f, create_graph=True)[0].flatten(1).norm(dim=1) ** 6
    eager = d_fake.mean() - d_real.mean() + (gr.mean() + gf.mean()) * 2.0 / 2
    assert_same_step(D, ours(), eager)


def test_return_norms_from_scores():
    D = mlp_critic()
    real, fake = data((6, 5))
    want_loss, want_norms = fg.r1_penalty(D, real, return_norms=True)
    r = real.detach().requires_grad_()
    loss, norms = fg.r1_penalty(real=r, scores=D(r), return_norms=True)
    assert rel_err(loss, want_loss) < TOL and rel_err(norms, want_norms) < TOL
    want = fg.wgan_div_penalty(D, real, fake, return_norms=True)[1]
    f = fake.detach().requires_grad_()
    got = fg.wgan_div_penalty(real=r, fake=f, scores=(D(r), D(f)), return_norms=True)[1]
    assert rel_err(got[0], want[0]) < TOL and rel_err(got[1], want[1]) < TOL


def test_scores_of_one_forward_over_real_and_fake():
    """d_real, d_fake split from one D(torch.cat([real, fake])) forward (a per-sample critic)."""
    D = mlp_critic()
    real, fake = data((4, 5))
    r, f = real.detach().requires_grad_(), fake.detach().requires_grad_()
    d = D(torch.cat([r, f]))
    got = fg.wgan_div_penalty(real=r, fake=f, scores=(d[:4], d[4:]))
    assert_same_step(D, got, fg.wgan_div_penalty(D, real, fake))


def test_from_scores_calls_no_critic():
    D = Counting(conv_critic())
    real, fake = data(CRITICS["conv"][1])
    fg.r1_penalty(D, real)
    assert D.calls == 1                       # today's form: one extra critic call per penalty
    fg.wgan_div_penalty(D, real, fake)
    assert D.calls == 3
    D.calls = 0
    r, f = real.detach().requires_grad_(), fake.detach().requires_grad_()
    d_real, d_fake = D(r), D(f)
    assert D.calls == 2
    loss = (fg.r1_penalty(real=r, scores=d_real) + fg.r2_penalty(fake=f, scores=d_fake)
            + fg.wgan_div_penalty(real=r, fake=f, scores=(d_real, d_fake)))
    loss.backward()
    assert D.calls == 2                       # the penalties and their backward call no critic


def test_nan_propagates_from_scores():
    D = mlp_critic()
    real, _ = data((4, 5))
    real[2, 1] = float("nan")
    r = real.requires_grad_()
    loss, norms = fg.r1_penalty(real=r, scores=D(r), return_norms=True)
    assert torch.isnan(loss) and torch.isnan(norms[2]) and torch.isfinite(norms[[0, 1, 3]]).all()


# --- 2. lazy regularization ---------------------------------------------------------------------
def test_lazy_weights_and_skips():
    k = 4
    D = Counting(mlp_critic())
    real, fake = data((6, 5))
    lazy = fg.Lazy(fg.r1_penalty, every=k)
    want = fg.r1_penalty(D.D, real, gamma=2.0)
    for step in range(2 * k + 1):
        assert lazy.due == (step % k == 0)
        D.calls = 0
        out = lazy(D, real, gamma=2.0)
        if step % k == 0:
            assert D.calls == 1
            assert rel_err(out, k * want) < TOL
            assert_same_step(D.D, fg.Lazy(fg.r1_penalty, every=k)(D, real, gamma=2.0),
                             fg.r1_penalty(D, real, gamma=2.0 * k))
        else:
            assert D.calls == 0               # no critic call, no graph
            assert out.dtype == real.dtype and out.shape == () and float(out) == 0.0
            assert not out.requires_grad and out.grad_fn is None
            # adding the zero changes neither the loss nor any parameter gradient
            base = F.softplus(D.D(fake)).mean()
            assert_same_step(D.D, base + out, F.softplus(D.D(fake)).mean(), tol=0.0)
    assert lazy.step == 2 * k + 1


def test_lazy_from_scores_in_a_loop_matches_manual_stylegan2():
    """A StyleGAN2-style loop: Lazy + scores= against hand-written lazy R1 (eager, same forward)."""
    k, gamma = 3, 5.0
    D1, D2 = mlp_critic(), mlp_critic()
    opt1, opt2 = torch.optim.SGD(D1.parameters(), lr=0.1), torch.optim.SGD(D2.parameters(), lr=0.1)
    r1 = fg.Lazy(fg.r1_penalty, every=k)
    for step in range(2 * k + 1):
        real, fake = data((4, 5), seed=step)
        x = real.detach().requires_grad_(r1.due)
        d_real = D1(x)
        loss = F.softplus(D1(fake)).mean() + F.softplus(-d_real).mean() + r1(real=x, scores=d_real, gamma=gamma)
        opt1.zero_grad()
        loss.backward()
        opt1.step()

        do_r1 = step % k == 0
        y = real.detach().requires_grad_(do_r1)
        out = D2(y)
        ref = F.softplus(D2(fake)).mean() + F.softplus(-out).mean()
        if do_r1:
            g = torch.autograd.grad(out.sum(), y, create_graph=True)[0]
            ref = ref + g.square().sum(1).mean() * (gamma / 2) * k
        opt2.zero_grad()
        ref.backward()
        opt2.step()
        assert rel_err(loss, ref) < TOL
    for a, b in zip(D1.parameters(), D2.parameters()):
        assert rel_err(a, b) < TOL


def test_lazy_return_norms_and_wgan_div():
    D = mlp_critic()
    real, fake = data((4, 5))
    lazy = fg.Lazy(fg.wgan_div_penalty, every=2)
    loss, (nr, nf) = lazy(D, real, fake, return_norms=True)
    want, (wr, wf) = fg.wgan_div_penalty(D, real, fake, return_norms=True)
    assert rel_err(loss, 2 * want) < TOL and rel_err(nr, wr) < TOL and rel_err(nf, wf) < TOL
    zero, norms = lazy(D, real, fake, return_norms=True)
    assert float(zero) == 0.0 and norms is None


def test_lazy_state_dict_round_trip(tmp_path):
    D = mlp_critic()
    real, _ = data((4, 5))
    a = fg.Lazy(fg.r1_penalty, every=5)
    for _ in range(7):
        a(D, real)
    torch.save({"r1": a.state_dict()}, tmp_path / "ckpt.pt")
    b = fg.Lazy(fg.r1_penalty, every=5)
    b.load_state_dict(torch.load(tmp_path / "ckpt.pt")["r1"])
    assert b.state_dict() == {"every": 5, "step": 7}
    # the resumed helper regularizes on exactly the steps the uninterrupted one does
    seq_a = [float(a(D, real).detach()) != 0.0 for _ in range(11)]
    seq_b = [float(b(D, real).detach()) != 0.0 for _ in range(11)]
    assert seq_a == seq_b == [(s % 5 == 0) for s in range(7, 18)]
    with pytest.raises(ValueError, match=r"every=3"):
        fg.Lazy(fg.r1_penalty, every=3).load_state_dict(a.state_dict())
    c = fg.Lazy(fg.r1_penalty, every=5)
    for bad, err, words in [({"step": 1}, ValueError, "every"), ([5, 1], TypeError, "state"),
                            ({"every": 5, "step": -1}, ValueError, "step"),
                            ({"every": 5, "step": 1.5}, TypeError, "step")]:
        with pytest.raises(err, match=words):
            c.load_state_dict(bad)
        assert c.step == 0                   # nothing modified on error


def test_lazy_bad_arguments_and_error_keeps_counter():
    for bad, err in [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("4", TypeError)]:
        with pytest.raises(err, match="every"):
            fg.Lazy(fg.r1_penalty, every=bad)
    with pytest.raises(TypeError, match="penalty"):
        fg.Lazy(3, every=2)
    lazy = fg.Lazy(fg.r1_penalty, every=2)
    with pytest.raises(TypeError, match="real"):
        lazy(mlp_critic(), "not a tensor")
    assert lazy.step == 0 and lazy.due


def test_lazy_optimizer_kwargs():
    """StyleGAN2 (training/training_loop.py): mb_ratio = k / (k + 1); lr * mb_ratio, beta ** mb_ratio."""
    lazy = fg.Lazy(fg.r1_penalty, every=16)
    kw = lazy.optimizer_kwargs(lr=0.0025, betas=(0.0, 0.99))
    assert kw["lr"] == pytest.approx(0.0025 * 16 / 17, rel=1e-15)
    assert kw["betas"][0] == 0.0 and kw["betas"][1] == pytest.approx(0.99 ** (16 / 17), rel=1e-15)
    torch.optim.Adam(mlp_critic().parameters(), **kw)    # accepted as is
    for bad, err, words in [(dict(lr=-1.0), ValueError, "lr"), (dict(lr=1e-3, betas=(0.5, 1.0)), ValueError, r"betas\[1\]"),
                            (dict(lr=1e-3, betas=0.9), TypeError, "betas")]:
        with pytest.raises(err, match=words):
            lazy.optimizer_kwargs(**bad)


# --- 3. mixed precision --------------------------------------------------------------------------
def f32_critic():
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(6, 32), nn.LeakyReLU(0.2), nn.Linear(32, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))


# CPU here; CUDA wherever a GPU is visible (python -m fastgan gpucheck runs these there)
AMP_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                   reason="CUDA autocast needs a GPU"))]


def recipe_r1(D, real, dtype, scale=None):
    """PyTorch's AMP recipe for a gradient penalty, written out: forward under autocast, inner
    gradient of the (scaled) output outside autocast, unscale, norm in float32."""
    x = real.detach().requires_grad_()
    with torch.autocast(real.device.type, dtype=dtype):
        out = D(x)
    s = out if scale is None else out * scale
    g = torch.autograd.grad(s.sum(), x, create_graph=True)[0]
    if scale is not None:
        g = g.float() / scale
    return g.float().flatten(1).square().sum(1).mean() * 5.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("form", ["D", "scores"])
@pytest.mark.parametrize("device", AMP_DEVICES)
def test_penalty_under_autocast(dtype, scaled, form, device):
    D = f32_critic().to(device)
    real = torch.randn(8, 6, generator=torch.Generator().manual_seed(5)).to(device)
    scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 10) if scaled else None
    with torch.autocast(device, dtype=dtype):
        if form == "D":
            ours = fg.r1_penalty(D, real, scaler=scaler)
        else:
            x = real.detach().requires_grad_()
            ours = fg.r1_penalty(real=x, scores=D(x), scaler=scaler)
    want = recipe_r1(D, real, dtype, 2.0 ** 10 if scaled else None)
    assert ours.dtype == torch.float32
    assert rel_err(ours, want) < 1e-5
    for a, b in zip(param_grads(D, ours), param_grads(D, want)):
        assert rel_err(a, b) < 1e-4
    # and close to the float64 truth (low precision forward: loose)
    D64 = f32_critic().double().to(device)
    truth = fg.r1_penalty(D64, real.double())
    assert rel_err(ours, truth) < (3e-2 if dtype == torch.bfloat16 else 4e-3)


class Float32Head(nn.Module):
    """float16 trunk under autocast, float32 head (autocast turned off for it), a common AMP layout."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(10)
        self.trunk, self.head = nn.Linear(6, 32), nn.Linear(32, 1)

    def forward(self, x):
        h = self.trunk(x)
        with torch.autocast("cpu", enabled=False):
            return self.head(torch.sin(h.float()) * 1.2345678)


@pytest.mark.parametrize("form", ["D", "scores"])
def test_inner_gradient_runs_outside_autocast(form):
    """AMP recipe: the inner autograd.grad runs outside autocast. Inside it, the float32 head's
    backward matmul would be cast to float16: a different gradient, which the test also shows."""
    D = Float32Head()
    real = torch.randn(8, 6, generator=torch.Generator().manual_seed(11))

    def norms_of(inside):
        x = real.detach().requires_grad_()
        with torch.autocast("cpu", dtype=torch.float16):
            out = D(x)
            if inside:
                g = torch.autograd.grad(out.sum(), x, create_graph=True)[0]
        if not inside:
            g = torch.autograd.grad(out.sum(), x, create_graph=True)[0]
        return g.flatten(1).norm(dim=1)

    recipe, inside = norms_of(False), norms_of(True)
    assert rel_err(inside, recipe) > 1e-5                # the two really differ here
    with torch.autocast("cpu", dtype=torch.float16):
        if form == "D":
            ours = fg.r1_penalty(D, real, return_norms=True)[1]
        else:
            x = real.detach().requires_grad_()
            ours = fg.r1_penalty(real=x, scores=D(x), return_norms=True)[1]
    assert rel_err(ours, recipe) < 1e-6


def tiny_critic():
    """Weights ~2e-5: the input gradient (~6e-9) is below float16's smallest subnormal (6e-8)."""
    torch.manual_seed(6)
    D = nn.Sequential(nn.Linear(6, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    with torch.no_grad():
        D[0].weight.uniform_(1e-5, 3e-5)
        D[0].bias.fill_(1.0)                  # every unit active: a fixed, known gradient path
        D[2].weight.uniform_(1e-5, 3e-5)
        for p in D.parameters():              # values float16 represents exactly, so float64 is the truth
            p.copy_(p.half().float())
    return D


@pytest.mark.parametrize("form", ["D", "scores", "half"])
@pytest.mark.parametrize("device", AMP_DEVICES)
def test_scaler_rescues_float16_underflow(form, device):
    """autocast float16 (critic call or scores=), and a pure float16 critic without autocast (the
    scaled gradient is float16 itself: it must be unscaled in float32)."""
    D = tiny_critic().to(device)
    real = torch.rand(5, 6, generator=torch.Generator().manual_seed(7)).half().float().to(device)
    truth = (D[2].weight.detach().double() @ D[0].weight.detach().double()).expand(5, 6).norm(dim=1)   # all units active
    assert float(truth.max()) < 2.98e-8       # rounds to 0 in float16
    scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 15)

    def norms(scaler):
        if form == "half":
            return fg.r1_penalty(D.half(), real.half(), scaler=scaler, return_norms=True)[1].float()
        with torch.autocast(device, dtype=torch.float16):
            if form == "D":
                return fg.r1_penalty(D, real, scaler=scaler, return_norms=True)[1]
            x = real.detach().requires_grad_()
            return fg.r1_penalty(real=x, scores=D(x), scaler=scaler, return_norms=True)[1]

    assert torch.equal(norms(None), torch.zeros(5, device=device))   # underflowed: R1 silently off
    assert rel_err(norms(scaler), truth) < 1e-2            # scaled: the right norms


def test_scaler_full_step_float16():
    """A whole AMP critic step: scaler.scale(loss).backward(), unscale_, step, update."""
    D, Dref = f32_critic(), f32_critic()
    real, fake = (torch.randn(8, 6, generator=torch.Generator().manual_seed(s)) for s in (8, 9))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    opt = torch.optim.SGD(D.parameters(), lr=0.1)
    x = real.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        d_real = D(x)
        loss = F.softplus(-d_real).mean() + F.softplus(D(fake)).mean() + fg.r1_penalty(
            real=x, scores=d_real, scaler=scaler)
    opt.zero_grad()
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    got = [p.grad.clone() for p in D.parameters()]
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 12   # no inf: no step skipped, scale kept
    # the same step written with PyTorch's recipe, R1 from the same forward (StyleGAN2-style)
    # (both critic forwards in one autocast region, as above: they share autocast's cached float16
    # weights, whose gradient then accumulates in float16)
    x = real.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        out, out_fake = Dref(x), Dref(fake)
    g = torch.autograd.grad((out * 2.0 ** 12).sum(), x, create_graph=True)[0].float() / 2.0 ** 12
    with torch.autocast("cpu", dtype=torch.float16):
        ref = F.softplus(-out).mean() + F.softplus(out_fake).mean() + g.flatten(1).square().sum(1).mean() * 5.0
    want = [t / 2.0 ** 12 for t in param_grads(Dref, ref * 2.0 ** 12)]
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-6


@pytest.mark.parametrize("which", ["r1", "gp", "dragan", "wgan_div"])
def test_scaler_is_exact_in_float64(which):
    """Power-of-two scale, no low precision: scaling is invisible (value and gradients)."""
    D = mlp_critic()
    real, fake = data((5, 5))
    s = torch.amp.GradScaler("cpu", init_scale=2.0 ** 13)
    a = torch.rand(5, dtype=torch.float64)
    call = {"r1": lambda **kw: fg.r1_penalty(D, real, **kw),
            "gp": lambda **kw: fg.gradient_penalty(D, real, fake, alpha=a, **kw),
            "dragan": lambda **kw: fg.dragan_penalty(D, real, noise=fake, **kw),
            "wgan_div": lambda **kw: fg.wgan_div_penalty(D, real, fake, **kw)}[which]
    assert_same_step(D, call(scaler=s), call(), tol=1e-15)
    assert_same_step(D, call(scaler=torch.amp.GradScaler("cpu", enabled=False)), call(), tol=0.0)


# --- bad input ----------------------------------------------------------------------------------
def test_from_scores_bad_input():
    D = mlp_critic()
    real, fake = data((4, 5))
    r = real.detach().requires_grad_()
    f = fake.detach().requires_grad_()
    cases = [
        # outputs that do not depend on the inputs
        (lambda: fg.r1_penalty(real=r, scores=D(f)), ValueError, r"scores does not depend on real"),
        (lambda: fg.r1_penalty(real=r, scores=D(real)), ValueError, r"scores does not depend on real"),
        (lambda: fg.r1_penalty(real=r, scores=D(r).detach()), ValueError, r"scores does not depend on real"),
        # inputs without requires_grad
        (lambda: fg.r1_penalty(real=real, scores=D(real)), ValueError, r"real must require grad"),
        (lambda: fg.r2_penalty(fake=fake, scores=D(fake)), ValueError, r"fake must require grad"),
        (lambda: fg.wgan_div_penalty(real=r, fake=fake, scores=(D(r), D(fake))), ValueError, r"fake must require grad"),
        # mismatched batch sizes
        (lambda: fg.r1_penalty(real=r, scores=D(r)[:3]), ValueError, r"scores must have one score per sample of real \(batch size 4\), got shape \(3, 1\)"),
        (lambda: fg.r1_penalty(real=r, scores=D(r).sum()), ValueError, r"scores must have one score per sample"),
        (lambda: fg.wgan_div_penalty(real=r, fake=f, scores=(D(r), D(f).repeat(2, 1))), ValueError, r"scores\[1\] must have one score per sample of fake"),
        # the form itself
        (lambda: fg.r1_penalty(D, r, scores=D(r)), TypeError, r"either the critic D or scores="),
        (lambda: fg.r1_penalty(real=r), TypeError, r"D \(the critic\) is required, or scores="),
        (lambda: fg.r1_penalty(real=r, scores=[D(r)]), TypeError, r"scores must be a tensor"),
        (lambda: fg.wgan_div_penalty(real=r, fake=f, scores=D(r)), TypeError, r"scores must be a tuple of 2 tensors"),
        (lambda: fg.wgan_div_penalty(real=r, fake=f, scores=(D(r),)), TypeError, r"of length 1"),
        (lambda: fg.wgan_div_penalty(real=r, fake=f, scores=(D(r), "x")), TypeError, r"scores\[1\] must be a tensor"),
        (lambda: fg.r1_penalty(real=r, scores=(D(r) > 0).long()), TypeError, r"scores must be a floating-point"),
        (lambda: fg.r1_penalty(scores=D(r)), TypeError, r"real must be a torch.Tensor"),
        # scaler
        (lambda: fg.r1_penalty(real=r, scores=D(r), scaler="amp"), TypeError, r"scaler must be a torch.amp.GradScaler"),
        (lambda: fg.r1_penalty(D, real, scaler=2.0 ** 16), TypeError, r"scaler must be a torch.amp.GradScaler"),
    ]
    for fn, err, words in cases:
        with pytest.raises(err, match=words):
            fn()


def test_bad_scaler_changes_nothing():
    """A bad scaler is refused before alpha is drawn (generator untouched) and before D runs."""
    D = Counting(mlp_critic())
    real, fake = data((4, 5))
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    with pytest.raises(TypeError, match="scaler"):
        fg.gradient_penalty(D, real, fake, generator=g, scaler=object())
    assert torch.equal(g.get_state(), before) and D.calls == 0


# --- DDP: lazy steps in 2 gloo processes against one process on the global batch -------------------
WORLD, LOCAL, STEPS, EVERY, LR = 2, 3, 5, 2, 0.05
DDP_TOL = 1e-10           # float64; unsynchronised gradients land ~1e-2 away
DEADLINE_S = 240


def ddp_critic():
    """The last bias gets no gradient from any penalty: the parameter DDP mishandles."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 12), nn.Tanh(), nn.Linear(12, 6), nn.LeakyReLU(0.2), nn.Linear(6, 1)).double()


def ddp_batch(step, part=None):
    g = torch.Generator().manual_seed(200 + step)
    b = dict(real=torch.randn(WORLD * LOCAL, 4, generator=g, dtype=torch.float64),
             fake=torch.randn(WORLD * LOCAL, 4, generator=g, dtype=torch.float64) + 0.5)
    return b if part is None else {k: v[part * LOCAL:(part + 1) * LOCAL] for k, v in b.items()}


def lazy_separate_D(D, opt, lazy, b):
    """StyleGAN2's phases: the loss, then (every k steps) R1 backpropagated on its own."""
    loss = F.softplus(D(b["fake"])).mean() + F.softplus(-D(b["real"])).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if lazy.due:
        opt.zero_grad(set_to_none=True)
        lazy(D, b["real"], gamma=1.0).backward()
        opt.step()
    else:
        assert float(lazy(D, b["real"], gamma=1.0)) == 0.0


def lazy_separate_scores(D, opt, lazy, b):
    """As above, the regularization phase with its own forward and scores= (no D passed)."""
    loss = F.softplus(D(b["fake"])).mean() + F.softplus(-D(b["real"])).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    due = lazy.due
    x = b["real"].detach().requires_grad_(due)
    pen = lazy(real=x, scores=D(x) if due else None, gamma=1.0)
    if due:
        opt.zero_grad(set_to_none=True)
        pen.backward()
        opt.step()


def lazy_combined_scores(D, opt, lazy, b):
    """R1 from the loss's forward, added to the loss: one backward."""
    x = b["real"].detach().requires_grad_(lazy.due)
    d_real = D(x)
    loss = F.softplus(D(b["fake"])).mean() + F.softplus(-d_real).mean() + lazy(real=x, scores=d_real, gamma=1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def lazy_wgan_div_scores(D, opt, lazy, b):
    due = lazy.due
    r, f = b["real"].detach().requires_grad_(due), b["fake"].detach().requires_grad_(due)
    d_real, d_fake = D(r), D(f)
    loss = d_fake.mean() - d_real.mean() + lazy(real=r, fake=f, scores=(d_real, d_fake))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


DDP_SCENARIOS = {
    "lazy_separate_D": (lazy_separate_D, fg.r1_penalty),
    "lazy_separate_scores": (lazy_separate_scores, fg.r1_penalty),
    "lazy_combined_scores": (lazy_combined_scores, fg.r1_penalty),
    "lazy_wgan_div_scores": (lazy_wgan_div_scores, fg.wgan_div_penalty),
}


def _ddp_run(step_fn, penalty, wrap, part):
    D = wrap(ddp_critic())
    opt = torch.optim.SGD(D.parameters(), lr=LR)
    lazy = fg.Lazy(penalty, every=EVERY)
    out = []
    for s in range(STEPS):
        step_fn(D, opt, lazy, ddp_batch(s, part))
        out.append([p.detach().clone() for p in D.parameters()])
    return out


def _ddp_worker(rank, init_file, out_dir):
    result = {}
    try:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
        for name, (step_fn, penalty) in DDP_SCENARIOS.items():
            try:
                result[name] = _ddp_run(step_fn, penalty, nn.parallel.DistributedDataParallel, rank)
            except Exception:
                result[name] = traceback.format_exc()
            dist.barrier()
        leave_process_group()
    except Exception:
        result["worker"] = traceback.format_exc()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ddp_ranks():
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch built without gloo")
    return run_ranks(_ddp_worker, WORLD, DEADLINE_S, "DDP worker")


@pytest.mark.parametrize("name", list(DDP_SCENARIOS))
def test_ddp_lazy_matches_single_process(ddp_ranks, name):
    step_fn, penalty = DDP_SCENARIOS[name]
    want = _ddp_run(step_fn, penalty, lambda D: D, None)
    for r, res in enumerate(ddp_ranks):
        got = res[name]
        assert not isinstance(got, str), f"rank {r} raised in {name}:\n{got}"
        for s, (got_s, want_s) in enumerate(zip(got, want)):
            for i, (a, b) in enumerate(zip(got_s, want_s)):
                err = float((a - b).abs().max())
                assert err < DDP_TOL, (f"{name}: after step {s} ({'regularized' if s % EVERY == 0 else 'plain'}), "
                                       f"rank {r} parameter {i} differs from the single-process run by {err:.3g}")


# --- the README's examples ------------------------------------------------------------------------
def _readme_block(after):
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(after):], re.S).group(1)


def test_readme_lazy_r1_step_runs():
    ns = {}
    exec(_readme_block("R1 the StyleGAN2 way"), ns)
    torch.manual_seed(0)
    D = nn.Sequential(nn.Linear(3, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    G = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(D.parameters(), **ns["r1"].optimizer_kwargs(lr=1e-3, betas=(0.0, 0.99)))
    losses = [float(ns["r1_critic_step"](D, G, opt, torch.randn(8, 3), torch.randn(8, 2))) for _ in range(17)]
    assert ns["r1"].state_dict() == {"every": 16, "step": 17} and all(map(torch.isfinite, torch.tensor(losses)))


def test_readme_amp_snippet_runs_on_cpu():
    code = _readme_block("**Mixed precision.**").replace('"cuda"', '"cpu"')
    D, fake = f32_critic(), torch.randn(8, 6)
    ns = dict(torch=torch, F=F, fg=fg, D=D, fake=fake, real=torch.randn(8, 6),
              opt_d=torch.optim.SGD(D.parameters(), lr=0.1))
    before = [p.detach().clone() for p in D.parameters()]
    exec(code, ns)
    # the default init_scale (2**16) overflows float16 on the first step: skipped, scale halved
    assert ns["scaler"].get_scale() == 2.0 ** 15
    assert all(torch.equal(a, b) for a, b in zip(before, D.parameters()))
