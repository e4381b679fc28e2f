"""Property-based test of the argument contract (issue 16): random valid and invalid arguments,
shapes, dtypes, layouts and grad modes for every public function.

* valid input gives the reference's numbers (the ``reference`` backend, or torch for spectral norm
  and clamp for clipping), values and gradients;
* invalid input raises TypeError (wrong type) or ValueError (right type, bad value) whose message
  names the argument;
* when it raises, no tensor, parameter, buffer, generator or global RNG state has changed.

tests/_cases.py draws the cases from seeded generators (hypothesis's API, without the dependency):
the same cases on every CI run; FASTGAN_PROPERTY_RANDOM=1 for fresh ones, FASTGAN_PROPERTY_EXAMPLES
for more.
"""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

import fastgan as fg
from _cases import given, settings, st
from conftest import RTOL, available_backends, rel_err

EXAMPLES = int(os.environ.get("FASTGAN_PROPERTY_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES)
BACKENDS = [b for b in available_backends(include_reference=True) if b != "cuda"]
FLOATS = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# argument -> valid values, and invalid values with the error they must raise
VALID = {
    "target": [0.0, 1.0, 0.5, 2, np.float32(1.5), np.int64(1)],
    "power": [2.0, 1.0, 3, 1.5, np.float64(2.5)],
    "one_sided": [False, True, np.bool_(True)],
    "reduction": ["mean", "sum", "none"],
    "weight": [10.0, 1, 0.0, -2.5, np.float32(3.0)],
    "gamma": [10.0, 1, 0.0, np.float64(5.0)],
    "k": [2.0, 1, np.float32(0.5)],
    "p": [6.0, 2, 1.5],
    "c": [10.0, 1, 0.25],
    "pac": [1, 2, np.int64(2)],
    "return_norms": [False, True],
    "perturbation": ["gaussian", "uniform"],
}
BAD = {
    "target": [("1", TypeError), (None, TypeError), (True, TypeError), (-1.0, ValueError), (math.nan, ValueError)],
    "power": [("2", TypeError), (None, TypeError), (0.0, ValueError), (-1, ValueError), (math.nan, ValueError)],
    "one_sided": [(1, TypeError), ("False", TypeError), (None, TypeError), (0.0, TypeError)],
    "reduction": [("avg", ValueError), (None, TypeError), (1, TypeError)],
    "backend": [("gpu", ValueError), (3, TypeError), ("CPU", ValueError)],
    "weight": [("10", TypeError), (None, TypeError), (False, TypeError), (math.nan, ValueError)],
    "gamma": [("10", TypeError), (None, TypeError), (math.nan, ValueError)],
    "k": [("2", TypeError), (math.nan, ValueError)],
    "p": [("6", TypeError), (0, ValueError), (-6.0, ValueError)],
    "c": [("10", TypeError), (0.0, ValueError), (-1, ValueError)],
    "pac": [(2.0, TypeError), ("2", TypeError), (True, TypeError), (0, ValueError), (-2, ValueError)],
    "return_norms": [(1, TypeError), ("yes", TypeError), (None, TypeError)],
    "generator": [(1, TypeError), ("seed", TypeError)],
    "perturbation": [("laplace", ValueError), (1, TypeError)],
}


# --------------------------------------------------------------------------------------------
# tensors of random shapes, dtypes and layouts
@st.composite
def tensors(draw, batch=None, min_dim=1, dtypes=FLOATS, shape=None):
    if shape is None:
        b = batch if batch is not None else draw(st.integers(1, 5))
        shape = (b, *draw(st.lists(st.integers(1, 4), min_size=min_dim - 1, max_size=3)))
    b = shape[0]
    dtype = draw(st.sampled_from(dtypes))
    layout = draw(st.sampled_from(["contiguous", "transposed", "sliced", "channels_last", "expanded"]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    if layout == "transposed" and len(shape) >= 3:
        t = torch.randn((shape[0], *shape[1:][::-1]), generator=gen).transpose(1, -1)
    elif layout == "sliced":
        t = torch.randn((shape[0], *shape[1:-1], 2 * shape[-1]) if len(shape) > 1 else (2 * b,), generator=gen)
        t = t[..., ::2]
    elif layout == "channels_last" and len(shape) == 4:
        t = torch.randn(shape, generator=gen).contiguous(memory_format=torch.channels_last)
    elif layout == "expanded" and len(shape) >= 2:
        t = torch.randn((shape[0], *shape[1:-1], 1), generator=gen).expand(shape)
    else:
        t = torch.randn(shape, generator=gen)
    return t.to(dtype)


def kwargs_for(draw, names):
    """Keyword arguments: each omitted, valid or (for at most one name) invalid. Returns (kw, bad)."""
    kw, bad = {}, None
    bad_name = draw(st.sampled_from([None, None] + [n for n in names if n in BAD]))
    for n in names:
        if n == bad_name:
            value, exc = draw(st.sampled_from(BAD[n]))
            kw[n] = value
            bad = (n, exc)
        elif n in VALID and draw(st.booleans()):
            kw[n] = draw(st.sampled_from(VALID[n]))
    return kw, bad


def snapshot(*objs):
    """Deep copies of every tensor reachable in objs (tensors, modules, lists), and the RNG state."""
    out = [torch.get_rng_state()]
    for o in objs:
        if isinstance(o, torch.Tensor):
            out.append(o.detach().to_dense().clone() if o.layout != torch.strided else o.detach().clone())
        elif isinstance(o, nn.Module):
            out += [t.detach().clone() for t in o.state_dict().values()]
            out.append(repr(o))
        elif isinstance(o, torch.Generator):
            out.append(o.get_state())
        elif isinstance(o, (list, tuple)):
            out += snapshot(*o)[1:]
    return out


def same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y) or \
                torch.equal(x.isnan(), y.isnan()) and torch.equal(x.nan_to_num(), y.nan_to_num())
        else:
            assert x == y


def expect_error(bad, call, *watched):
    """``call`` raises bad's error naming bad's argument, and nothing in ``watched`` changed."""
    name, exc = bad
    before = snapshot(*watched)
    with pytest.raises(exc) as info:
        call()
    # a subclass is fine (spectral norm raises torch's IndexError and a ValueError in one class), a
    # TypeError for a range problem (or the reverse) is not
    other = ValueError if issubclass(exc, TypeError) else TypeError
    assert not isinstance(info.value, other), info.value
    assert name in str(info.value), (name, str(info.value))
    same(before, snapshot(*watched))


def tol(dtype):
    return max(RTOL[dtype], 1e-10) * 20


# --------------------------------------------------------------------------------------------
# the primitive
@SETTINGS
@given(st.data())
def test_grad_norm_penalty_contract(data):
    draw = data.draw
    g = draw(tensors())
    kw, bad = kwargs_for(draw, ["target", "power", "one_sided", "reduction", "backend"])
    backend = draw(st.sampled_from(BACKENDS))
    if "backend" not in kw:
        kw["backend"] = backend
    requires_grad = draw(st.booleans())
    grad_mode = draw(st.booleans())
    x = g.clone().requires_grad_(requires_grad)
    with torch.set_grad_enabled(grad_mode):
        if bad:
            return expect_error(bad, lambda: fg.grad_norm_penalty(x, **kw), x)
        ours = fg.grad_norm_penalty(x, **kw)
        ref_kw = dict(kw, backend="reference")
        xr = g.clone().requires_grad_(requires_grad)
        ref = fg.grad_norm_penalty(xr, **ref_kw)
    assert ours.dtype == g.dtype and ours.shape == ref.shape
    assert ours.requires_grad == ref.requires_grad == (requires_grad and grad_mode)
    assert rel_err(ours, ref) < tol(g.dtype) or torch.equal(ours.isnan(), ref.isnan())
    if ours.requires_grad:
        w = torch.rand(ours.shape, generator=torch.Generator().manual_seed(0)).to(g.dtype)
        (ours * w).sum().backward()
        (ref * w).sum().backward()
        assert rel_err(x.grad, xr.grad) < tol(g.dtype) * 4


@SETTINGS
@given(st.data())
def test_grad_norm_penalty_bad_tensors(data):
    draw = data.draw
    bad = draw(st.sampled_from([
        (lambda: torch.randn(3, 2).long(), TypeError), (lambda: torch.randn(3, 2) > 0, TypeError),
        (lambda: torch.randn(3, 2, dtype=torch.complex64), TypeError), (lambda: torch.tensor(1.0), ValueError),
        (lambda: torch.randn(0, 3), ValueError), (lambda: torch.randn(3, 2).to_sparse(), TypeError),
        (lambda: [[1.0, 2.0]], TypeError), (lambda: np.ones((3, 2)), TypeError),
    ]))
    backend = draw(st.sampled_from(BACKENDS))
    x = bad[0]()
    expect_error(("grads", bad[1]), lambda: fg.grad_norm_penalty(x, backend=backend),
                 *([x] if isinstance(x, torch.Tensor) else []))


# --------------------------------------------------------------------------------------------
# the regularizers
class Critic(nn.Module):
    """A small nonlinear critic for inputs of any shape and dtype, with a buffer (like BN stats)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w = nn.Parameter(torch.randn(64, 5, generator=g, dtype=torch.float64) / 4)
        self.v = nn.Parameter(torch.randn(5, 1, generator=g, dtype=torch.float64))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        h = x.flatten(1)
        return torch.tanh(h @ self.w[: h.shape[1]].to(x.dtype)) @ self.v.to(x.dtype)


PENALTIES = {
    "gradient_penalty": (lambda D, r, f, **kw: fg.gradient_penalty(D, r, f, **kw),
                         ["weight", "target", "one_sided", "pac", "generator", "return_norms"]),
    "lipschitz_penalty": (lambda D, r, f, **kw: fg.lipschitz_penalty(D, r, f, **kw),
                          ["weight", "target", "pac", "generator", "return_norms"]),
    "dragan_penalty": (lambda D, r, f, **kw: fg.dragan_penalty(D, r, **kw),
                       ["weight", "target", "c", "perturbation", "generator", "return_norms"]),
    "wgan_div_penalty": (lambda D, r, f, **kw: fg.wgan_div_penalty(D, r, f, **kw), ["k", "p", "return_norms"]),
    "r1_penalty": (lambda D, r, f, **kw: fg.r1_penalty(D, r, **kw), ["gamma", "return_norms"]),
    "r2_penalty": (lambda D, r, f, **kw: fg.r2_penalty(D, f, **kw), ["gamma", "return_norms"]),
}


def _loss(out):
    return out[0] if isinstance(out, tuple) else out


@SETTINGS
@given(st.data())
def test_regularizers_contract(data):
    draw = data.draw
    name = draw(st.sampled_from(sorted(PENALTIES)))
    fn, names = PENALTIES[name]
    real = draw(tensors(batch=draw(st.sampled_from([2, 4, 6])), min_dim=2))
    fake = draw(tensors(shape=real.shape, dtypes=[real.dtype]))
    kw, bad = kwargs_for(draw, names)
    if "generator" in names and "generator" not in kw and draw(st.booleans()):
        kw["generator"] = torch.Generator().manual_seed(draw(st.integers(0, 99)))
    backend = draw(st.sampled_from(BACKENDS))
    grad_mode = draw(st.sampled_from(["enabled", "enabled", "enabled", "no_grad"]))
    D = Critic()
    gen = kw.get("generator")
    with fg.use_backend(backend), torch.set_grad_enabled(grad_mode == "enabled"):
        if grad_mode == "no_grad":  # raised before any argument is looked at: nothing drawn
            before = snapshot(D, real, fake, gen)
            with pytest.raises(RuntimeError, match=f"{name}.*gradient computation disabled"):
                fn(D, real, fake, **kw)
            return same(before, snapshot(D, real, fake, gen))
        if bad is None and "pac" in kw and real.shape[0] % int(kw["pac"]):
            bad = ("pac", ValueError)
        if bad:
            return expect_error(bad, lambda: fn(D, real, fake, **kw), D, real, fake, gen)
        rng = torch.get_rng_state()
        gen_state = gen.get_state() if gen is not None else None
        ours = fn(D, real, fake, **kw)
    torch.set_rng_state(rng)
    if gen is not None:
        gen.set_state(gen_state)
    with fg.use_backend("reference"):
        ref = fn(D, real, fake, **kw)
    assert isinstance(ours, tuple) == isinstance(ref, tuple) == bool(kw.get("return_norms", False))
    lo, lr = _loss(ours), _loss(ref)
    assert lo.dtype == real.dtype and lo.shape == ()
    t = tol(real.dtype)
    assert rel_err(lo, lr) < t
    go = torch.autograd.grad(lo, list(D.parameters()), allow_unused=True, materialize_grads=True)
    gr = torch.autograd.grad(lr, list(D.parameters()), allow_unused=True, materialize_grads=True)
    for a, b in zip(go, gr):
        assert rel_err(a, b) < 4 * t


@SETTINGS
@given(st.data())
def test_regularizers_bad_tensors(data):
    draw = data.draw
    name = draw(st.sampled_from(sorted(PENALTIES)))
    fn = PENALTIES[name][0]
    real = torch.randn(4, 3, dtype=torch.float64)
    which = "fake" if name == "r2_penalty" else "real"
    bad_t, exc = draw(st.sampled_from([
        (torch.ones(4, 3, dtype=torch.long), TypeError), (torch.ones(4, 3).to_sparse(), TypeError),
        (torch.tensor(1.0, dtype=torch.float64), ValueError), (torch.ones(0, 3, dtype=torch.float64), ValueError),
        ([[0.0] * 3] * 4, TypeError)]))
    args = (bad_t, real) if which == "real" else (real, bad_t)
    D = Critic()
    expect_error((which, exc), lambda: fn(D, *args), D, real)
    if name in ("gradient_penalty", "lipschitz_penalty", "wgan_div_penalty"):
        other = draw(st.sampled_from([real[:3], real.float(), real.unsqueeze(1)]))
        expect_error(("real and fake", ValueError), lambda: fn(D, real, other), D, real)


# --------------------------------------------------------------------------------------------
# spectral norm
SN_BAD = {
    "n_power_iterations": [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("1", TypeError), (True, TypeError)],
    "eps": [(0.0, ValueError), (-1e-3, ValueError), (math.nan, ValueError), (math.inf, ValueError),
            ("1e-12", TypeError), (None, TypeError)],
    "dim": [(1.0, TypeError), ("0", TypeError), (5, ValueError), (-5, ValueError)],
    "backend": BAD["backend"],
    "name": [("nope", ValueError), (3, TypeError)],
}
SN_LAYERS = [lambda: nn.Linear(5, 3), lambda: nn.Conv2d(2, 3, 3), lambda: nn.ConvTranspose2d(3, 2, 2),
             lambda: nn.Conv1d(2, 4, 2)]
SN_INPUTS = [(2, 5), (2, 2, 5, 5), (2, 3, 3, 3), (2, 2, 6)]


@SETTINGS
@given(st.data())
def test_spectral_norm_contract(data):
    draw = data.draw
    i = draw(st.integers(0, len(SN_LAYERS) - 1))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    batched = draw(st.booleans())
    names = ["n_power_iterations", "eps", "backend"] + ([] if batched else ["dim", "name"])
    bad_name = draw(st.sampled_from([None] + names))
    kw = {}
    for n in names:
        if n == bad_name:
            value, exc = draw(st.sampled_from(SN_BAD[n]))
            kw[n] = value
        elif n == "n_power_iterations" and draw(st.booleans()):
            kw[n] = draw(st.sampled_from([1, 2, np.int64(3)]))
        elif n == "eps" and draw(st.booleans()):
            kw[n] = draw(st.sampled_from([1e-12, 1e-6, np.float32(1e-8), 1]))
        elif n == "backend" and draw(st.booleans()):
            kw[n] = draw(st.sampled_from(BACKENDS))
    torch.manual_seed(0)
    layer = SN_LAYERS[i]().to(dtype)
    model = nn.Sequential(layer, nn.Tanh())
    if bad_name:
        call = (lambda: fg.apply_spectral_norm(model, **kw)) if batched else (lambda: fg.spectral_norm(layer, **kw))
        expect_error((bad_name, exc), call, model)
        assert not parametrize.is_parametrized(layer) and not model._forward_pre_hooks
        return
    theirs = SN_LAYERS[i]().to(dtype)
    theirs.load_state_dict(layer.state_dict())
    torch.manual_seed(1)
    if batched:
        fg.apply_spectral_norm(model, **kw)
    else:
        fg.spectral_norm(layer, **kw)
    torch.manual_seed(1)
    tkw = {k: v for k, v in kw.items() if k in ("n_power_iterations", "eps", "dim", "name")}
    tkw = {k: (float(v) if k == "eps" else v) for k, v in tkw.items()}
    torch.nn.utils.parametrizations.spectral_norm(theirs, **tkw)
    x = torch.randn(SN_INPUTS[i], dtype=dtype)
    for _ in range(2):
        assert rel_err(model(x), torch.tanh(theirs(x))) < (1e-10 if dtype == torch.float64 else 1e-4)


# --------------------------------------------------------------------------------------------
# clipping, noise, losses, backend selection
CLIP_BAD = [("0.1", TypeError), (None, TypeError), (0, ValueError), (-0.1, ValueError), (math.nan, ValueError),
            ((0.1, -0.1), ValueError), ((0.1,), ValueError), ((0, 1, 2), ValueError), (("a", 1.0), TypeError),
            (True, TypeError)]


@SETTINGS
@given(st.data())
def test_clip_weights_contract(data):
    draw = data.draw
    ts = [draw(tensors()).clone() if draw(st.booleans()) else draw(tensors()) for _ in range(draw(st.integers(1, 4)))]
    ts = [t.clone() if t.stride(-1) == 0 else t for t in ts]  # an expanded tensor cannot be clamped in place
    backend = draw(st.sampled_from(BACKENDS))
    kind = draw(st.sampled_from(["valid", "bad_value", "bad_item", "bad_backend"]))
    if kind == "bad_value":
        value, exc = draw(st.sampled_from(CLIP_BAD))
        return expect_error(("clip_value", exc), lambda: fg.clip_weights_(ts, value, backend=backend), ts)
    if kind == "bad_item":
        at = draw(st.integers(0, len(ts)))
        item = draw(st.sampled_from([torch.ones(3, dtype=torch.long), 1.0, "w"]))
        bad_list = ts[:at] + [item] + ts[at:]
        return expect_error((f"parameters[{at}]", TypeError), lambda: fg.clip_weights_(bad_list, 0.1, backend=backend),
                            ts)
    if kind == "bad_backend":
        value, exc = draw(st.sampled_from(BAD["backend"]))
        return expect_error(("backend", exc), lambda: fg.clip_weights_(ts, 0.1, backend=value), ts)
    c = draw(st.sampled_from([0.01, 0.5, (-0.2, 0.1), (0, 1), np.float32(0.3)]))
    lo, hi = (c if isinstance(c, tuple) else (-float(c), float(c)))
    want = [t.clamp(lo, hi) for t in ts]
    fg.clip_weights_(ts, c, backend=backend)
    for t, w in zip(ts, want):
        assert torch.equal(t, w)


@SETTINGS
@given(st.data())
def test_small_functions_contract(data):
    draw = data.draw
    which = draw(st.sampled_from(["instance_noise", "anneal_std", "losses", "set_backend", "use_backend"]))
    if which == "instance_noise":
        x = draw(tensors())
        value, exc = draw(st.sampled_from([("0.1", TypeError), (-1.0, ValueError), (math.inf, ValueError),
                                           (None, TypeError), (math.nan, ValueError)]))
        expect_error(("std", exc), lambda: fg.instance_noise(x, value), x)
        gen = torch.Generator().manual_seed(0)
        expect_error(("generator", TypeError), lambda: fg.instance_noise(x, 0.1, generator=7), x, gen)
        std = draw(st.sampled_from([0, 0.5, np.float64(1.0)]))
        out = fg.instance_noise(x, std, generator=torch.Generator().manual_seed(5))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
        assert torch.equal(out, x + float(std) * noise) if std else out is x
    elif which == "anneal_std":
        args = [3, 10, 1.0, 0.0, "linear"]
        names = ["step", "total_steps", "start", "end", "kind"]
        bad = {0: [(-1, ValueError), (1.5, TypeError), (True, TypeError)], 1: [(0, ValueError), ("10", TypeError)],
               2: [(-1.0, ValueError), ("1", TypeError)], 3: [(-0.5, ValueError), (None, TypeError)],
               4: [("exp", ValueError), (None, TypeError)]}
        i = draw(st.integers(0, 4))
        args[i], exc = draw(st.sampled_from(bad[i]))
        expect_error((names[i], exc), lambda: fg.anneal_std(*args))
        assert fg.anneal_std(np.int64(3), 10, 1.0) == pytest.approx(0.7)
    elif which == "losses":
        name = draw(st.sampled_from(sorted(fg.losses.LOSSES)))
        d_loss, g_loss = fg.losses.LOSSES[name]
        good = draw(tensors())
        bad_t, exc = draw(st.sampled_from([(torch.ones(3, dtype=torch.long), TypeError), ([1.0], TypeError),
                                           (torch.tensor(1.0), ValueError)]))
        expect_error(("fake_scores", exc), lambda: g_loss(bad_t))
        expect_error(("real_scores", exc), lambda: d_loss(bad_t, good), good)
    else:
        value, exc = draw(st.sampled_from(BAD["backend"] + [(None, TypeError)]))
        before = fg.get_backend()
        if which == "set_backend":
            expect_error(("backend", exc), lambda: fg.set_backend(value))
        else:
            expect_error(("backend", exc), lambda: fg.use_backend(value).__enter__())
        assert fg.get_backend() == before
