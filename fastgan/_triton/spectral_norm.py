"""Triton kernels of spectral normalization.

``_power``: the whole power iteration of one weight in one program (W v, normalize, W^T u,
normalize, sigma = |s|^2 / max(|s|, eps) with s = W^T u), one launch per layer. W_mat is addressed
in place for any dim (see csrc/sn_layout.h): W_mat[i, a*K + k] = W[a*H*K + i*K + k].
``_scale``: W / sigma. Backward: ``_dot_partial`` (grid of chunks) then ``_normalize_bwd``, which
adds the partials in a fixed order and writes dW = g / sigma - <g, W> / sigma^2 * u v^T.

One launch per layer, not one for the model: batching layers in one launch needs a table of
pointers loaded from memory, which the interpreter (the only place these kernels can run in CI)
does not support. Wrapped in ``torch.library.custom_op`` (fake kernels and autograd from
fastgan.ops.spectral.register); on CPU tensors they run only under TRITON_INTERPRET=1.
"""
import torch
import torch._prims_common
import triton
import triton.language as tl

from .._layout import acc_dtype
from ._launch import f64, f64_bits, launch

BLOCK_H = 32  # rows of W_mat per tile of the power iteration
BLOCK_W = 64  # columns of W_mat per tile
BLOCK = 1024  # elements per program of the elementwise kernels
DOT_PARTS = 256  # most programs of the <g, W> reduction


def _mat(w, dim):
    a = 1
    for s in w.shape[:dim]:
        a *= s
    k = 1
    for s in w.shape[dim + 1:]:
        k *= s
    return a, w.shape[dim], k


@triton.jit
def _w_tile(w_ptr, rows, cols, H, K, WC):
    a = cols // K
    idx = (a[None, :].to(tl.int64) * H + rows[:, None]) * K + (cols - a * K)[None, :]
    mask = (rows[:, None] < H) & (cols[None, :] < WC)
    return tl.load(w_ptr + idx, mask=mask, other=0.0), mask


@triton.jit
def _rows_mv(w_ptr, v_ptr, rows, H, K, WC, BW: tl.constexpr, ACC: tl.constexpr):
    """(W_mat v)[rows]"""
    t = tl.zeros(rows.shape, dtype=ACC)
    for j0 in range(0, WC, BW):
        cols = j0 + tl.arange(0, BW)
        w, _ = _w_tile(w_ptr, rows, cols, H, K, WC)
        v = tl.load(v_ptr + cols, mask=cols < WC, other=0.0)
        t += tl.sum(w.to(ACC) * v[None, :], axis=1)
    return t


@triton.jit(do_not_specialize=["eps_bits"])
def _power(w_ptr, u_ptr, v_ptr, sigma_ptr, H, K, WC, n_iter, eps_bits: tl.int64,
           BH: tl.constexpr, BW: tl.constexpr, ACC: tl.constexpr):
    # u_ptr, v_ptr: working copies in the accumulation dtype, updated in place
    eps = f64(eps_bits, ACC)
    if n_iter == 0:
        acc = tl.zeros((BH,), dtype=ACC)
        for i0 in range(0, H, BH):
            rows = i0 + tl.arange(0, BH)
            t = _rows_mv(w_ptr, v_ptr, rows, H, K, WC, BW, ACC)
            acc += t * tl.load(u_ptr + rows, mask=rows < H, other=0.0)
        tl.store(sigma_ptr, tl.sum(acc, axis=0))
    # the loop variable must not be `_`: `w, _ = _w_tile(...)` below would reassign it, which the
    # interpreter accepts and Triton's compiler rejects (a loop-carried int32 re-assigned a mask)
    for _it in range(n_iter):
        # u <- W v / max(|W v|, eps)
        ss = tl.zeros((BH,), dtype=ACC)
        for i0 in range(0, H, BH):
            rows = i0 + tl.arange(0, BH)
            t = _rows_mv(w_ptr, v_ptr, rows, H, K, WC, BW, ACC)
            tl.store(u_ptr + rows, t, mask=rows < H)
            ss += t * t
        d = tl.maximum(tl.sqrt(tl.sum(ss, axis=0)), eps)
        tl.debug_barrier()
        for i0 in range(0, H, BH):
            rows = i0 + tl.arange(0, BH)
            tl.store(u_ptr + rows, tl.load(u_ptr + rows, mask=rows < H, other=0.0) / d, mask=rows < H)
        tl.debug_barrier()
        # v <- W^T u / max(|W^T u|, eps); sigma = u^T W v = |s|^2 / max(|s|, eps)
        ss2 = tl.zeros((BW,), dtype=ACC)
        for j0 in range(0, WC, BW):
            cols = j0 + tl.arange(0, BW)
            s = tl.zeros((BW,), dtype=ACC)
            for i0 in range(0, H, BH):
                rows = i0 + tl.arange(0, BH)
                w, _ = _w_tile(w_ptr, rows, cols, H, K, WC)
                u = tl.load(u_ptr + rows, mask=rows < H, other=0.0)
                s += tl.sum(w.to(ACC) * u[:, None], axis=0)
            tl.store(v_ptr + cols, s, mask=cols < WC)
            ss2 += s * s
        sq = tl.sum(ss2, axis=0)
        d2 = tl.maximum(tl.sqrt(sq), eps)
        tl.debug_barrier()
        for j0 in range(0, WC, BW):
            cols = j0 + tl.arange(0, BW)
            tl.store(v_ptr + cols, tl.load(v_ptr + cols, mask=cols < WC, other=0.0) / d2, mask=cols < WC)
        tl.debug_barrier()
        tl.store(sigma_ptr, sq / d2)


