"""Spectral norm: fastgan against torch.nn.utils.parametrizations.spectral_norm (the semantics it
replaces), every backend against the eager reference, checkpoints both ways, bad input, autocast,
two forwards before one backward (also under a real 2-process gloo DDP), torch.compile, opcheck.
"""
import copy
import os
import socket
import tempfile
import time

import pytest
import torch
import torch.nn.functional as F
from conftest import available_backends, device_for, leave_process_group, rel_err
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_sn

import fastgan as fg
from fastgan import reference

BACKENDS = available_backends(include_reference=True)
# the Triton interpreter is ~1000x slower than eager: it runs the shorter half of the matrix
SEQ_CASES = [(b, n, dt) for b in BACKENDS for n in (1, 3) for dt in (torch.float64, torch.float32)
             if b != "triton" or (n, dt) == (3, torch.float32)]
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


class Scale(nn.Module):
    """A module with a 1-D weight (torch normalizes it exactly, no power iteration)."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n))

    def forward(self, x):
        return x * self.weight


# (constructor, input maker); odd sizes so no kernel path is exercised only at multiples of 8
LAYERS = {
    "linear": (lambda: nn.Linear(13, 7), lambda dt: torch.randn(5, 13, dtype=dt)),
    "conv2d": (lambda: nn.Conv2d(3, 6, 3), lambda dt: torch.randn(2, 3, 7, 7, dtype=dt)),
    "convT2d": (lambda: nn.ConvTranspose2d(5, 4, 3, stride=2), lambda dt: torch.randn(2, 5, 4, 4, dtype=dt)),
    "conv1d": (lambda: nn.Conv1d(4, 3, 5), lambda dt: torch.randn(2, 4, 9, dtype=dt)),
    "embedding": (lambda: nn.Embedding(11, 6), lambda dt: torch.randint(0, 11, (7,))),
    "1d": (lambda: Scale(9), lambda dt: torch.randn(4, 9, dtype=dt)),
}


def sn_state(m, name="weight"):
    plist = m.parametrizations[name]
    return plist.original, getattr(plist[0], "_u", None), getattr(plist[0], "_v", None)


def twin(make, dtype, backend, n_iter=1, seed=0, **kw):
    """(torch spectral_norm module, fastgan spectral_norm module) with equal weights and RNG draws."""
    torch.manual_seed(seed)
    a = make().to(dtype)
    b = copy.deepcopy(a)
    torch.manual_seed(seed + 1)
    torch_sn(a, n_power_iterations=n_iter, **kw)
    rng_after_torch = torch.random.get_rng_state()
    torch.manual_seed(seed + 1)
    fg.spectral_norm(b, n_power_iterations=n_iter, backend=backend, **kw)
    assert torch.equal(torch.random.get_rng_state(), rng_after_torch), "registration drew a different amount"
    return a, b


def assert_same_state(a, b, tol, what=""):
    for x, y, name in zip(sn_state(a), sn_state(b), ("original", "u", "v")):
        if x is not None:
            assert rel_err(y, x) <= tol, f"{what}{name}: rel err {rel_err(y, x)}"
    assert rel_err(b.weight, a.weight) <= tol, f"{what}W/sigma: rel err {rel_err(b.weight, a.weight)}"


# --------------------------------------------------------------------------------------------
# drop-in: the same numbers as torch's spectral_norm over a training sequence
@pytest.mark.parametrize("backend, n_iter, dtype", SEQ_CASES)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_training_sequence_matches_torch(backend, layer, n_iter, dtype):
    make, inp = LAYERS[layer]
    dev = device_for(backend)  # every backend on the device it runs on
    a, b = (m.to(dev) for m in twin(make, dtype, backend, n_iter))
    tol = TOL[dtype]
    if layer != "1d":  # registration: same draws and 15 (+1 from the registration check) iterations
        assert rel_err(sn_state(b)[1], sn_state(a)[1]) <= tol
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    for step, train in enumerate([True, True, False, True, True]):
        a.train(train)
        b.train(train)
        x = inp(dtype).to(dev)
        ya, yb = a(x), b(x)
        assert rel_err(yb, ya) <= tol, f"step {step}: output"
        ya.square().mean().backward()
        yb.square().mean().backward()
        ga, gb = a.parametrizations.weight.original.grad, b.parametrizations.weight.original.grad
        assert rel_err(gb, ga) <= 10 * tol, f"step {step}: weight gradient"
        assert_same_state(a, b, tol, f"step {step}: ")
        opt_a.step()
        opt_b.step()
        opt_a.zero_grad()
        opt_b.zero_grad()


def test_eval_mode_does_not_iterate_and_train_does():
    _, b = twin(LAYERS["linear"][0], torch.float64, "cpu")
    u0 = b.parametrizations.weight[0]._u.clone()
    b.eval()
    b(torch.randn(2, 13, dtype=torch.float64))
    assert torch.equal(b.parametrizations.weight[0]._u, u0)
    with torch.no_grad():  # a weight that is not rank one: one more iteration moves u
        b.parametrizations.weight.original.add_(torch.randn(7, 13, dtype=torch.float64))
    b.train()
    b(torch.randn(2, 13, dtype=torch.float64))
    assert not torch.equal(b.parametrizations.weight[0]._u, u0)


def test_sigma_is_the_largest_singular_value():
    torch.manual_seed(3)
    m = fg.spectral_norm(nn.Linear(20, 30).double(), n_power_iterations=1)
    for _ in range(60):
        m(torch.randn(1, 20, dtype=torch.double))
    sv = torch.linalg.matrix_norm(m.weight.detach(), 2)
    assert abs(float(sv) - 1.0) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_propagates(backend):
    m = fg.spectral_norm(nn.Linear(5, 4).to(device_for(backend)), backend=backend)
    with torch.no_grad():
        m.parametrizations.weight.original[1, 2] = float("nan")
    assert torch.isnan(m.weight).all()


# --------------------------------------------------------------------------------------------
# batched: apply_spectral_norm == torch's spectral_norm on every layer
class Critic(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.c2 = nn.Conv2d(8, 12, 3, 2, 1)
        self.up = nn.ConvTranspose2d(12, 5, 2, 2)
        self.fc = nn.Linear(5 * 4 * 4, 1)
        self.emb = nn.Embedding(3, 5 * 4 * 4)  # projection-discriminator style class embedding

    def forward(self, x, y):
        h = F.leaky_relu(self.c1(x), 0.2)
        h = F.leaky_relu(self.c2(h), 0.2)
        h = F.leaky_relu(self.up(h), 0.2).flatten(1)
        return self.fc(h).squeeze(1) + (self.emb(y) * h).sum(1)


def fg_critic(batched, backend="auto"):
    """Critic() with fastgan spectral norm on every layer: batched, or one layer at a time."""
    torch.manual_seed(0)
    D = Critic()
    if batched:
        return fg.apply_spectral_norm(D, backend=backend)
    for m in (D.c1, D.c2, D.up, D.fc, D.emb):
        fg.spectral_norm(m, backend=backend)
    return D


def torch_sn_all(model, n_iter=1):
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
            torch_sn(m, n_power_iterations=n_iter)
    return model


def critic_pair(dtype, backend, n_iter=1, batched=True):
    torch.manual_seed(0)
    a = Critic().to(dtype)
    b = copy.deepcopy(a)
    torch.manual_seed(1)
    torch_sn_all(a, n_iter)
    torch.manual_seed(1)
    if batched:
        fg.apply_spectral_norm(b, n_power_iterations=n_iter, backend=backend)
    else:  # modules() order: the same RNG draws as torch_sn_all
        for m in [m for m in b.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding))]:
            fg.spectral_norm(m, n_power_iterations=n_iter, backend=backend)
    return a, b


def critic_losses(D, real, fake, y):
    """WGAN critic loss: two forwards (real, fake) before one backward."""
    return D(fake, y).mean() - D(real, y).mean()


@pytest.mark.parametrize("backend, dtype, batched", [(b, dt, True) for b in BACKENDS
                                                     for dt in (torch.float64, torch.float32)
                                                     if b != "triton" or dt == torch.float32]
                         + [(b, torch.float64, False) for b in BACKENDS if b != "triton"])
def test_apply_spectral_norm_matches_torch(backend, dtype, batched):
    """Two forwards (real, fake) before each backward, over a few optimizer steps: gradients, buffers
    and outputs equal torch's, batched (apply_spectral_norm) and per layer (spectral_norm)."""
    dev = device_for(backend)
    a, b = (m.to(dev) for m in critic_pair(dtype, backend, n_iter=2, batched=batched))
    tol = TOL[dtype]
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2)
    for step in range(4):
        real, fake = torch.randn(4, 3, 8, 8, dtype=dtype, device=dev), torch.randn(4, 3, 8, 8, dtype=dtype, device=dev)
        y = torch.randint(0, 3, (4,), device=dev)
        la, lb = critic_losses(a, real, fake, y), critic_losses(b, real, fake, y)
        assert rel_err(lb, la) <= tol
        la.backward()
        lb.backward()
        for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
            assert na == nb
            assert rel_err(pb.grad, pa.grad) <= 20 * tol, f"step {step}: grad of {na}"
        for (na, xa), (nb, xb) in zip(a.named_buffers(), b.named_buffers()):
            assert rel_err(xb, xa) <= tol, f"step {step}: {na}"
        opt_a.step()
        opt_b.step()
        opt_a.zero_grad()
        opt_b.zero_grad()
    a.eval()
    b.eval()
    x, y = torch.randn(2, 3, 8, 8, dtype=dtype, device=dev), torch.randint(0, 3, (2,), device=dev)
    assert rel_err(b(x, y), a(x, y)) <= tol


