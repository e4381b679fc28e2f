"""csrc/cuda/spectral_norm.cu, emulated on the CPU, against the float64 reference (as
tests/test_spectral_norm.py)."""
import pytest
import torch
import torch.nn.functional as F

from conftest import rel_err
from fastgan import reference
from test_spectral_norm import POWER_CASES, random_weight

TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def unit(n, dtype, gen=None):
    return F.normalize(torch.randn(n, dtype=torch.float64, generator=gen), dim=0).to(dtype)


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
def test_power_and_normalize_against_reference(emu, dtype):
    tol = TOL[dtype]
    torch.manual_seed(0)
    ws = [random_weight(s, dtype, lay) for s, _, lay in POWER_CASES]
    dims = [d for _, d, _ in POWER_CASES]
    mats = [reference.sn_weight_matrix(w, d) for w, d in zip(ws, dims)]
    us = [unit(m.shape[0], dtype) for m in mats]
    vs = [unit(m.shape[1], dtype) for m in mats]
    before = [t.clone() for t in us + vs]
    for n_iter in (0, 1, 3):
        s_ref, u_ref, v_ref = reference.sn_power([w.double() for w in ws], [u.double() for u in us],
                                                 [v.double() for v in vs], dims, n_iter, 1e-12)
        s, u, v = emu.sn_power(ws, us, vs, dims, n_iter, 1e-12)
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
        wk = w.detach().requires_grad_()
        out = emu.sn_normalize(wk, u.to(dtype), v.to(dtype), sk.to(s[0].dtype), d)
        assert out.dtype == dtype and out.shape == w.shape
        assert rel_err(out, out_ref) <= tol
        (gw,) = torch.autograd.grad(out, wk, g.to(dtype))
        assert rel_err(gw, gw_ref) <= 4 * tol


def test_more_layers_than_one_launch_and_mixed_dtypes(emu):
    """35 layers of float32 (32 per launch: two launches) and 3 of float64 (their own group)."""
    gen = torch.Generator().manual_seed(3)
    ws, dims = [], []
    for k in range(38):
        shape = [(3, 5), (4, 2, 3), (6, 1), (2, 7, 2, 1)][k % 4]
        ws.append(torch.randn(shape, generator=gen, dtype=torch.float64).to(torch.float64 if k % 13 == 5 else torch.float32))
        dims.append(k % 2 if len(shape) > 2 else 0)
    mats = [reference.sn_weight_matrix(w, d) for w, d in zip(ws, dims)]
    us = [unit(m.shape[0], w.dtype, gen) for m, w in zip(mats, ws)]
    vs = [unit(m.shape[1], w.dtype, gen) for m, w in zip(mats, ws)]
    s_ref, u_ref, v_ref = reference.sn_power([w.double() for w in ws], [u.double() for u in us],
                                             [v.double() for v in vs], dims, 2, 1e-12)
    s, u, v = emu.sn_power(ws, us, vs, dims, 2, 1e-12)
    for k, w in enumerate(ws):
        tol = TOL[w.dtype]
        assert rel_err(s[k], s_ref[k]) <= tol and rel_err(u[k], u_ref[k]) <= tol and rel_err(v[k], v_ref[k]) <= tol, k


def test_long_rows_and_columns(emu):
    """h and cols above the block size (512 threads, 16 warps): every loop strides more than once."""
    torch.manual_seed(5)
    for shape, dim in [((600, 3), 0), ((2, 700), 0), ((3, 530, 2), 1)]:
        w = torch.randn(shape, dtype=torch.float64)
        m = reference.sn_weight_matrix(w, dim)
        u, v = unit(m.shape[0], torch.float64), unit(m.shape[1], torch.float64)
        s_ref, u_ref, v_ref = reference.sn_power([w], [u], [v], [dim], 2, 1e-12)
        s, uo, vo = emu.sn_power([w], [u], [v], [dim], 2, 1e-12)
        assert rel_err(s[0], s_ref[0]) <= 1e-12 and rel_err(uo[0], u_ref[0]) <= 1e-12
        assert rel_err(vo[0], v_ref[0]) <= 1e-12


def test_zero_and_nan_weights(emu):
    """A zero weight (|W v| < eps: u, v divided by eps, sigma 0) and a NaN propagating to sigma."""
    z = torch.zeros(4, 6, dtype=torch.float64)
    u, v = unit(4, torch.float64), unit(6, torch.float64)
    s_ref, u_ref, v_ref = reference.sn_power([z], [u], [v], [0], 1, 1e-12)
    s, uo, vo = emu.sn_power([z], [u], [v], [0], 1, 1e-12)
    assert float(s[0]) == float(s_ref[0]) == 0.0
    assert torch.equal(uo[0], u_ref[0]) and torch.equal(vo[0], v_ref[0])
    w = torch.randn(4, 6, dtype=torch.float64)
    w[2, 3] = float("nan")
    s, _, _ = emu.sn_power([w], [u], [v], [0], 1, 1e-12)
    assert torch.isnan(s[0])
    out = emu.sn_normalize(w, u, v, torch.tensor(2.0, dtype=torch.float64), 0)
    assert torch.isnan(out[2, 3]) and torch.isfinite(out[0]).all()


def test_normalize_many_partials(emu):
    """sn_normalize_backward with n above one chunk: several partial sums of <g, W>, added in a
    fixed order by every block of the second kernel."""
    torch.manual_seed(2)
    w = torch.randn(64, 3, 7, 7, dtype=torch.float64, requires_grad=True)  # 9408 elements: 10 partials
    m = reference.sn_weight_matrix(w.detach(), 0)
    u, v = unit(m.shape[0], torch.float64), unit(m.shape[1], torch.float64)
    sigma = torch.vdot(u, m @ v)
    out = emu.sn_normalize(w, u, v, sigma, 0)
    g = torch.randn(w.shape, dtype=torch.float64)
    (gw,) = torch.autograd.grad(out, w, g)
    wr = w.detach().clone().requires_grad_()
    (gr,) = torch.autograd.grad(reference.sn_normalize(wr, u, v, 0), wr, g)
    assert rel_err(out, reference.sn_normalize(w.detach(), u, v, 0)) <= 1e-12
    assert rel_err(gw, gr) <= 1e-11


@pytest.mark.parametrize("shape, dim", [((5, 4), 0), ((3, 4, 2, 2), 1)])
def test_normalize_gradcheck(emu, shape, dim):
    """The fused backward is d(W / sigma(W))/dW with sigma(W) = u^T W_mat v recomputed from W."""
    torch.manual_seed(0)
    w = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    mat = reference.sn_weight_matrix(w.detach(), dim)
    u, v = unit(mat.shape[0], torch.float64), unit(mat.shape[1], torch.float64)

    def f(w):
        sigma = torch.vdot(u, reference.sn_weight_matrix(w, dim).detach() @ v)
        return emu.sn_normalize(w, u, v, sigma, dim)

    assert torch.autograd.gradcheck(f, (w,))
