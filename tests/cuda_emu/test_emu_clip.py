"""csrc/cuda/clip.cu, emulated on the CPU, against eager clamp_ (as tests/test_clip.py)."""
import math

import pytest
import torch

from conftest import DTYPES
from test_clip import assert_same, expected, rand, storage_copy

CHUNK = 65536  # elements per block in clip.cu (kChunk)
MAX_TENSORS, MAX_BLOCKS = 110, 320  # clip.cu's table sizes: a launch is split off when one is full
NAN, INF = float("nan"), float("inf")


def check_clip(emu, tensors, lo, hi):
    want = [expected(t, lo, hi) for t in tensors]
    outside = [(t, storage_copy(t), t.storage_offset()) for t in tensors]
    ptrs = [t.data_ptr() for t in tensors]
    emu.clip_weights_(tensors, lo, hi)
    for t, w, p in zip(tensors, want, ptrs):
        assert t.data_ptr() == p
        assert_same(t, w)
    for t, before, off in outside:  # elements outside a strided view must not change
        after = storage_copy(t)
        mask = torch.ones(after.numel(), dtype=torch.bool)
        idx = torch.as_strided(torch.arange(after.numel()), t.shape, t.stride(), off).flatten()
        mask[idx] = False
        assert_same(after[mask], before[mask])


@pytest.mark.parametrize("n", [1, 2, 100, 250])
def test_lists_match_eager(emu, n):
    """Lists of every dtype and layout; 250 tensors fill the table (110 tensors) twice."""
    gen = torch.Generator().manual_seed(1000 + n)
    layouts = ["contiguous", "transposed", "channels_last", "slice"]
    tensors = []
    for i in range(n):
        r = int(torch.randint(0, 5, (), generator=gen))
        shape = [(), (int(torch.randint(0, 70, (), generator=gen)),), (3, 5), (2, 3, 4, 5), (7, 1, 3)][r]
        dtype = DTYPES[i % len(DTYPES)] if n > 1 else torch.float32
        tensors.append(rand(shape, dtype, "cpu", gen, layouts[i % 4]))
    check_clip(emu, tensors, -0.01, 0.01)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sizes_around_chunks(emu, dtype):
    gen = torch.Generator().manual_seed(7)
    sizes = [0, 1, 5, 15, 16, 17, 33, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7]
    check_clip(emu, [rand((s,), dtype, "cpu", gen) for s in sizes], -0.01, 0.01)


def test_misaligned_tensor(emu):
    """A tensor starting 4 bytes into its storage: its chunks take the scalar path."""
    gen = torch.Generator().manual_seed(5)
    base = rand((CHUNK + 40,), torch.float32, "cpu", gen)
    t = base[1:CHUNK + 20]
    assert t.data_ptr() % 16 != 0
    check_clip(emu, [t], -0.01, 0.01)


def test_table_full_of_blocks(emu):
    """More chunks than one launch's table holds (320): the tensor that straddles the split
    continues in the next launch as entry 0, with its own address and numel."""
    gen = torch.Generator().manual_seed(11)
    tensors = [rand((5,), torch.float16, "cpu", gen), rand((MAX_BLOCKS * CHUNK + 3 * CHUNK + 9,), torch.float16, "cpu", gen),
               rand((70,), torch.float16, "cpu", gen)]
    check_clip(emu, tensors, -0.01, 0.01)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bounds_nan_inf(emu, dtype):
    lo, hi = -0.25, 0.5  # exact in every dtype
    up = lambda v: math.nextafter(v, INF)  # noqa: E731
    down = lambda v: math.nextafter(v, -INF)  # noqa: E731
    vals = [lo, hi, NAN, INF, -INF, -0.0, 0.0, 1e30, -1e30]
    want = [lo, hi, NAN, hi, lo, -0.0, 0.0, hi, lo]
    if dtype == torch.float64:
        vals += [up(lo), down(lo), down(hi), up(hi)]
        want += [up(lo), lo, down(hi), hi]
    x = torch.tensor(vals * 9, dtype=torch.float64).to(dtype)  # 9 copies: vector and tail paths
    w = torch.tensor(want * 9, dtype=torch.float64).to(dtype)
    emu.clip_weights_([x], lo, hi)
    assert_same(x, w)
    assert math.copysign(1, float(x[5])) == -1  # -0.0 kept


@pytest.mark.parametrize("lo,hi", [(-0.03, 0.005), (0.002, 0.002), (-INF, 0.0), (1e-3, 1e-3 + 1e-9)])
def test_clip_values(emu, lo, hi):
    gen = torch.Generator().manual_seed(3)
    check_clip(emu, [rand((37,), dt, "cpu", gen) for dt in DTYPES], lo, hi)


def test_bad_items_modify_nothing(emu):
    gen = torch.Generator().manual_seed(4)
    good = rand((50,), torch.float32, "cpu", gen)
    before = good.clone()
    for bad, exc in ([torch.ones(3, dtype=torch.int64)], TypeError), ([torch.ones(3, device="meta")], ValueError):
        with pytest.raises((exc, RuntimeError)):
            emu.clip_weights_([good] + bad, -0.01, 0.01)
        assert torch.equal(good, before)
    with pytest.raises((ValueError, RuntimeError), match="lo <= hi"):
        emu.clip_weights_([good], 0.1, -0.1)
    assert torch.equal(good, before)


def test_version_bump(emu):
    t = torch.randn(10)
    v = t._version
    emu.clip_weights_([t], -0.01, 0.01)
    assert t._version > v