def test_apply_spectral_norm_batches_one_call_per_forward(monkeypatch):
    from fastgan.ops import spectral

    calls = []
    real = spectral.power_normalize
    monkeypatch.setattr(spectral, "power_normalize", lambda *a: calls.append(len(a[1])) or real(*a))
    _, b = critic_pair(torch.float32, "cpu")
    calls.clear()
    b(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,)))
    assert calls == [5]  # all five layers in one power_normalize call


def test_layer_used_twice_iterates_twice_like_torch():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x):
            return self.fc(torch.tanh(self.fc(x)))

    torch.manual_seed(0)
    a = Twice().double()
    b = copy.deepcopy(a)
    torch.manual_seed(1)
    torch_sn(a.fc)
    torch.manual_seed(1)
    fg.apply_spectral_norm(b)
    x = torch.randn(3, 6, dtype=torch.double)
    assert rel_err(b(x), a(x)) <= 1e-10
    assert_same_state(a.fc, b.fc, 1e-10)


def test_remove_spectral_norm_leaves_current_w_over_sigma():
    torch.manual_seed(0)
    m = fg.spectral_norm(nn.Conv2d(3, 5, 3).double())
    m(torch.randn(1, 3, 5, 5, dtype=torch.double))
    orig = m.parametrizations.weight.original
    w, u, v = orig.detach().clone(), m.parametrizations.weight[0]._u, m.parametrizations.weight[0]._v
    expected = w / torch.dot(u, w.flatten(1) @ v)
    fg.remove_spectral_norm(m)
    assert not parametrize.is_parametrized(m)
    assert m.weight is orig  # the optimizer's parameter object survives
    assert rel_err(m.weight, expected) <= 1e-12
    assert set(m.state_dict()) == {"weight", "bias"}


