"""The emulator itself: CUDA's warp semantics, the misuse it reports, block order, the rewrite,
and the penalty with H100's SM count (132) in a child process."""
import math

import pytest
import torch

from fastgan import reference

from . import build
from .conftest import describe, run_child


@pytest.fixture(scope="module")
def selftest(emu):
    return torch.ops.fastgan_emu_selftest.run


def test_warp_reduction_values(selftest):
    out = selftest("tree16")
    assert out[:2].tolist() == [sum(range(1, 33)), sum(range(33, 65))]
    # a shuffle tree starting at 8 sums only 16 lanes: the emulator gives the wrong value a GPU gives
    assert selftest("tree8")[:2].tolist() == [sum(range(1, 17)), sum(range(33, 49))]


def test_warp_intrinsics(selftest):
    out = selftest("warp_ops")
    lanes = range(32)
    assert out[:32].tolist() == [l ^ 1 for l in lanes]
    assert out[32:64].tolist() == [l - 3 if l >= 3 else l for l in lanes]
    assert out[64:96].tolist() == [7] * 32
    assert out[96:128].tolist() == [l + 2 if l % 8 + 2 < 8 else l for l in lanes]
    assert int(out[128]) == 0xAAAAAAAA


@pytest.mark.parametrize("case,match", [
    ("sync_after_exit", r"__syncthreads\(\) at .*selftest.cu:\d+.*exited|exited while .* wait at __syncthreads"),
    ("divergent_sync", r"divergent __syncthreads\(\).*selftest.cu:\d+"),
    ("partial_warp_full_mask", r"__shfl_down_sync at .*selftest.cu:\d+: mask 0xffffffff names lanes that do not exist"),
    ("exited_lane_in_mask", r"exited"),
    ("deadlock", r"deadlock"),
    ("empty_grid", r"invalid configuration argument \(empty grid\)"),
    ("block_too_large", r"256 threads > __launch_bounds__ 128"),
])
def test_misuse_is_reported(selftest, case, match):
    with pytest.raises(RuntimeError, match=match):
        selftest(case)


def test_kernel_error_names_the_cu_line(selftest):
    with pytest.raises(RuntimeError) as e:
        selftest("divergent_sync")
    src = (build.EMU / "selftest.cu").read_text().splitlines()
    lines = [i + 1 for i, s in enumerate(src) if "__syncthreads();" in s]
    assert any(f"selftest.cu:{n}" in str(e.value) for n in lines), str(e.value)


def test_shared_memory_is_poisoned_between_blocks(selftest, monkeypatch):
    monkeypatch.setenv("FASTGAN_EMU_ORDER", "forward")
    out = selftest("stale_shared")
    assert out[0] == 42 and math.isnan(out[1])


@pytest.mark.parametrize("order", ["forward", "reverse", "random:7"])
def test_block_order(selftest, monkeypatch, order):
    monkeypatch.setenv("FASTGAN_EMU_ORDER", order)
    ran = selftest("block_order")[:10].long().tolist()  # ran[block] = its position in the run
    assert sorted(ran) == list(range(10))
    if order == "forward":
        assert ran == list(range(10))
    elif order == "reverse":
        assert ran == list(range(9, -1, -1))
    else:
        assert ran not in (list(range(10)), list(range(9, -1, -1)))


def test_kernels_are_order_independent(emu, monkeypatch):
    """Every block order gives bit-identical results (the kernels use no inter-block communication)."""
    torch.manual_seed(0)
    g = torch.randn(5, 3000)
    w, u, v = torch.randn(40, 70), torch.randn(40), torch.randn(70)
    results = []
    for order in ("forward", "reverse", "random:1", "random:2"):
        monkeypatch.setenv("FASTGAN_EMU_ORDER", order)
        phi, n = emu.gnp_forward(g, 1.0, 2.0, False)
        back = emu.gnp_backward(torch.ones(5), g, n, 1.0, 2.0, False)
        s, _, _ = emu.sn_power([w], [u], [v], [0], 1, 1e-12)
        gw = emu.sn_normalize_backward(w, w, u, v, s[0], 0)
        results.append((phi, n, back, s[0], gw))
    for r in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(r, results[0]))


def test_h100_sm_count_subprocess():
    """The launch plan with 132 SMs (rows split into up to 4*132 blocks), in a child process."""
    res = run_child(
        "from fastgan import reference\n"
        "torch.manual_seed(0)\n"
        "for shape, dt in [((1, 20000), torch.float32), ((3, 5000), torch.float64), ((2, 9001), torch.float16)]:\n"
        "    g = torch.randn(shape, dtype=dt)\n"
        "    phi, n = ops.gnp_forward(g, 1.0, 2.0, False)\n"
        "    rn = g.double().norm(dim=1)\n"
        "    assert ((n.double() - rn).abs() / rn).max() < {torch.float16: 1e-3}.get(dt, 1e-6), (shape, n, rn)\n"
        "print('ok')\n", env={"FASTGAN_EMU_SMS": "132"})
    assert res.returncode == 0 and "ok" in res.stdout, describe(res)


# ---- the rewrite step (pure Python) ----
SNIPPET = """template <typename T, int V>
__global__ void __launch_bounds__(kThreads) k1(const T* a, int n) {
  __shared__ T warp_sums[kThreads / 32];
  __shared__ float total;
}
void host() {
  k1<float, 16 / sizeof(float)><<<blocks, kThreads, 0,
                                 stream>>>(a,
                                           n);
  k2<<<1, 32>>>();
}
TORCH_LIBRARY_IMPL(fastgan, CUDA, m) { check(DeviceType::CUDA, t.get_device()); }
"""


def test_rewrite_keeps_lines_and_maps_cuda_constructs():
    out = build.rewrite_cu(SNIPPET, "x.cu")
    head, body = out.split("\n", 1)
    assert head == '#line 1 "x.cu"'
    assert body.count("\n") == SNIPPET.count("\n")  # diagnostics keep the .cu line numbers
    lines = body.splitlines()
    assert "::cuemu::launch(CUEMU_SITE, \"k1<float, 16 / sizeof(float)>\", kThreads," in lines[6]
    assert "k2" in lines[9] and "::cuemu::Config(1, 32)" in lines[9] and ", 1024," in lines[9]
    assert "static T warp_sums[kThreads / 32]; static ::cuemu::SharedReg" in lines[2]
    assert "static float total;" in lines[3]
    assert "TORCH_LIBRARY_IMPL(fastgan_emu, CPU," in lines[11] and "DeviceType::CPU" in lines[11]
    assert "::cuemu::get_device(t)" in lines[11]
    assert "<<<" not in body and "__shared__" not in body


def test_rewrite_refuses_what_it_cannot_map():
    with pytest.raises(build.RewriteError, match="TORCH_LIBRARY_IMPL"):
        build.rewrite_cu("__global__ void k() {}\nvoid h() { k<<<1, 1>>>(); }\n", "y.cu")


def test_schemas_are_those_of_ops_cpp(emu):
    text = (build.CSRC / "ops.cpp").read_text()
    import re

    names = re.findall(r'm\.def\(\s*"(\w+)\(', text)
    assert names and all(hasattr(emu, n) for n in names)
    assert str(emu.gnp_forward.default._schema).replace("fastgan_emu::", "") in text.replace("\n", "")
