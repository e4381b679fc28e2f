"""Edge cases of csrc/cuda, emulated on the CPU, written to catch the kernel bugs that
tests/mutation lists for csrc/cuda (as tests/test_kernel_edges.py does for csrc/cpu): half-precision
values whose squares or products under/overflow in half (the accumulation must be in float), and
every reduction x one/two-sided x norms on both sides of the target, forward and backward.
Every result is compared by value with a float64 computation (tests/test_kernel_edges.py's)."""
import pytest
import torch

from fastgan import reference
from test_kernel_edges import CFGS, NORMS, close_rows, coef64, half_rows, rows_with_norms, strided_views, truth

from .test_emu_spectral_norm import unit

# gnp_partial's vector width for 2-byte types (16-byte packs) and one block-wide step (256 threads)
HALF_VEC, HALF_STEP = 8, 256 * 8


def forward_and_grad(emu, g, cfg, w):
    x = g.detach().requires_grad_(True)
    phi, norms = emu.gnp_forward(x, *(float(c) for c in cfg[:2]), bool(cfg[2]))
    (gx,) = torch.autograd.grad((phi * w.to(phi.dtype)).sum(), x)
    return phi.detach(), norms, gx


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_squares_accumulate_in_float(emu, dtype):
    """Rows of 1e-4 (square underflows float16), 300 (overflows it) and 1 + 3/256 (square not
    representable in bfloat16): norms accurate to float32, on the vector path (length a multiple of
    8) and the scalar path, below, at and above one block's step (rows split across blocks)."""
    gen = torch.Generator().manual_seed(21)
    for n in (7, HALF_VEC, HALF_VEC + 1, HALF_STEP - 1, HALF_STEP, 2 * HALF_STEP + HALF_VEC):
        g = half_rows(n, dtype, gen)
        w = torch.rand(g.shape[0], generator=gen, dtype=torch.float64) + 0.5
        for cfg in ((0.0, 2.0, False), (1.0, 2.0, False)):
            phi, norms, gx = forward_and_grad(emu, g, cfg, w)
            n_ref, phi_ref = truth(g, *cfg)
            close_rows(norms, n_ref, 2e-6, f"n={n} {cfg} norms")
            close_rows(phi, phi_ref, 8e-6, f"n={n} {cfg} phi")
            want = (coef64(n_ref, w, *cfg)[:, None] * g.double()).to(dtype)
            close_rows(gx, want, 1e-3 if dtype == torch.float16 else 8e-3, f"n={n} {cfg} grad")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_every_side_and_target(emu, dtype):
    """phi and d(sum w phi)/dg per row against float64, one- and two-sided, powers 1/2/3/6, a zero
    row and norms below AND above the target in one batch, each row with its own upstream weight:
    one-sided rows below the target have phi = 0 and exactly zero gradient (the flag must reach
    the forward and the backward kernel), every row reads its own upstream gradient."""
    gen = torch.Generator().manual_seed(22)
    g = rows_with_norms(NORMS, 37, dtype, gen)
    w = torch.rand(len(NORMS), generator=gen, dtype=torch.float64) + 0.5
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for cfg in CFGS:
        phi, norms, gx = forward_and_grad(emu, g, cfg, w)
        n_ref, phi_ref = truth(g, *cfg)
        close_rows(norms, n_ref, tol, f"{cfg} norms")
        close_rows(phi, phi_ref, tol, f"{cfg} phi")
        close_rows(gx, (coef64(n_ref, w, *cfg)[:, None] * g.double()).to(dtype), tol, f"{cfg} grad")
        if cfg[2]:
            below = [i for i, v in enumerate(NORMS) if v < cfg[0]]
            assert (gx[below] == 0).all() and (phi[below] == 0).all(), cfg


def test_sn_backward_half_products_accumulate_in_float(emu):
    """sn_normalize's backward in float16 with weights and gradients around 1e-4: every product
    g_i * w_i (~1e-8) underflows float16, so <g, W> must be accumulated in float. g = W makes the
    <g, W> u v^T term as large as g / sigma."""
    gen = torch.Generator().manual_seed(23)
    for shape, dim in (((6, 10), 0), ((3, 4, 2, 5), 1)):
        w = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3e-4).to(torch.float16)
        w64 = w.double()
        mat = reference.sn_weight_matrix(w64, dim)
        u = unit(mat.shape[0], torch.float64, gen).to(torch.float16)
        v = unit(mat.shape[1], torch.float64, gen).to(torch.float16)
        sigma = torch.vdot(u.double(), mat @ v.double())
        x = w.detach().clone().requires_grad_(True)
        out = emu.sn_normalize(x, u, v, sigma.float(), dim)
        (gx,) = torch.autograd.grad(out, x, w)
        xr = w64.clone().requires_grad_(True)
        (gr,) = torch.autograd.grad(reference.sn_normalize(xr, u.double(), v.double(), dim), xr, w64)
        torch.testing.assert_close(gx.double(), gr, rtol=4e-3, atol=4e-3 * float(gr.abs().max()),
                                   msg=lambda m: f"{shape} dim {dim}: {m}")


def emu_strided_views(dtype, gen):
    """Views of a leaf whose rows are read in place (dense rows, row stride != row length) or
    copied: 105 elements per row (scalar path) and 32 (vector path for every dtype: 16-byte
    aligned rows, row stride a multiple of the vector width)."""
    yield from strided_views(dtype, gen)
    base = torch.randn(9, 4, 8, generator=gen, dtype=torch.float64).to(dtype)
    yield "batch_slice_vector", base, lambda b: b[1::2]
    yield "narrow_vector", base, lambda b: b.narrow(0, 4, 5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_strided_views_by_value(emu, dtype):
    """gnp_forward / backward on a VIEW of a leaf (no clone first: the kernels see the view's own
    row stride): norms and phi per row, and the gradient reaching the leaf element by element
    (c_r g_r in the view, 0 elsewhere). Reading rows packed, or writing the packed gradient with
    the input's row stride, gives wrong rows."""
    gen = torch.Generator().manual_seed(24)
    tol = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 1e-3}[dtype]
    for name, base, view in emu_strided_views(dtype, gen):
        leaf = base.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        g = view(leaf)
        w = torch.rand(g.shape[0], generator=gen, dtype=torch.float64) + 0.5
        phi, norms = emu.gnp_forward(g, 1.0, 2.0, False)
        (phi * w.to(phi.dtype)).sum().backward()
        n_ref, phi_ref = truth(g, 1.0, 2.0, False)
        close_rows(norms, n_ref, max(tol, 2e-6), f"{name} norms")
        close_rows(phi, phi_ref, max(tol, 8e-6), f"{name} phi")
        want = torch.zeros(base.shape, dtype=torch.float64)
        view(want).copy_(coef64(n_ref, w, 1.0, 2.0, False).view(-1, *[1] * (g.dim() - 1)) * g.detach().double())
        close_rows(leaf.grad, want.to(dtype), tol, f"{name} grad")