def test_remove_from_batched_model_keeps_the_others():
    _, b = critic_pair(torch.float32, "cpu")
    fg.remove_spectral_norm(b.c2)
    b(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,)))
    assert not parametrize.is_parametrized(b.c2)


# --------------------------------------------------------------------------------------------
# checkpoints
def test_state_dict_keys_identical_and_cross_load_both_ways():
    # float64: torch and fastgan round sigma differently, so a float32 comparison sits at ~1e-6 and
    # flips with the CPU's SIMD width; in float64 any real difference stands far above rounding.
    dt = torch.float64
    a, b = critic_pair(dt, "auto")
    assert list(a.state_dict()) == list(b.state_dict())
    for _ in range(2):  # move both away from their registration state, differently
        a(torch.randn(2, 3, 8, 8, dtype=dt), torch.randint(0, 3, (2,)))
    x, y = torch.randn(3, 3, 8, 8, dtype=dt), torch.randint(0, 3, (3,))
    for src, dst in ((a, b), (b, a)):
        dst.load_state_dict(src.state_dict())
        src.eval()
        dst.eval()
        assert rel_err(dst(x, y), src(x, y)) <= 1e-12
        src.train()
        dst.train()
        assert rel_err(dst(x, y), src(x, y)) <= 1e-10  # the next power iteration agrees too


@pytest.mark.parametrize("layer", ["linear", "conv2d", "convT2d"])
def test_loads_legacy_hook_checkpoint(layer):
    make, inp = LAYERS[layer]
    torch.manual_seed(0)
    legacy = torch.nn.utils.spectral_norm(make().double())
    for _ in range(3):
        legacy(inp(torch.double))
    sd = legacy.state_dict()
    assert {"weight_orig", "weight_u", "weight_v"} <= set(sd)
    m = fg.spectral_norm(make().double())
    m.load_state_dict(sd)
    legacy.eval()
    m.eval()
    x = inp(torch.double)
    assert rel_err(m(x), legacy(x)) <= 1e-12
    # nested: the keys carry the submodule prefix
    outer = nn.Sequential(fg.spectral_norm(make().double()))
    outer.load_state_dict({"0." + k: t for k, t in sd.items()})
    outer.eval()
    assert rel_err(outer(x), legacy(x)) <= 1e-12


def test_deepcopy_to_dtype_and_train_eval():
    _, b = critic_pair(torch.float32, "cpu")
    c = copy.deepcopy(b)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,))
    assert torch.equal(c(x, y), b(x, y))
    for (_, p), (_, q) in zip(b.named_buffers(), c.named_buffers()):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()
    d = c.double()
    assert d.c1.parametrizations.weight[0]._u.dtype == torch.float64
    d.eval()
    b.eval()
    assert rel_err(d(x.double(), y), b(x, y)) <= 1e-5


