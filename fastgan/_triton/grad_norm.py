"""Triton kernels of the per-sample gradient-norm penalty.

Forward: ``_sumsq`` (grid B x splits) writes per-chunk partial sums of squares, ``_finalize``
(one program per block of rows) adds them in a fixed order and computes n_i and phi_i. Backward:
``_scale`` (grid B x splits) writes ``c_i * g_i``. Splitting a row across programs keeps the GPU
busy when there are few huge rows (B=2, 3x1024x1024). Wrapped in ``torch.library.custom_op`` so
the ops have fake kernels (opcheck, torch.compile); on CPU tensors they run only under
TRITON_INTERPRET=1.
"""
import torch
import triton
import triton.language as tl

from .._layout import acc_dtype, as_dense_rows, empty_like_rows, row_numel
from ._launch import f64, f64_bits, launch

BLOCK = 1024  # elements per loop step of one program
TARGET_PROGRAMS = 1024  # rows are split until about this many programs run (GPU occupancy)
FINAL_ROWS = 16  # rows per _finalize program
FINAL_SPLITS = 64  # partial sums per loop step of _finalize (a fixed tile: one compiled variant)


def _power_kind(power):
    return 2 if power == 2.0 else (1 if power == 1.0 else 0)


@triton.jit
def _pow(a, p, KIND: tl.constexpr):
    # a >= 0. Interpreter and GPU alike: no libdevice pow.
    if KIND == 2:
        return a * a
    elif KIND == 1:
        return a
    else:
        return tl.exp(p * tl.log(a))


@triton.jit
def _pow_m1(a, p, KIND: tl.constexpr):
    # a^(p-1), a >= 0
    if KIND == 2:
        return a
    elif KIND == 1:
        return tl.full(a.shape, 1.0, a.dtype)
    else:
        return tl.exp((p - 1.0) * tl.log(a))


@triton.jit
def _sumsq(g_ptr, partial_ptr, N, row_stride, n_split, chunk, BLOCK: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0)
    split = tl.program_id(1)
    base = g_ptr + row.to(tl.int64) * row_stride
    start = split.to(tl.int64) * chunk
    acc = tl.zeros((BLOCK,), dtype=ACC)
    for off in range(0, chunk, BLOCK):
        idx = start + off + tl.arange(0, BLOCK)
        x = tl.load(base + idx, mask=(idx < N) & (off + tl.arange(0, BLOCK) < chunk), other=0.0).to(ACC)
        acc += x * x
    tl.store(partial_ptr + row.to(tl.int64) * n_split + split, tl.sum(acc, axis=0))


@triton.jit(do_not_specialize=["target_bits", "power_bits"])
def _finalize(partial_ptr, phi_ptr, norm_ptr, B, n_split, target_bits: tl.int64, power_bits: tl.int64,
              ONE_SIDED: tl.constexpr, SUMSQ: tl.constexpr, KIND: tl.constexpr,
              ROWS: tl.constexpr, SPLITS: tl.constexpr, ACC: tl.constexpr):
    target = f64(target_bits, ACC)
    power = f64(power_bits, ACC)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    s = tl.zeros((ROWS,), dtype=ACC)
    # a fixed (ROWS, SPLITS) tile stepped over the splits, in a fixed order: one compiled variant
    # for every split count, and the same sum on every GPU
    for c0 in range(0, n_split, SPLITS):
        cols = c0 + tl.arange(0, SPLITS)
        mask = (rows[:, None] < B) & (cols[None, :] < n_split)
        part = tl.load(partial_ptr + rows[:, None].to(tl.int64) * n_split + cols[None, :], mask=mask, other=0.0)
        s += tl.sum(part.to(ACC), axis=1)
    n = tl.sqrt(s)
    if SUMSQ:
        phi = s
    else:
        d = n - target
        if ONE_SIDED:
            a = tl.where(d < 0, 0.0, d)
        else:
            a = tl.where(d < 0, -d, d)
        phi = _pow(a, power, KIND)
    tl.store(norm_ptr + rows, n, mask=rows < B)
    tl.store(phi_ptr + rows, phi, mask=rows < B)