@triton.jit
def _scale(w_ptr, out_ptr, sigma_ptr, N, BLOCK: tl.constexpr, ACC: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    s = tl.load(sigma_ptr).to(ACC)
    w = tl.load(w_ptr + offs, mask=offs < N, other=0.0).to(ACC)
    tl.store(out_ptr + offs, (w / s).to(out_ptr.dtype.element_ty), mask=offs < N)


@triton.jit
def _dot_partial(g_ptr, w_ptr, part_ptr, N, chunk, BLOCK: tl.constexpr, ACC: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * chunk
    acc = tl.zeros((BLOCK,), dtype=ACC)
    for off in range(0, chunk, BLOCK):
        idx = start + off + tl.arange(0, BLOCK)
        m = (idx < N) & (off + tl.arange(0, BLOCK) < chunk)
        acc += tl.load(g_ptr + idx, mask=m, other=0.0).to(ACC) * tl.load(w_ptr + idx, mask=m, other=0.0).to(ACC)
    tl.store(part_ptr + tl.program_id(0), tl.sum(acc, axis=0))


@triton.jit
def _normalize_bwd(g_ptr, u_ptr, v_ptr, sigma_ptr, part_ptr, out_ptr, N, H, K, n_parts,
                   PARTS: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    p = tl.arange(0, PARTS)
    gw = tl.sum(tl.load(part_ptr + p, mask=p < n_parts, other=0.0), axis=0)
    s = tl.load(sigma_ptr).to(ACC)
    c = gw / (s * s)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    a = offs // (H * K)
    i = (offs // K) % H
    k = offs % K
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(ACC)
    u = tl.load(u_ptr + i, mask=m, other=0.0).to(ACC)
    v = tl.load(v_ptr + a * K + k, mask=m, other=0.0).to(ACC)
    tl.store(out_ptr + offs, (g / s - c * u * v).to(out_ptr.dtype.element_ty), mask=m)


def _tacc(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


@torch.library.custom_op("fastgan_triton::sn_power", mutates_args=())
def sn_power(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor], dims: list[int],
             n_iter: int, eps: float) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    if not (len(weights) == len(us) == len(vs) == len(dims)):
        raise ValueError(f"sn_power: weights, us, vs and dims must have the same length, got {len(weights)}, "
                         f"{len(us)}, {len(vs)}, {len(dims)}")
    sigmas, u_out, v_out = [], [], []
    for w, u, v, dim in zip(weights, us, vs, dims):
        acc = acc_dtype(w.dtype)
        w = w.contiguous()
        a, h, k = _mat(w, dim)
        uw, vw = u.to(acc, copy=True).contiguous(), v.to(acc, copy=True).contiguous()
        sigma = w.new_empty((), dtype=acc)
        launch(_power, (1,), w, uw, vw, sigma, h, k, a * k, n_iter, f64_bits(eps), BH=BLOCK_H, BW=BLOCK_W,
               ACC=_tacc(acc))
        sigmas.append(sigma)
        u_out.append(uw.to(u.dtype))
        v_out.append(vw.to(v.dtype))
    return sigmas, u_out, v_out


@torch.library.custom_op("fastgan_triton::sn_normalize", mutates_args=())
def sn_normalize(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor,
                 dim: int) -> torch.Tensor:
    # elementwise: any dense layout is processed in its own storage order
    w = weight if torch._prims_common.is_non_overlapping_and_dense_or_false(weight) else weight.contiguous()
    out = torch.empty_like(w)
    n = w.numel()
    if n:
        launch(_scale, (triton.cdiv(n, BLOCK),), w, out, sigma, n, BLOCK=BLOCK, ACC=_tacc(acc_dtype(w.dtype)))
    return out


@torch.library.custom_op("fastgan_triton::sn_normalize_backward", mutates_args=())
def sn_normalize_backward(grad: torch.Tensor, weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                          sigma: torch.Tensor, dim: int) -> torch.Tensor:
    g, w = grad.contiguous(), weight.contiguous()
    out = w.new_empty(w.shape)
    n = w.numel()
    if n == 0:
        return out
    acc = acc_dtype(w.dtype)
    _, h, k = _mat(w, dim)
    chunk = triton.cdiv(triton.cdiv(n, DOT_PARTS), BLOCK) * BLOCK
    parts = triton.cdiv(n, chunk)
    part = w.new_empty((parts,), dtype=acc)
    launch(_dot_partial, (parts,), g, w, part, n, chunk, BLOCK=BLOCK, ACC=_tacc(acc))
    # PARTS: one fixed tile (parts <= DOT_PARTS), so one compiled variant whatever the size
    launch(_normalize_bwd, (triton.cdiv(n, BLOCK),), g, u.contiguous(), v.contiguous(), sigma, part, out, n, h, k,
           parts, PARTS=DOT_PARTS, BLOCK=BLOCK, ACC=_tacc(acc))
    return out