# --------------------------------------------------------------------------------------------
# bad input
@pytest.mark.parametrize("call, err, match", [
    (lambda: fg.spectral_norm(nn.Linear(3, 3), name="nope"), ValueError, "no parameter"),
    (lambda: fg.spectral_norm(nn.Linear(3, 3, bias=False), name="bias"), ValueError, "no parameter"),
    (lambda: fg.spectral_norm(nn.Linear(3, 3), n_power_iterations=0), ValueError, "n_power_iterations"),
    (lambda: fg.spectral_norm(nn.Linear(3, 3), n_power_iterations=1.5), TypeError, "n_power_iterations"),
    (lambda: fg.spectral_norm(nn.Linear(3, 3), eps=0.0), ValueError, "eps"),
    (lambda: fg.spectral_norm(nn.Linear(3, 3), eps=-1e-3), ValueError, "eps"),
    (lambda: fg.spectral_norm(nn.Linear(3, 3), dim=2), IndexError, "dim"),
    (lambda: fg.spectral_norm(nn.Linear(3, 3), dim=-3), IndexError, "dim"),
    (lambda: fg.spectral_norm(nn.Linear(3, 3), dim=2), ValueError, "dim"),
    (lambda: fg.spectral_norm(nn.LazyLinear(3)), ValueError, "uninitialized"),
    (lambda: fg.spectral_norm(nn.LazyLinear(3)), RuntimeError, "uninitialized"),
    (lambda: fg.spectral_norm("linear"), ValueError, "module"),
    (lambda: fg.spectral_norm(nn.Linear(3, 3), eps="1e-12"), TypeError, "eps"),
    (lambda: fg.spectral_norm(nn.Linear(3, 3), backend="gpu"), ValueError, "backend"),
    (lambda: fg.spectral_norm("linear"), TypeError, "module"),
    (lambda: fg.spectral_norm(torch.nn.utils.spectral_norm(nn.Linear(3, 3))), ValueError, "already"),
    (lambda: fg.remove_spectral_norm(nn.Linear(3, 3)), ValueError, "not found"),
    (lambda: fg.apply_spectral_norm(fg.apply_spectral_norm(nn.Sequential(nn.Linear(2, 2)))), ValueError, "already"),
    (lambda: fg.apply_spectral_norm(nn.Sequential(nn.Linear(2, 2)), eps=0), ValueError, "eps"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


class IntWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.ones(3, 3, dtype=torch.long))


@pytest.mark.parametrize("call", [
    lambda sn: sn(nn.Linear(3, 3), dim=2),
    lambda sn: sn(nn.Linear(3, 3), dim=-3),
    lambda sn: sn(nn.Linear(3, 3), n_power_iterations=0),
    lambda sn: sn(nn.Linear(3, 3), name="nope"),
    lambda sn: sn("linear"),
    lambda sn: sn(nn.LazyLinear(3)),
    lambda sn: sn(IntWeight()),
    lambda sn: sn(torch.nn.utils.spectral_norm(nn.Linear(3, 3))),
], ids=["dim", "dim-neg", "n_iter", "name", "module", "lazy", "int", "legacy-hook"])
def test_errors_are_of_torchs_types(call):
    """Code written against torch's spectral_norm catches fastgan's errors with the same except."""
    with pytest.raises(Exception) as torch_err:
        call(torch_sn)
    with pytest.raises(Exception) as fg_err:
        call(fg.spectral_norm)
    assert isinstance(fg_err.value, type(torch_err.value)), (type(fg_err.value), type(torch_err.value))
    assert isinstance(fg_err.value, (TypeError, ValueError))  # and fastgan's own contract


def test_numpy_integers_accepted():
    np = pytest.importorskip("numpy")
    torch.manual_seed(0)
    m = fg.spectral_norm(nn.Linear(4, 3), n_power_iterations=np.int64(2), dim=np.int32(0))
    assert m.parametrizations.weight[0].n_power_iterations == 2 and type(m.parametrizations.weight[0].dim) is int


# --------------------------------------------------------------------------------------------
# like torch: stacking, complex weights
@pytest.mark.parametrize("first", ["torch", "fastgan"])
def test_stacked_twice_matches_torch(first):
    torch.manual_seed(0)
    a = nn.Conv2d(3, 5, 3).double()
    b = copy.deepcopy(a)
    torch.manual_seed(1)
    torch_sn(torch_sn(a, n_power_iterations=2))
    torch.manual_seed(1)
    (torch_sn if first == "torch" else fg.spectral_norm)(b, n_power_iterations=2)
    fg.spectral_norm(b)
    assert list(b.state_dict()) == list(a.state_dict())
    assert "parametrizations.weight.1._u" in a.state_dict()
    for k in range(3):  # training steps, then eval
        x = torch.randn(2, 3, 6, 6, dtype=torch.double)
        assert rel_err(b(x), a(x)) <= 1e-10, k
    for (ka, ta), (kb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert rel_err(tb, ta) <= 1e-10, ka
    a.eval()
    b.eval()
    assert rel_err(b.weight, a.weight) <= 1e-10


def crel(a, b):
    """Relative error of complex tensors (conftest's rel_err compares real parts)."""
    a, b = a.detach().to(torch.complex128), b.detach().to(torch.complex128)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
def test_complex_weight_matches_torch(dtype):
    tol = 1e-10 if dtype == torch.complex128 else 1e-5
    a, b = twin(lambda: nn.Linear(6, 5), dtype, "auto", n_iter=2)
    assert b.parametrizations.weight[0]._u.dtype == dtype
    for _ in range(3):
        x = torch.randn(4, 6, dtype=dtype)
        assert crel(b(x), a(x)) <= tol
    for x_, y_ in zip(sn_state(a), sn_state(b)):
        assert crel(y_, x_) <= tol
    # gradients flow like torch's
    x = torch.randn(4, 6, dtype=dtype)
    a(x).abs().sum().backward()
    b(x).abs().sum().backward()
    assert crel(b.parametrizations.weight.original.grad, a.parametrizations.weight.original.grad) <= tol
    # and inside a batched model
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 2)).to(dtype)
    m2 = copy.deepcopy(m)
    torch.manual_seed(4)
    for layer in m:
        torch_sn(layer)
    torch.manual_seed(4)
    fg.apply_spectral_norm(m2)
    for _ in range(2):
        x = torch.randn(3, 6, dtype=dtype)
        assert crel(m2(x), m(x)) <= tol


def test_oldest_legacy_layout_loads_like_torch():
    """Checkpoints from before torch's version-1 layout: weight_orig, weight_u and weight (W / sigma),
    no weight_v; torch solves for v (its SpectralNormLoadStateDictPreHook), so must fastgan."""
    torch.manual_seed(0)
    legacy = torch.nn.utils.spectral_norm(nn.Linear(7, 5).double())
    for _ in range(3):
        legacy(torch.randn(2, 7, dtype=torch.double))
    sd = legacy.state_dict()
    sd["weight"] = legacy.weight.detach().clone()
    del sd["weight_v"]
    del sd._metadata[""]["spectral_norm"]  # no version: the oldest layout
    torch.manual_seed(5)
    ref = torch.nn.utils.spectral_norm(nn.Linear(7, 5).double())
    ref.load_state_dict(copy.deepcopy(sd))
    m = fg.spectral_norm(nn.Linear(7, 5).double())
    m.load_state_dict(copy.deepcopy(sd))
    assert rel_err(m.parametrizations.weight[0]._v, ref.weight_v) <= 1e-12
    ref.eval()
    m.eval()
    x = torch.randn(3, 7, dtype=torch.double)
    assert rel_err(m(x), ref(x)) <= 1e-12
    assert rel_err(m.weight, legacy.weight) <= 1e-8  # sigma recovered from W / sigma


# --------------------------------------------------------------------------------------------
# lifecycle: hooks come and go with the layers they normalize
def small_critic():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 4 * 4, 1))


