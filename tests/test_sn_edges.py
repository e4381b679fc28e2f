"""Edge cases of spectral normalization, written to catch the bugs a kernel author writes
(tests/mutation lists them): zero and tiny weights (eps in both normalizations), shapes on both
sides of every vector width, 4-row unroll, column block and row chunk of the CPU sweep, every dim,
and per-layer train/eval mixes inside one model (batched hook and per layer) against torch.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import available_backends, rel_err
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_sn

import fastgan as fg
from fastgan import reference
from fastgan.ops import spectral as sn_ops

KERNELS = [b for b in ("cpu", "triton") if b in available_backends()]
BACKENDS = ["reference"] + KERNELS


def unit(n, dtype, gen):
    return F.normalize(torch.randn(n, generator=gen, dtype=torch.float64), dim=0).to(dtype)


def power_vs_float64(backend, ws, dims, n_iter, eps, gen, rtol):
    """sn_power of `backend` against the float64 power iteration written out here."""
    mats = [reference.sn_weight_matrix(w, d) for w, d in zip(ws, dims)]
    us = [unit(m.shape[0], w.dtype, gen) for m, w in zip(mats, ws)]
    vs = [unit(m.shape[1], w.dtype, gen) for m, w in zip(mats, ws)]
    s, u, v = sn_ops.power(backend, ws, us, vs, dims, n_iter, eps)
    for k, (m, u0, v0) in enumerate(zip(mats, us, vs)):
        m64, uu, vv = m.double(), u0.double(), v0.double()
        for _ in range(n_iter):
            t = m64 @ vv
            uu = t / max(float(t.norm()), eps)
            t = m64.T @ uu
            vv = t / max(float(t.norm()), eps)
        sig = uu @ (m64 @ vv)
        what = f"layer {k} {tuple(ws[k].shape)} dim {dims[k]} n_iter {n_iter}"
        torch.testing.assert_close(u[k].double(), uu, rtol=rtol, atol=rtol * float(uu.abs().max()), msg=lambda x: f"{what} u: {x}")
        torch.testing.assert_close(v[k].double(), vv, rtol=rtol, atol=rtol * float(vv.abs().max()), msg=lambda x: f"{what} v: {x}")
        # sigma of a tiny weight underflows in float32 (|s|^2 ~ 1e-56): compare it absolutely there
        torch.testing.assert_close(s[k].double(), sig, rtol=rtol, atol=1e-30, msg=lambda x: f"{what} sigma: {x}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("scale", [0.0, 1e-14, 1e-20, 1.0])
def test_power_zero_and_tiny_weights(backend, dtype, scale):
    """|W v| and |W^T u| below eps: u = W v / eps and v = W^T u / eps exactly as torch's F.normalize
    (not unit vectors, not NaN); a zero weight gives u = v = 0 and sigma = 0."""
    gen = torch.Generator().manual_seed(0)
    shapes = [((5, 7), 0), ((3, 4, 2, 2), 1)] if backend == "triton" else [((5, 7), 0), ((3, 4, 2, 2), 1), ((9, 33), 0)]
    ws = [(torch.randn(s, generator=gen, dtype=torch.float64) * scale).to(dtype) for s, _ in shapes]
    # float32 with 1e-20: each iteration scales by ~1e-20 / eps = 1e-8, so a third underflows float32
    for n_iter in ((1,) if (dtype, scale) == (torch.float32, 1e-20) else (1, 3)):
        power_vs_float64(backend, ws, [d for _, d in shapes], n_iter, 1e-12, gen, 1e-5 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_weight_layer_matches_torch(backend):
    """A zero Linear weight (dead layer) through registration (15 iterations) and two training
    forwards: u, v equal torch's (zeros), W / sigma is 0/0 = NaN in both, batched and per layer."""
    for batched in (False, True):
        torch.manual_seed(0)
        a = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3)).double()
        with torch.no_grad():
            a[0].weight.zero_()
        b = copy.deepcopy(a)
        torch.manual_seed(1)
        for m in a:
            torch_sn(m)
        torch.manual_seed(1)
        if batched:
            fg.apply_spectral_norm(b, backend=backend)
        else:
            for m in b:
                fg.spectral_norm(m, backend=backend)
        x = torch.randn(4, 6, dtype=torch.float64)
        for _ in range(2):
            torch.testing.assert_close(b(x), a(x), equal_nan=True)
            for (na, xa), (nb, xb) in zip(a.named_buffers(), b.named_buffers()):
                torch.testing.assert_close(xb, xa, rtol=1e-10, atol=0, msg=lambda m: f"{nb}: {m}")
        assert a[0].parametrizations.weight[0]._u.abs().max() == 0


