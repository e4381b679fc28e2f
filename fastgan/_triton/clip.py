"""Triton kernel of weight clipping: one launch per (device, dtype) group of tensors.

A group is addressed through one base pointer (its first tensor) plus a table of int64 element
offsets, one per chunk of CHUNK elements: ``base + offset`` reaches any tensor of the group, so
the kernel loads integers, never pointers (the CPU interpreter cannot dereference a pointer read
from memory). The chunk table is built on the host. Tensors whose address is not a whole number
of elements away from the base start their own group; strided views that are not dense are
clamped with eager ``clamp_``. Wrapped in ``torch.library.custom_op`` so the op has a fake kernel
(opcheck, torch.compile); on CPU tensors it runs only under TRITON_INTERPRET=1.
"""
import torch
import triton
import triton.language as tl

from .._layout import rows_are_dense

BLOCK = 1024  # elements per loop step of one program
CHUNK = 8192  # elements per program


@triton.jit
def _clamp_chunks(base_ptr, off_ptr, len_ptr, bounds_ptr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
                  CMP: tl.constexpr):
    pid = tl.program_id(0)
    ptr = base_ptr + tl.load(off_ptr + pid)
    n = tl.load(len_ptr + pid)
    # bounds in the group's dtype, rounded as eager clamp_ rounds its scalar bounds
    lo = tl.load(bounds_ptr)
    hi = tl.load(bounds_ptr + 1)
    # compare in float32 (float64): the interpreter compares bfloat16 as raw integers; the
    # selects below pick stored values, so nothing is rounded
    lo_c = lo.to(CMP)
    hi_c = hi.to(CMP)
    for start in range(0, CHUNK, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        mask = idx < n
        x = tl.load(ptr + idx, mask=mask)
        # comparisons with NaN are false, so NaN stays NaN as in eager clamp
        xc = x.to(CMP)
        x = tl.where(xc < lo_c, lo, x)
        x = tl.where(xc > hi_c, hi, x)
        tl.store(ptr + idx, x, mask=mask)


def _groups(tensors):
    """{(device, dtype, address mod itemsize): [tensors]} of the dense, non-empty tensors."""
    groups = {}
    for t in tensors:
        if t.numel():
            groups.setdefault((t.device, t.dtype, t.data_ptr() % t.element_size()), []).append(t)
    return groups


def _launch(group, lo, hi):
    base = group[0]
    size, addr0 = base.element_size(), base.data_ptr()
    offsets, lengths = [], []
    for t in group:
        first = (t.data_ptr() - addr0) // size
        n = t.numel()
        for s in range(0, n, CHUNK):
            offsets.append(first + s)
            lengths.append(min(CHUNK, n - s))
    dev = base.device
    off = torch.tensor(offsets, dtype=torch.int64).to(dev, non_blocking=True)
    lens = torch.tensor(lengths, dtype=torch.int32).to(dev, non_blocking=True)
    bounds = torch.tensor([lo, hi], dtype=base.dtype).to(dev, non_blocking=True)
    _clamp_chunks[(len(offsets),)](base, off, lens, bounds, CHUNK=CHUNK, BLOCK=BLOCK,
                                     CMP=tl.float64 if base.dtype == torch.float64 else tl.float32)


@torch.library.custom_op("fastgan_triton::clip_weights_", mutates_args={"tensors"})
def clip_weights_(tensors: list[torch.Tensor], lo: float, hi: float) -> None:
    if not lo <= hi:
        raise ValueError(f"clip_weights_: need lo <= hi (and neither NaN), got lo={lo}, hi={hi}")
    for i, t in enumerate(tensors):
        if not t.is_floating_point():
            raise TypeError(f"clip_weights_: tensors[{i}] must be floating point, got {t.dtype}")
    dense = []
    for t in tensors:
        # one row holding all of t: dense in any layout, so it spans [data_ptr, data_ptr + numel)
        if rows_are_dense(t.unsqueeze(0)):
            dense.append(t)
        else:
            t.clamp_(lo, hi)
    for group in _groups(dense).values():
        _launch(group, lo, hi)


@clip_weights_.register_fake
def _(tensors, lo, hi):
    return None