def fg_hooks(model):
    pre = [h for h in model._forward_pre_hooks.values() if type(h).__name__ == "_BatchedPowerIteration"]
    post = [h for h in model._forward_hooks.values() if type(getattr(h, "__self__", None)).__name__
            == "_BatchedPowerIteration"]
    return pre + post


@pytest.mark.parametrize("remover", ["fastgan", "torch"])
def test_reapply_after_removing_every_layer(remover):
    D = fg.apply_spectral_norm(small_critic())
    x = torch.randn(2, 3, 6, 6)
    D(x)
    for layer in (D[0], D[3]):
        if remover == "fastgan":
            fg.remove_spectral_norm(layer)
        else:
            parametrize.remove_parametrizations(layer, "weight")
    D(x)  # no fastgan hook runs on removed layers; the hooks go
    assert fg_hooks(D) == []
    assert all(not parametrize.is_parametrized(m) for m in D)
    fg.apply_spectral_norm(D)  # applies afresh
    assert len(fg_hooks(D)) == 2
    assert parametrize.is_parametrized(D[0], "weight") and parametrize.is_parametrized(D[3], "weight")
    D(x).sum().backward()


def test_reapply_right_after_torch_remove_without_a_forward():
    D = fg.apply_spectral_norm(small_critic())
    for layer in (D[0], D[3]):
        parametrize.remove_parametrizations(layer, "weight")
    fg.apply_spectral_norm(D)
    assert len(fg_hooks(D)) == 2
    # the stale layer hooks do not interfere with a plain state_dict round trip
    D2 = small_critic()
    D2.load_state_dict(small_critic().state_dict())


def test_partial_removal_still_refuses_reapply_and_keeps_the_rest():
    D = fg.apply_spectral_norm(small_critic())
    fg.remove_spectral_norm(D[0])
    with pytest.raises(ValueError, match="already applied.*1 layers"):
        fg.apply_spectral_norm(D)
    D(torch.randn(2, 3, 6, 6))
    assert parametrize.is_parametrized(D[3]) and not parametrize.is_parametrized(D[0])


def test_model_with_legacy_spectral_norm_layer_is_skipped_like_parametrized_ones():
    torch.manual_seed(0)
    D = nn.Sequential(torch.nn.utils.spectral_norm(nn.Linear(5, 6)), nn.ReLU(), torch_sn(nn.Linear(6, 4)),
                      nn.Linear(4, 1))
    fg.apply_spectral_norm(D)
    assert not parametrize.is_parametrized(D[0])  # the legacy hook still does its job
    assert "weight_orig" in dict(D[0].named_parameters())
    assert isinstance(D[2].parametrizations.weight[0], torch.nn.utils.parametrizations._SpectralNorm)
    assert parametrize.is_parametrized(D[3], "weight")
    D(torch.randn(3, 5)).sum().backward()