SWEEP_SHAPES = [
    # (shape, dim): dot tails (K = 1, 7, 9, 31, 33 around widths 4/8/16/32), h % 4 = 1, 2, 3 (axpy4
    # remainder), K > 512 (column blocks of the sweep), h * w > 131072 (several row chunks), dim 1, 2
    ((5, 1), 0), ((6, 7), 0), ((7, 9), 0), ((9, 31), 0), ((10, 33), 0), ((3, 5, 3, 3), 1), ((4, 6, 2, 3), 2),
    ((11, 515), 0), ((300, 1001), 0), ((2, 133, 3, 3, 2), 1),
]


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_power_shapes_around_widths_blocks_and_chunks(backend, dtype):
    gen = torch.Generator().manual_seed(1)
    shapes = SWEEP_SHAPES if backend == "cpu" else SWEEP_SHAPES[:7]
    ws = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s, _ in shapes]
    for n_iter in (0, 1, 2):
        power_vs_float64(backend, ws, [d for _, d in shapes], n_iter, 1e-12, gen, 1e-4 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_normalize_and_backward_odd_sizes(backend, dtype):
    """W / sigma and its gradient at sizes around the vector widths, above the parallel grain (32768
    elements: thread ranges start at odd offsets) and for every dim, against float64 autograd."""
    gen = torch.Generator().manual_seed(2)
    shapes = [((3, 5), 0), ((7, 9), 0), ((6, 33), 0), ((3, 5, 3, 3), 1), ((2, 3, 4, 5), 3)]
    if backend == "cpu":
        shapes += [((181, 183), 0), ((5, 13, 507), 1)]
    tol = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    for shape, dim in shapes:
        w = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        m = reference.sn_weight_matrix(w, dim)
        u, v = unit(m.shape[0], torch.float64, gen), unit(m.shape[1], torch.float64, gen)
        w64 = w.double().requires_grad_(True)
        sigma64 = u @ (reference.sn_weight_matrix(w64, dim) @ v)
        out64 = w64 / sigma64
        g = torch.randn(shape, generator=gen, dtype=torch.float64)
        (gw64,) = torch.autograd.grad(out64, w64, g)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        x = w.detach().requires_grad_(True)
        out = sn_ops.normalize(backend, x, u.to(dtype), v.to(dtype), sigma64.detach().to(acc), dim)
        (gw,) = torch.autograd.grad(out, x, g.to(dtype))
        what = f"{tuple(shape)} dim {dim}"
        torch.testing.assert_close(out.double(), out64.detach().to(dtype).double(), rtol=tol, atol=0,
                                   msg=lambda s: f"{what} W/sigma: {s}")
        # the gradient has cancellation (g/sigma - <g,W>/sigma^2 u v^T): compare relative to its max
        assert rel_err(gw, gw64) <= (4 * tol if dtype in (torch.float64, torch.float32) else 8 * tol), what


# --------------------------------------------------------------------------------------------
# per-layer train/eval mixes
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(9, 11)
        self.b = nn.Conv1d(1, 3, 3)
        self.c = nn.Linear(3 * 9, 4)

    def forward(self, x):
        h = F.leaky_relu(self.a(x), 0.2)[:, None, :]
        h = F.leaky_relu(self.b(h), 0.2).flatten(1)
        return self.c(h)


def twins(backend, batched):
    torch.manual_seed(0)
    a = Net().double()
    b = copy.deepcopy(a)
    torch.manual_seed(1)
    for m in (a.a, a.b, a.c):
        torch_sn(m)
    torch.manual_seed(1)
    if batched:
        fg.apply_spectral_norm(b, backend=backend)
    else:
        for m in (b.a, b.b, b.c):
            fg.spectral_norm(m, backend=backend)
    return a, b


MIXES = {
    "train_one_eval": lambda net: (net.train(), net.b.eval()),
    "eval_one_train": lambda net: (net.eval(), net.c.train()),
    "train_two_eval": lambda net: (net.train(), net.a.eval(), net.c.eval()),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per_layer"])
@pytest.mark.parametrize("mix", list(MIXES))
def test_per_layer_train_eval_mix_matches_torch(backend, batched, mix):
    """A layer in eval mode inside a training model (and the reverse): torch iterates each layer
    by ITS OWN mode, so the eval layers' u, v stay put while the others advance; the outputs and
    every buffer equal torch's after each of three forwards."""
    a, b = twins(backend, batched)
    MIXES[mix](a)
    MIXES[mix](b)
    frozen = {n: x.clone() for n, x in b.named_buffers()}
    gen = torch.Generator().manual_seed(3)
    for step in range(3):
        x = torch.randn(5, 9, generator=gen, dtype=torch.float64)
        ya, yb = a(x), b(x)
        assert rel_err(yb, ya) <= 1e-10, (mix, step)
        for (na, xa), (nb, xb) in zip(a.named_buffers(), b.named_buffers()):
            assert na == nb
            assert rel_err(xb, xa) <= 1e-10, (mix, step, nb)
    # an eval layer's buffers did not move at all
    for (n, x), layer in zip(b.named_buffers(), [b.a, b.a, b.b, b.b, b.c, b.c]):
        if not layer.training:
            assert torch.equal(x, frozen[n]), (mix, n)
