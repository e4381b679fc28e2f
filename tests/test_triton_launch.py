"""Triton launch path: the device guard, fp64 scalar arguments, the clip chunk-table cache.

Runs on CPU through the interpreter (on a GPU machine the same tests run on CUDA tensors). What a
CPU cannot check: that the guarded launch really lands on cuda:1's stream (needs two GPUs), and the
graph capture itself (tests/test_cuda_graphs.py, GPU only).
"""
import contextlib

import pytest
import torch
from conftest import rel_err

pytest.importorskip("triton")

from fastgan import reference  # noqa: E402
from fastgan._triton import _launch  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------
# defect 3: every launch makes the tensors' device current
class _FakeKernel:
    arg_names = ["x_ptr", "n", "BLOCK"]

    def __init__(self, log):
        self.log = log

    def __getitem__(self, grid):
        return lambda *a, **k: self.log.append(("launch", grid))


def test_launch_makes_the_tensor_device_current(monkeypatch):
    """A tensor on cuda:1 is launched with cuda:1 current (Triton takes the current device and its
    current stream); FakeTensor stands in for the cuda:1 tensor on a CPU machine."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    log = []

    @contextlib.contextmanager
    def fake_device(d):
        log.append(("enter", torch.device(d)))
        yield
        log.append(("exit", torch.device(d)))

    monkeypatch.setattr(torch.cuda, "device", fake_device)
    with FakeTensorMode():
        t = torch.empty(3, device="cuda:1")
    _launch.launch(_FakeKernel(log), (1,), t, 3, BLOCK=4)
    assert log == [("enter", torch.device("cuda:1")), ("launch", (1,)), ("exit", torch.device("cuda:1"))]


def test_launch_needs_a_tensor_and_the_right_arity():
    with pytest.raises(ValueError, match="tensor"):
        _launch.launch(_FakeKernel([]), (1,), 3, 4, BLOCK=4)
    with _launch.recording(), pytest.raises(TypeError, match="2 runtime arguments"):
        _launch.launch(_FakeKernel([]), (1,), torch.zeros(1), BLOCK=4)


# ---------------------------------------------------------------------------------------------
# defect 6: float64 kernels get target / power / eps in full precision
def test_f64_bits_roundtrip():
    import struct

    for x in (0.0, -0.0, 1.0, 1 + 1e-12, -3.5, 5e-324, float("inf"), 1e300):
        b = _launch.f64_bits(x)
        assert -2**63 <= b < 2**63
        assert struct.pack("<q", b) == struct.pack("<d", x)


@pytest.mark.parametrize("one_sided", [False, True])
def test_penalty_fp64_parameters_not_rounded_to_fp32(one_sided):
    """target = 1 + 1e-12 and power = 2 + 1e-9 are not fp32 numbers; rounded to fp32 they change
    phi and its gradient by O(1) here (n - target is 2e-12 instead of 3e-12)."""
    from fastgan._triton import grad_norm

    x = 1 + 3e-12
    g = torch.zeros(3, 5, dtype=torch.float64, device=DEV)
    g[:, 0] = torch.tensor([x, 0.5, 2.0], dtype=torch.float64)
    for target, power in ((1 + 1e-12, 2.0), (1 + 1e-12, 2 + 1e-9), (0.25 + 1e-13, 1.0)):
        phi, norms = grad_norm.gnp_forward(g, target, power, one_sided)
        phi_ref, norms_ref = reference.gnp_forward(g.cpu(), target, power, one_sided)
        assert rel_err(norms.cpu(), norms_ref) <= 1e-15
        for i in range(3):  # row by row: row 0's phi is ~1e-23, the others O(1)
            assert rel_err(phi[i].cpu(), phi_ref[i]) <= 1e-9, (target, power, i, float(phi[i]), float(phi_ref[i]))
        gref = g.cpu().clone().requires_grad_()
        (dref,) = torch.autograd.grad(reference.gnp_forward(gref, target, power, one_sided)[0].sum(), gref)
        d = grad_norm.gnp_backward(torch.ones_like(phi), g, norms, target, power, one_sided)
        for i in range(3):
            assert rel_err(d[i].cpu(), dref[i]) <= 1e-9, (target, power, i)


def test_spectral_norm_fp64_eps_not_rounded_to_fp32():
    """|W v| < eps, so u = W v / eps: eps = 1e-12 rounded to fp32 is off by 2e-8 relative."""
    from fastgan._triton import spectral_norm

    torch.manual_seed(0)
    w = torch.randn(4, 6, dtype=torch.float64, device=DEV) * 1e-14
    u = torch.nn.functional.normalize(torch.randn(4, dtype=torch.float64, device=DEV), dim=0)
    v = torch.nn.functional.normalize(torch.randn(6, dtype=torch.float64, device=DEV), dim=0)
    s, us, vs = spectral_norm.sn_power([w], [u], [v], [0], 1, 1e-12)
    s_ref, u_ref, v_ref = reference.sn_power([w.cpu()], [u.cpu()], [v.cpu()], [0], 1, 1e-12)
    assert rel_err(us[0].cpu(), u_ref[0]) <= 1e-12
    assert rel_err(vs[0].cpu(), v_ref[0]) <= 1e-12
    assert rel_err(s[0].cpu(), s_ref[0]) <= 1e-12


# ---------------------------------------------------------------------------------------------
# defect 4: the clip table is built once per list, not copied host->device on every call
def test_clip_repeated_call_builds_no_table_and_copies_nothing(monkeypatch):
    from fastgan._triton import clip

    torch.manual_seed(0)
    ts = [torch.randn(n, dtype=dt, device=DEV) for n, dt in
          ((10000, torch.float32), (7, torch.float32), (300, torch.float16), (20000, torch.float32))]
    want = [t.clone().clamp_(-0.3, 0.3) for t in ts]
    clip.clip_weights_(ts, -0.3, 0.3)
    built = clip.stats["tables_built"]
    for t in ts:  # fresh values, same tensors
        t.normal_()
    want = [t.clone().clamp_(-0.3, 0.3) for t in ts]

    def no_copy(*a, **k):
        raise AssertionError("host->device table built on a repeated call")

    monkeypatch.setattr(clip, "_build_table", no_copy)
    clip.clip_weights_(ts, -0.3, 0.3)
    assert clip.stats["tables_built"] == built
    for t, w in zip(ts, want):
        assert torch.equal(t, w)
    monkeypatch.undo()
    # another list (a new tensor) gets its own table, and the cache stays bounded
    extra = torch.randn(5, device=DEV)
    extra_want = extra.clone().clamp_(-0.3, 0.3)
    clip.clip_weights_(ts + [extra], -0.3, 0.3)
    assert clip.stats["tables_built"] == built + 1
    assert torch.equal(extra, extra_want)


def test_clip_table_is_a_function_of_addresses_and_sizes():
    """What makes the cache safe: the table depends only on the (address, numel) list it is keyed by."""
    from fastgan._triton import clip

    spans = [(1000, 3), (1000 + 4 * 8192, clip.CHUNK + 5)]
    tab = clip._build_table(spans, 4).tolist()
    assert tab == [0, 3, 8192, clip.CHUNK, 8192 + clip.CHUNK, 5]


def test_clip_table_cache_is_bounded(monkeypatch):
    from fastgan._triton import clip

    monkeypatch.setattr(clip, "TABLE_CACHE_SIZE", 3)
    ts = [torch.randn(4, device=DEV) for _ in range(6)]
    for t in ts:
        clip.clip_weights_([t], -1.0, 1.0)
    assert len(clip._tables) <= 3