def test_remove_over_weight_norm_keeps_weight_norm():
    torch.manual_seed(0)
    m = fg.spectral_norm(torch.nn.utils.parametrizations.weight_norm(nn.Linear(6, 4).double()))
    for _ in range(2):
        m(torch.randn(2, 6, dtype=torch.double))
    m.eval()
    want = m.weight.detach().clone()
    g = m.parametrizations.weight.original0
    fg.remove_spectral_norm(m)
    plist = m.parametrizations.weight
    assert len(plist) == 1 and type(plist[0]).__name__ == "_WeightNorm"
    assert m.parametrizations.weight.original0 is g  # parameter objects kept
    assert rel_err(m.weight, want) <= 1e-12
    assert set(m.state_dict()) == {"bias", "parametrizations.weight.original0", "parametrizations.weight.original1"}


def test_remove_one_of_two_stacked():
    torch.manual_seed(0)
    m = fg.spectral_norm(fg.spectral_norm(nn.Linear(6, 4).double()))
    m(torch.randn(2, 6, dtype=torch.double))
    m.eval()
    want = m.weight.detach().clone()
    fg.remove_spectral_norm(m)
    assert len(m.parametrizations.weight) == 1
    # the top one's W / sigma goes back through the one below, whose right_inverse is the identity
    # (torch's): it becomes that one's original
    assert rel_err(m.parametrizations.weight.original, want) <= 1e-12
    fg.remove_spectral_norm(m)
    assert not parametrize.is_parametrized(m)
    assert m._load_state_dict_pre_hooks == {} or all(
        type(getattr(h, "hook", h)).__name__ != "_LegacyKeys" for h in m._load_state_dict_pre_hooks.values())


def test_nothing_modified_on_error():
    model = nn.Sequential(nn.Linear(3, 3), nn.LazyLinear(2))
    with pytest.raises(ValueError, match="uninitialized"):
        fg.apply_spectral_norm(model)
    assert not parametrize.is_parametrized(model[0])
    m = nn.Linear(3, 3)
    with pytest.raises(ValueError):
        fg.spectral_norm(m, dim=5)
    assert not parametrize.is_parametrized(m)


# --------------------------------------------------------------------------------------------
# kernels against the reference
def random_weight(shape, dtype, layout):
    w = torch.randn(shape, dtype=torch.float64).to(dtype)
    if layout == "channels_last":
        w = w.to(memory_format=torch.channels_last)
    elif layout == "strided":
        w = torch.randn(shape[0], 2 * shape[1], *shape[2:], dtype=torch.float64).to(dtype)[:, ::2]
    return w


POWER_CASES = [((7, 13), 0, "contiguous"), ((6, 5, 3, 3), 0, "channels_last"), ((5, 6, 3, 2), 1, "contiguous"),
               ((4, 9, 2), 2, "strided"), ((40, 70), 0, "contiguous")]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_power_and_normalize_against_reference(backend, dtype):
    from fastgan.ops import spectral

    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    torch.manual_seed(0)
    ws = [random_weight(s, dtype, lay) for s, _, lay in POWER_CASES]
    dims = [d for _, d, _ in POWER_CASES]
    mats = [reference.sn_weight_matrix(w, d) for w, d in zip(ws, dims)]
    us = [F.normalize(torch.randn(m.shape[0], dtype=dtype), dim=0) for m in mats]
    vs = [F.normalize(torch.randn(m.shape[1], dtype=dtype), dim=0) for m in mats]
    before = [t.clone() for t in us + vs]
    dev = device_for(backend)  # the kernels see tensors on their own device; the reference stays on CPU
    wd, ud, vd = ([t.to(dev) for t in ts] for ts in (ws, us, vs))
    for n_iter in (0, 1, 3):
        # ground truth in float64 from the same (rounded) inputs
        s_ref, u_ref, v_ref = reference.sn_power([w.double() for w in ws], [u.double() for u in us],
                                                 [v.double() for v in vs], dims, n_iter, 1e-12)
        s, u, v = spectral.power(backend, wd, ud, vd, dims, n_iter, 1e-12)
        for k in range(len(ws)):
            assert rel_err(s[k], s_ref[k]) <= tol, (n_iter, k, "sigma")
            assert rel_err(u[k], u_ref[k]) <= tol and rel_err(v[k], v_ref[k]) <= tol, (n_iter, k)
            assert u[k].dtype == dtype and s[k].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(before, us + vs)), "inputs were modified"
    for w, d, u, v, sk in zip(ws, dims, u_ref, v_ref, s_ref):
        wr = w.detach().double().requires_grad_()
        out_ref = reference.sn_normalize(wr, u, v, d)
        g = torch.randn(w.shape, dtype=torch.float64)
        (gw_ref,) = torch.autograd.grad(out_ref, wr, g)
        wk = w.detach().to(dev).requires_grad_()
        out = spectral.normalize(backend, wk, u.to(dev, dtype), v.to(dev, dtype), sk.to(dev, s[0].dtype), d)
        assert out.dtype == dtype and out.shape == w.shape and out.device == wk.device
        assert rel_err(out, out_ref) <= tol
        (gw,) = torch.autograd.grad(out, wk, g.to(dev, dtype))
        assert rel_err(gw, gw_ref) <= 4 * tol


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
@pytest.mark.parametrize("shape, dim", [((5, 4), 0), ((3, 4, 2, 2), 1)])
def test_normalize_gradcheck(backend, shape, dim):
    """The fused backward is d(W / sigma(W))/dW with sigma(W) = u^T W_mat v recomputed from W."""
    from fastgan.ops import spectral

    torch.manual_seed(0)
    dev = device_for(backend)
    w = torch.randn(shape, dtype=torch.float64, device=dev, requires_grad=True)
    mat = reference.sn_weight_matrix(w.detach(), dim)
    u = F.normalize(torch.randn(mat.shape[0], dtype=torch.float64, device=dev), dim=0)
    v = F.normalize(torch.randn(mat.shape[1], dtype=torch.float64, device=dev), dim=0)

    def f(w):
        sigma = torch.vdot(u, reference.sn_weight_matrix(w, dim).detach() @ v)
        return spectral.normalize(backend, w, u, v, sigma, dim)

    assert torch.autograd.gradcheck(f, (w,))