@triton.jit(do_not_specialize=["target_bits", "power_bits"])
def _scale(g_ptr, out_ptr, gphi_ptr, norm_ptr, N, row_stride, chunk, target_bits: tl.int64, power_bits: tl.int64,
           ONE_SIDED: tl.constexpr, SUMSQ: tl.constexpr, KIND: tl.constexpr,
           BLOCK: tl.constexpr, ACC: tl.constexpr):
    target = f64(target_bits, ACC)
    power = f64(power_bits, ACC)
    row = tl.program_id(0)
    split = tl.program_id(1)
    gphi = tl.load(gphi_ptr + row).to(ACC)
    n = tl.load(norm_ptr + row).to(ACC)
    if SUMSQ:
        c = 2.0 * gphi
    else:
        d = n - target
        if ONE_SIDED:
            dphi = tl.where(d < 0, 0.0, power * _pow_m1(tl.where(d < 0, 0.0, d), power, KIND))
        else:
            a = tl.where(d < 0, -d, d)
            sign = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
            dphi = power * _pow_m1(a, power, KIND) * sign
        # zero row: eager torch's norm backward gives 0 there
        c = tl.where(n == 0, 0.0, gphi * dphi / n)
    src = g_ptr + row.to(tl.int64) * row_stride
    dst = out_ptr + row.to(tl.int64) * N
    start = split.to(tl.int64) * chunk
    for off in range(0, chunk, BLOCK):
        idx = start + off + tl.arange(0, BLOCK)
        mask = (idx < N) & (off + tl.arange(0, BLOCK) < chunk)
        x = tl.load(src + idx, mask=mask, other=0.0).to(ACC)
        tl.store(dst + idx, (x * c).to(out_ptr.dtype.element_ty), mask=mask)


def _plan(b, n):
    """(n_split, chunk): split rows so about TARGET_PROGRAMS programs run, never below BLOCK."""
    max_split = max(1, triton.cdiv(n, BLOCK))
    n_split = min(max_split, max(1, triton.cdiv(TARGET_PROGRAMS, b)))
    chunk = triton.cdiv(triton.cdiv(max(n, 1), n_split), BLOCK) * BLOCK
    return triton.cdiv(max(n, 1), chunk), chunk


def _flags(target, power, one_sided):
    return dict(ONE_SIDED=one_sided, SUMSQ=(target == 0.0 and power == 2.0 and not one_sided),
                KIND=_power_kind(power))


def _check(grads):
    if grads.dim() < 1 or not grads.is_floating_point():
        raise ValueError(f"grads must be a floating-point tensor with a batch dimension, got {grads.dtype} "
                         f"of dim {grads.dim()}")


@torch.library.custom_op("fastgan_triton::gnp_forward", mutates_args=())
def gnp_forward(grads: torch.Tensor, target: float, power: float, one_sided: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check(grads)
    g = as_dense_rows(grads)
    b, n = g.shape[0], row_numel(g)
    acc = acc_dtype(g.dtype)
    phi = g.new_empty((b,), dtype=acc)
    norms = g.new_empty((b,), dtype=acc)
    if b == 0:
        return phi, norms
    tacc = tl.float64 if acc == torch.float64 else tl.float32
    n_split, chunk = _plan(b, n)
    partial = g.new_empty((b, n_split), dtype=acc)
    launch(_sumsq, (b, n_split), g, partial, n, g.stride(0), n_split, chunk, BLOCK=BLOCK, ACC=tacc)
    launch(_finalize, (triton.cdiv(b, FINAL_ROWS),), partial, phi, norms, b, n_split, f64_bits(target),
           f64_bits(power), ROWS=FINAL_ROWS, SPLITS=FINAL_SPLITS, ACC=tacc, **_flags(target, power, one_sided))
    return phi, norms


@torch.library.custom_op("fastgan_triton::gnp_backward", mutates_args=())
def gnp_backward(grad_phi: torch.Tensor, grads: torch.Tensor, norms: torch.Tensor, target: float,
                 power: float, one_sided: bool) -> torch.Tensor:
    _check(grads)
    g = as_dense_rows(grads)
    out = empty_like_rows(g)
    if g.numel() == 0:
        return out
    b, n = g.shape[0], row_numel(g)
    acc = acc_dtype(g.dtype)
    tacc = tl.float64 if acc == torch.float64 else tl.float32
    n_split, chunk = _plan(b, n)
    gphi = grad_phi.to(acc).contiguous()
    launch(_scale, (b, n_split), g, out, gphi, norms.to(acc).contiguous(), n, g.stride(0), chunk,
           f64_bits(target), f64_bits(power), BLOCK=BLOCK, ACC=tacc, **_flags(target, power, one_sided))
    return out

