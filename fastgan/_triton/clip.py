"""Triton kernel of weight clipping: one launch per (device, dtype) group of tensors.

A group is addressed through one base pointer (its first tensor) plus a table of int64 (element
offset, length) pairs, one per chunk of CHUNK elements: ``base + offset`` reaches any tensor of the
group, so the kernel loads integers, never pointers (the CPU interpreter cannot dereference a
pointer read from memory). Tensors whose address is not a whole number of elements away from the
base start their own group; strided views that are not dense are clamped with eager ``clamp_``.

The table is a pure function of the group's (address, numel) list, so it is built once per list and
cached on the device (the C++ path passes it as kernel arguments instead): a repeated call, e.g.
every optimizer step, makes no host->device copy and runs no Python loop over chunks, and can be
captured in a CUDA graph once it has run before the capture. The bounds travel as float64 bit
patterns in kernel arguments. Wrapped in ``torch.library.custom_op`` so the op has a fake kernel
(opcheck, torch.compile); on CPU tensors it runs only under TRITON_INTERPRET=1.
"""
import collections
import functools
import threading

import torch
import triton
import triton.language as tl

from .._layout import rows_are_dense
from ._launch import f64, f64_bits, launch

BLOCK = 1024  # elements per loop step of one program
CHUNK = 8192  # elements per program
TABLE_CACHE_SIZE = 256  # chunk tables kept (LRU); tables used inside a CUDA graph capture are kept for good

_tables = collections.OrderedDict()  # (device, dtype, ((addr, numel), ...)) -> (device table, host table)
_captured = set()  # keys of tables a captured CUDA graph reads: never evicted
_capture_keepalive = []  # tables first built during a capture (read by that graph only)
_lock = threading.Lock()
stats = {"tables_built": 0}  # for tests: a repeated call must not build a table


@triton.jit(do_not_specialize=["lo_bits", "hi_bits"])
def _clamp_chunks(base_ptr, table_ptr, lo_bits: tl.int64, hi_bits: tl.int64, CHUNK: tl.constexpr,
                  BLOCK: tl.constexpr, CMP: tl.constexpr):
    pid = tl.program_id(0)
    ptr = base_ptr + tl.load(table_ptr + 2 * pid)
    n = tl.load(table_ptr + 2 * pid + 1)
    # bounds already rounded to the group's dtype on the host (as eager clamp_ rounds its scalar
    # bounds), so both conversions are exact (via CMP: the interpreter mis-converts fp64 -> bf16)
    lo = f64(lo_bits, CMP).to(base_ptr.dtype.element_ty)
    hi = f64(hi_bits, CMP).to(base_ptr.dtype.element_ty)
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


def _build_table(spans, size):
    """int64 [offset, length] pairs, one per chunk, offsets in elements from the first span."""
    addr0 = spans[0][0]
    table = []
    for addr, n in spans:
        first = (addr - addr0) // size
        for s in range(0, n, CHUNK):
            table += (first + s, min(CHUNK, n - s))
    return torch.tensor(table, dtype=torch.int64)


def _capturing(device):
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def chunk_table(group):
    """The device table of ``group`` (built and copied on first use, then cached)."""
    base = group[0]
    dev = base.device
    key = (dev, base.dtype, tuple((t.data_ptr(), t.numel()) for t in group))
    capturing = _capturing(dev)
    with _lock:
        hit = _tables.get(key)
        if hit is not None:
            _tables.move_to_end(key)
            if capturing:
                _captured.add(key)  # the graph reads this table at every replay: never evict it
    if hit is not None:
        return hit[0]
    host = _build_table(key[2], base.element_size())
    stats["tables_built"] += 1
    if dev.type != "cuda":
        table = host
    else:
        # pinned: the copy is asynchronous, and allowed (and recorded) inside a graph capture
        host = host.pin_memory()
        table = host.to(dev, non_blocking=True)
    if capturing:
        # captured, the copy has not run yet (it runs at each replay): an eager call must not find
        # this table in the cache before that, so it is only kept alive for the graph
        _capture_keepalive.append((table, host))
        return table
    with _lock:
        _tables[key] = (table, host)
        excess = len(_tables) - TABLE_CACHE_SIZE
        for k in [k for k in _tables if k not in _captured][:max(0, excess)]:
            del _tables[k]
    return table


@functools.lru_cache(maxsize=64)
def _rounded_bounds(lo, hi, dtype):
    # eager clamp_ rounds its Python-scalar bounds to the tensor's dtype
    b = torch.tensor([lo, hi], dtype=torch.float64).to(dtype).double().tolist()
    return b[0], b[1]


def _launch(group, lo, hi):
    base = group[0]
    table = chunk_table(group)
    lo_r, hi_r = _rounded_bounds(lo, hi, base.dtype)
    launch(_clamp_chunks, (table.numel() // 2,), base, table, f64_bits(lo_r), f64_bits(hi_r), CHUNK=CHUNK,
           BLOCK=BLOCK, CMP=tl.float64 if base.dtype == torch.float64 else tl.float32)


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