@pytest.mark.skipif("cpu" not in BACKENDS, reason="needs the C++ extension")
def test_normalize_list_against_reference_and_opcheck():
    """sn_normalize_list (apply_spectral_norm's one call for all layers on CPU): each output and its
    gradient equal the eager reference of that layer; non-contiguous and channels_last weights too."""
    torch.manual_seed(0)
    ws = [random_weight(s, torch.float64, lay).detach().requires_grad_() for s, _, lay in POWER_CASES]
    dims = [d for _, d, _ in POWER_CASES]
    mats = [reference.sn_weight_matrix(w.detach(), d) for w, d in zip(ws, dims)]
    us = [F.normalize(torch.randn(m.shape[0], dtype=torch.float64), dim=0) for m in mats]
    vs = [F.normalize(torch.randn(m.shape[1], dtype=torch.float64), dim=0) for m in mats]
    sigmas = [torch.vdot(u, m @ v) for u, m, v in zip(us, mats, vs)]
    out = torch.ops.fastgan.sn_normalize_list(ws, us, vs, sigmas, dims)
    gs = [torch.randn(w.shape, dtype=torch.float64) for w in ws]
    grads = torch.autograd.grad(out[::2], ws[::2], gs[::2])  # outputs without a gradient are skipped
    for k, (w, u, v, d) in enumerate(zip(ws, us, vs, dims)):
        wr = w.detach().clone().requires_grad_()
        out_ref = reference.sn_normalize(wr, u, v, d)
        assert out[k].shape == w.shape and rel_err(out[k], out_ref) <= 1e-12, k
        if k % 2 == 0:
            (g_ref,) = torch.autograd.grad(out_ref, wr, gs[k])
            assert rel_err(grads[k // 2], g_ref) <= 1e-12, k
    torch.library.opcheck(torch.ops.fastgan.sn_normalize_list, (ws[:2], us[:2], vs[:2], sigmas[:2], dims[:2]))


def _ops_namespaces():
    out = []
    if "cpu" in BACKENDS:
        out.append(("fastgan", "cpu"))
    if "cuda" in BACKENDS:
        out.append(("fastgan", "cuda"))
    if "triton" in BACKENDS:
        out.append(("fastgan_triton", "triton"))
    return out


@pytest.mark.parametrize("ns, backend", _ops_namespaces())
def test_opcheck(ns, backend):
    from fastgan.ops import spectral

    spectral.ops(backend)
    ops = getattr(torch.ops, ns)
    torch.manual_seed(0)
    ws = [torch.randn(5, 3, 2, 2), torch.randn(4, 6)]
    us, vs = [F.normalize(torch.randn(5), dim=0), F.normalize(torch.randn(4), dim=0)], \
        [F.normalize(torch.randn(12), dim=0), F.normalize(torch.randn(6), dim=0)]
    dev = device_for(backend)
    ws, us, vs = ([t.to(dev) for t in ts] for ts in (ws, us, vs))
    torch.library.opcheck(ops.sn_power, (ws, us, vs, [0, 0], 2, 1e-12))
    w = torch.randn(4, 5, 3, dtype=torch.float64, device=dev, requires_grad=True)
    u, v = (F.normalize(torch.randn(n, dtype=torch.float64, device=dev), dim=0) for n in (5, 12))
    sigma = torch.tensor(2.5, dtype=torch.float64, device=dev)
    torch.library.opcheck(ops.sn_normalize, (w, u, v, sigma, 1))
    torch.library.opcheck(ops.sn_normalize_backward, (torch.randn(4, 5, 3, dtype=torch.float64, device=dev),
                                                      w.detach(), u, v, sigma, 1))


# --------------------------------------------------------------------------------------------
# where torch's implementation has known problems
@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_autocast(amp_dtype):
    """fp32 weights, autocast compute (pytorch issue 125544): sigma and u, v stay float32."""
    a, b = critic_pair(torch.float32, "auto")
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,))
    for _ in range(2):
        with torch.autocast("cpu", dtype=amp_dtype):
            out = b(x, y)
        out.float().sum().backward()
        with torch.no_grad():
            a(x, y)  # torch's spectral_norm in float32: the power iterations must agree
    for (n, xa), (_, xb) in zip(a.named_buffers(), b.named_buffers()):
        assert xb.dtype == torch.float32 and rel_err(xb, xa) <= 1e-5, n
    assert rel_err(b.c1.weight, a.c1.weight) <= 1e-5
    with torch.autocast("cpu", dtype=amp_dtype):
        expected = F.conv2d(x, a.c1.weight, a.c1.bias, 2, 1)
        assert rel_err(b.c1(x), expected) <= 1e-2


