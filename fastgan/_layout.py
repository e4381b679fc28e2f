"""Row layout shared by the fake kernels and the Triton launchers (mirrors csrc/rows.h).

A gradient (B, ...) is read as B rows of N elements. Any layout whose per-sample block is dense
(contiguous, channels_last, a slice along the batch) is read in place; others are copied once.
"""
import torch


def rows_are_dense(t: torch.Tensor) -> bool:
    dims = sorted((t.stride(d), t.size(d)) for d in range(1, t.dim()) if t.size(d) != 1)
    expect = 1
    for stride, size in dims:
        if stride != expect:
            return False
        expect *= size
    return True


def as_dense_rows(t: torch.Tensor) -> torch.Tensor:
    return t if rows_are_dense(t) else t.contiguous()


def row_numel(t: torch.Tensor) -> int:
    return t.numel() // t.size(0) if t.size(0) else 0


def empty_like_rows(rows: torch.Tensor) -> torch.Tensor:
    """Fresh tensor like ``rows`` with rows packed back to back and the same in-row order."""
    strides = list(rows.stride())
    strides[0] = max(row_numel(rows), 1)
    return torch.empty_strided(rows.shape, strides, dtype=rows.dtype, device=rows.device)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32