@pytest.mark.parametrize("batched", [False, True])
def test_two_forwards_then_backward_with_buffer_rewrite(batched):
    """D(real), D(fake), then buffers rewritten in place (what DDP's broadcast_buffers does before the
    second forward), then one backward: no 'modified by an inplace operation' (pytorch 22095)."""
    D = fg_critic(batched)
    y = torch.randint(0, 3, (2,))
    out_real = D(torch.randn(2, 3, 8, 8), y)
    with torch.no_grad():
        for buf in D.buffers():
            buf.copy_(buf.flip(0))
    out_fake = D(torch.randn(2, 3, 8, 8), y)
    (out_fake.mean() - out_real.mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())


@pytest.mark.parametrize("batched", [False, True])
def test_torch_compile_fullgraph(batched):
    D = fg_critic(batched, backend="cpu")
    torch.manual_seed(0)
    D_ref = Critic()
    torch_sn_all(D_ref)
    D_ref.load_state_dict(D.state_dict())
    compiled = torch.compile(D, fullgraph=True, backend="aot_eager")
    for _ in range(2):
        real, fake, y = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,))
        loss = critic_losses(compiled, real, fake, y)
        loss_ref = critic_losses(D_ref, real, fake, y)
        loss.backward()
        loss_ref.backward()
        assert rel_err(loss, loss_ref) <= 1e-5
        for (n, p), (_, q) in zip(D.named_parameters(), D_ref.named_parameters()):
            assert rel_err(p.grad, q.grad) <= 1e-4, n
        for (n, p), (_, q) in zip(D.named_buffers(), D_ref.named_buffers()):
            assert rel_err(p, q) <= 1e-5, n


# CUDA graph capture: tests/test_cuda_graphs.py (each GPU backend explicitly)


# --------------------------------------------------------------------------------------------
# DDP: a real 2-process gloo run, two forwards before one backward, broadcast_buffers=True
def _ddp_worker(rank, world, port, path):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for batched in (False, True):
            D = fg_critic(batched)
            ddp = torch.nn.parallel.DistributedDataParallel(D, broadcast_buffers=True)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
            for step in range(3):
                real, fake, y = _ddp_batch(step, rank)
                loss = critic_losses(ddp, real, fake, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            torch.save({k: t.detach().clone() for k, t in D.state_dict().items()}, f"{path}.{batched}.{rank}")
    finally:
        leave_process_group()


def _ddp_batch(step, rank):
    g = torch.Generator().manual_seed(100 * step + rank)
    return (torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g),
            torch.randint(0, 3, (2,), generator=g))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_forwards_broadcast_buffers():
    """Per-layer and batched spectral norm under 2-process gloo DDP (one spawn for both)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state")
        ctx = mp.spawn(_ddp_worker, args=(2, _free_port(), path), nprocs=2, join=False)
        deadline = time.monotonic() + 120
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                pytest.fail("DDP workers did not finish within 120 s")
        states = [torch.load(f"{path}.{batched}.{r}") for batched in (False, True) for r in range(2)]
    # lockstep single-process replay: both replicas see the same weights, so the same power
    # iterations; DDP averages the gradients
    replicas = [fg_critic(False)]
    replicas.append(copy.deepcopy(replicas[0]))
    opts = [torch.optim.SGD(r.parameters(), lr=0.05) for r in replicas]
    for step in range(3):
        for rank, (r, o) in enumerate(zip(replicas, opts)):
            o.zero_grad()
            critic_losses(r, *_ddp_batch(step, rank)).backward()
        for ps in zip(*(r.parameters() for r in replicas)):
            mean = (ps[0].grad + ps[1].grad) / 2
            for p in ps:
                p.grad = mean.clone()
        for o in opts:
            o.step()
    expected = replicas[0].state_dict()
    for i, state in enumerate(states):  # per-layer rank 0, 1; batched rank 0, 1
        assert list(state) == list(expected)
        for k in expected:
            assert rel_err(state[k], expected[k]) <= 1e-5, (i, k)
