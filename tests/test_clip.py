"""Weight clipping: fg.clip_weights_ / fg.WeightClipper on every backend against eager clamp_."""
import copy
import math

import pytest
import torch

import fastgan as fg
from conftest import DTYPES, available_backends, backend_devices, check_isa_choice, device_for

BACKEND_DEVICES = [("reference", "cpu")] + backend_devices()
IDS = [f"{b}-{d}" for b, d in BACKEND_DEVICES]
NAN, INF = float("nan"), float("inf")


@pytest.fixture(autouse=True)
def small_triton_chunks(monkeypatch):
    """Tiny Triton chunks so small tensors cross chunk and block boundaries (interpreter is slow)."""
    if "triton" in available_backends():
        from fastgan._triton import clip

        monkeypatch.setattr(clip, "CHUNK", 64)
        monkeypatch.setattr(clip, "BLOCK", 16)


@pytest.fixture(autouse=True)
def cpu_threads_by_work():
    """The CPU kernel splits a list between threads by work (csrc/cpu/clip.cpp), unless timing says
    one thread is faster: tests pin the split so that ranges starting inside tensors are exercised."""
    if not fg.backends()["cpu"]["available"]:
        yield
        return
    prev = torch.ops.fastgan.clip_cpu_threading("parallel")
    yield
    torch.ops.fastgan.clip_cpu_threading(prev)


def chunk_of(backend):
    """Elements per parallel piece of the backend's kernel: sizes around it are the edge cases.

    cpu: the per-thread grain of csrc/cpu/clip.cpp (128 KiB: 32768 float32 elements); a list above
    it is split between threads at element ranges that start inside a tensor. cuda: elements per
    block. triton: CHUNK as patched.
    """
    return {"cpu": 32768, "cuda": 65536, "triton": 64}.get(backend, 64)


def rand(shape, dtype, device, gen, layout="contiguous"):
    """Weights of magnitude ~c=0.01, so about half of them get clipped; in one of several layouts."""
    if layout == "transposed" and len(shape) >= 2:
        return (torch.randn(shape[::-1], generator=gen) * 0.02).to(device, dtype).transpose(0, -1)
    if layout == "channels_last" and len(shape) == 4:
        x = (torch.randn(shape, generator=gen) * 0.02).to(device, dtype)
        return x.to(memory_format=torch.channels_last)
    if layout == "slice":  # a strided view into a bigger tensor, whose other elements must survive
        base = (torch.randn((shape[0] if shape else 1) * 2 + 1, *shape[1:], generator=gen) * 0.02).to(device, dtype)
        return base[1::2] if shape else base[1]
    return (torch.randn(shape, generator=gen) * 0.02).to(device, dtype)


def expected(t, lo, hi):
    """Independent eager result: per-tensor clamp_ on a copy of the tensor's whole storage."""
    return t.detach().clone().clamp_(lo, hi)


def storage_copy(t):
    return torch.tensor([], dtype=t.dtype, device=t.device).set_(t.untyped_storage().__copy__())


def assert_same(actual, want):
    torch.testing.assert_close(actual, want, rtol=0, atol=0, equal_nan=True)


def check_clip(tensors, clip_value, backend):
    lo, hi = (-clip_value, clip_value) if isinstance(clip_value, float) else clip_value
    want = [expected(t, lo, hi) for t in tensors]
    # the whole storage: elements outside a strided view must not change
    outside = [(t, storage_copy(t), t.storage_offset()) for t in tensors]
    ptrs = [t.data_ptr() for t in tensors]
    fg.clip_weights_(tensors, clip_value, backend=backend)
    for t, w, p in zip(tensors, want, ptrs):
        assert t.data_ptr() == p
        assert_same(t, w)
    for t, before, off in outside:
        after = storage_copy(t)
        mask = torch.ones(after.numel(), dtype=torch.bool)
        idx = torch.as_strided(torch.arange(after.numel()), t.shape, t.stride(), off).flatten()
        mask[idx] = False
        assert_same(after[mask.to(after.device)], before[mask.to(before.device)])


# --------------------------------------------------------------------------------------------
# correctness against eager clamp_
@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
@pytest.mark.parametrize("n", [1, 2, 100, 1000])
def test_lists_match_eager(backend, device, n):
    gen = torch.Generator().manual_seed(1000 + n)
    layouts = ["contiguous", "transposed", "channels_last", "slice"]
    tensors = []
    for i in range(n):
        r = int(torch.randint(0, 5, (), generator=gen))
        shape = [(), (int(torch.randint(0, 70, (), generator=gen)),), (3, 5), (2, 3, 4, 5), (7, 1, 3)][r]
        dtype = DTYPES[i % len(DTYPES)] if n > 1 else torch.float32
        tensors.append(rand(shape, dtype, device, gen, layouts[i % 4]))
    check_clip(tensors, 0.01, backend)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sizes_around_chunks(backend, device, dtype):
    gen = torch.Generator().manual_seed(7)
    c = chunk_of(backend)
    sizes = [0, 1, 5, 15, 16, 17, 33, c - 1, c, c + 1, 3 * c + 7]
    tensors = [rand((s,), dtype, device, gen) for s in sizes]
    check_clip(tensors, 0.01, backend)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bounds_nan_inf(backend, device, dtype):
    lo, hi = -0.25, 0.5  # exact in every dtype
    up = lambda v: math.nextafter(v, INF)  # noqa: E731
    down = lambda v: math.nextafter(v, -INF)  # noqa: E731
    vals = [lo, hi, NAN, INF, -INF, -0.0, 0.0, 1e30, -1e30]
    want = [lo, hi, NAN, hi, lo, -0.0, 0.0, hi, lo]
    if dtype == torch.float64:  # just inside / outside the bounds
        vals += [up(lo), down(lo), down(hi), up(hi)]
        want += [up(lo), lo, down(hi), hi]
    x = torch.tensor(vals * 9, dtype=torch.float64).to(device, dtype)  # 9 copies: vector and tail paths
    w = torch.tensor(want * 9, dtype=torch.float64).to(device, dtype)
    fg.clip_weights_(x, (lo, hi), backend=backend)
    assert_same(x, w)
    assert math.copysign(1, float(x[5])) == -1  # -0.0 kept


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
@pytest.mark.parametrize("clip_value", [0.01, (-0.03, 0.005), (0.002, 0.002), (-INF, 0.0), 1e-3])
def test_clip_values(backend, device, clip_value):
    gen = torch.Generator().manual_seed(3)
    check_clip([rand((37,), dt, device, gen) for dt in DTYPES], clip_value, backend)


def test_bounds_round_like_eager_clamp():
    # 0.01 is not representable: every dtype must store the bound as eager clamp_ rounds it
    for backend, device in BACKEND_DEVICES:
        for dtype in DTYPES:
            x = torch.tensor([1.0, -1.0, 0.003] * 11, dtype=dtype, device=device)
            w = x.clone().clamp_(-0.01, 0.01)
            fg.clip_weights_([x], 0.01, backend=backend)
            assert_same(x, w)


# --------------------------------------------------------------------------------------------
# inputs: generators, single tensors, empty lists, devices
@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
def test_generator_and_single_tensor(backend, device):
    m = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(device)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(10)
    want = [expected(p, -0.05, 0.05) for p in m.parameters()]
    assert fg.clip_weights_(m.parameters(), 0.05, backend=backend) is None
    for p, w in zip(m.parameters(), want):
        assert_same(p, w)
    t = torch.full((4,), 3.0, device=device)
    fg.clip_weights_(t, 1.0, backend=backend)
    assert_same(t, torch.ones(4, device=device))
    fg.clip_weights_((x for x in [t]), (-2.0, -1.5), backend=backend)
    assert_same(t, torch.full((4,), -1.5, device=device))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
def test_empty_is_noop(backend, device):
    fg.clip_weights_([], 0.01, backend=backend)
    fg.clip_weights_(iter(()), 0.01, backend=backend)
    e = torch.empty(0, 3, device=device)
    fg.clip_weights_([e], 0.01, backend=backend)
    assert e.shape == (0, 3)


def test_other_devices_use_their_own_backend():
    # meta tensors have no fastgan kernel: "auto" runs them through the reference, in the same call
    x, m = torch.full((5,), 2.0), torch.empty(5, device="meta")
    fg.clip_weights_([x, m], 1.0)
    assert_same(x, torch.ones(5))
    with pytest.raises(ValueError, match="meta"):
        fg.clip_weights_([x.fill_(2.0), m], 1.0, backend="cpu")
    assert_same(x, torch.full((5,), 2.0))  # checked before anything was clipped


# --------------------------------------------------------------------------------------------
# bad input: clear errors, nothing modified
BAD_VALUES = [
    (0.0, ValueError, "> 0"), (-0.01, ValueError, "-0.01"), (NAN, ValueError, "nan"),
    ((0.1, -0.1), ValueError, "lo <= hi"), ((NAN, 0.1), ValueError, "nan"), ((-0.1, NAN), ValueError, "nan"),
    (True, TypeError, "True"), ("0.01", TypeError, "'0.01'"), ((0.1,), ValueError, "pair"),
    (None, TypeError, "None"), ((0.0, "a"), TypeError, "'a'"),
]


@pytest.mark.parametrize("clip_value,exc,msg", BAD_VALUES, ids=repr)
def test_bad_clip_value(clip_value, exc, msg):
    x = torch.full((3,), 5.0)
    with pytest.raises(exc, match=f"clip_value.*{msg}"):
        fg.clip_weights_([x], clip_value)
    with pytest.raises(exc, match="clip_value"):
        fg.WeightClipper([x], clip_value)
    assert_same(x, torch.full((3,), 5.0))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
def test_bad_items_modify_nothing(backend, device):
    good = torch.full((4,), 5.0, device=device)
    for bad, exc, msg in [(torch.arange(3, device=device), TypeError, r"parameters\[1\].*torch.int64"),
                          (3.0, TypeError, r"parameters\[1\].*float"),
                          (None, TypeError, r"parameters\[1\].*NoneType")]:
        with pytest.raises(exc, match=msg):
            fg.clip_weights_([good, bad], 1.0, backend=backend)
        assert_same(good, torch.full((4,), 5.0, device=device))
    with pytest.raises(TypeError, match="parameters must be.*int"):
        fg.clip_weights_(3, 1.0, backend=backend)


def test_unknown_backend():
    x = torch.full((3,), 5.0)
    with pytest.raises(ValueError, match="'gpu'"):
        fg.clip_weights_([x], 1.0, backend="gpu")
    assert_same(x, torch.full((3,), 5.0))


@pytest.mark.skipif(not fg.backends()["cpu"]["available"], reason=fg.backends()["cpu"]["reason"])
def test_cpu_op_checks_its_arguments():
    # direct callers of the op get the same guarantees: typed errors, nothing modified
    x = torch.full((3,), 5.0)
    with pytest.raises(TypeError, match=r"tensors\[1\].*Long"):
        torch.ops.fastgan.clip_weights_([x, torch.arange(3)], -1.0, 1.0)
    with pytest.raises(ValueError, match="lo <= hi"):
        torch.ops.fastgan.clip_weights_([x], 1.0, -1.0)
    assert_same(x, torch.full((3,), 5.0))


# --------------------------------------------------------------------------------------------
# autograd, optimizer state
@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
def test_no_history_and_version_bump(backend, device):
    w = torch.nn.Parameter(torch.randn(6, 5, device=device))
    v0 = w._version
    fg.clip_weights_([w], 0.1, backend=backend)
    assert w.is_leaf and w.grad_fn is None and w.requires_grad
    assert w._version > v0
    # a weight saved for backward and then clipped: autograd must notice (as with eager clamp_)
    x = torch.randn(5, 6, device=device, requires_grad=True)
    y = (x @ w).sum()
    fg.clip_weights_([w], 0.01, backend=backend)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
def test_optimizer_state_stays_valid(backend, device):
    gen = torch.Generator().manual_seed(5)
    d1 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LeakyReLU(0.2), torch.nn.Linear(8, 1)).to(device)
    d2 = copy.deepcopy(d1)
    opts = [torch.optim.RMSprop(d.parameters(), lr=0.05) for d in (d1, d2)]
    for _ in range(3):
        x = torch.randn(16, 4, generator=gen).to(device)
        for d, opt in zip((d1, d2), opts):
            opt.zero_grad()
            d(x).mean().backward()
            opt.step()
        fg.clip_weights_(d1.parameters(), 0.05, backend=backend)
        with torch.no_grad():
            for p in d2.parameters():
                p.clamp_(-0.05, 0.05)
    for p1, p2 in zip(d1.parameters(), d2.parameters()):
        assert_same(p1, p2)
        assert opts[0].state[p1]["square_avg"].shape == p1.shape


# --------------------------------------------------------------------------------------------
# WeightClipper on a real WGAN critic step
def make_critic(device):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, 2, 1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(8, 16, 4, 2, 1), torch.nn.InstanceNorm2d(16, affine=True), torch.nn.LeakyReLU(0.2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 2 * 2, 1)).to(device)


def critic_step(D, opt, real, fake):
    loss = D(fake).mean() - D(real).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
@pytest.mark.parametrize("skip_1d", [False, True])
def test_weight_clipper_on_wgan_critic(backend, device, skip_1d):
    c = 0.01
    D1 = make_critic(device)
    D2 = copy.deepcopy(D1)
    opt1 = torch.optim.RMSprop(D1.parameters(), lr=5e-3)  # large lr: steps push weights past c
    opt2 = torch.optim.RMSprop(D2.parameters(), lr=5e-3)
    clipper = fg.WeightClipper(D1.parameters(), c, skip_1d=skip_1d, backend=backend).attach(opt1)
    assert len(clipper.params) == (3 if skip_1d else 8)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):  # the original WGAN: 5 critic steps, each followed by clipping
        real, fake = (torch.randn(4, 3, 8, 8, generator=gen).to(device) for _ in range(2))
        critic_step(D1, opt1, real, fake)
        critic_step(D2, opt2, real, fake)
        with torch.no_grad():  # the public WGAN code
            for p in D2.parameters():
                if not (skip_1d and p.dim() == 1):
                    p.data.clamp_(-c, c)
    for p1, p2 in zip(D1.parameters(), D2.parameters()):
        assert_same(p1, p2)
    biases_beyond_c = any(p.abs().max() > c for p in D1.parameters() if p.dim() == 1)
    assert biases_beyond_c == skip_1d
    clipper.detach()
    critic_step(D1, opt1, real, fake)
    assert max(float(p.detach().abs().max()) for p in D1.parameters()) > c  # no longer clipped


def test_weight_clipper_bad_optimizer():
    with pytest.raises(TypeError, match="optimizer.*list"):
        fg.WeightClipper([torch.zeros(2)], 0.1).attach([])


# --------------------------------------------------------------------------------------------
# torch.library contract
def ops():
    out = []
    if fg.backends()["cpu"]["available"]:
        out.append(("cpu", torch.ops.fastgan.clip_weights_))
    if "triton" in available_backends():
        from fastgan._triton import clip

        out.append(("triton", clip.clip_weights_))
    return out


@pytest.mark.parametrize("name,op", ops(), ids=[n for n, _ in ops()])
def test_opcheck(name, op):
    gen = torch.Generator().manual_seed(11)
    dev = device_for(name)  # the op on the device its backend runs on
    tensors = [rand((5, 3), torch.float32, dev, gen), rand((70,), torch.float64, dev, gen),
               rand((4, 6), torch.bfloat16, dev, gen, "transposed")]
    torch.library.opcheck(op, (tensors, -0.01, 0.02))


@pytest.mark.parametrize("backend", ["reference"] + [n for n, _ in ops()])
def test_torch_compile_fullgraph(backend):
    dev = device_for(backend)
    ws = [torch.randn(5, 3, device=dev), torch.randn(40, dtype=torch.float64, device=dev),
          torch.randn(4, 6, device=dev).t()]
    want = [expected(w, -0.5, 0.5) for w in ws]
    run = lambda ts: fg.clip_weights_(ts, 0.5, backend=backend)  # noqa: E731
    torch.compile(run, fullgraph=True, backend="aot_eager")(ws)
    for w, e in zip(ws, want):
        assert_same(w, e)


# --------------------------------------------------------------------------------------------
# issue 16: bounds only in the dtypes present; every item checked before any write
@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
@pytest.mark.parametrize("dtype,clip_value", [(torch.float32, 7e4), (torch.float32, (-1e5, 0.01)),
                                              (torch.float64, 1e39), (torch.float64, (-1e300, 1e-300)),
                                              (torch.bfloat16, (-1e5, 0.01))], ids=repr)
def test_bounds_not_converted_to_absent_dtypes(backend, device, dtype, clip_value):
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(50, generator=gen, dtype=torch.float64) * 1e5).to(device, dtype)
    check_clip([x], clip_value, backend)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
def test_bound_beyond_a_present_dtype_raises_before_any_write(backend, device):
    a = torch.full((4,), 1e5, device=device)
    h = torch.full((4,), 2.0, device=device, dtype=torch.float16)
    for bad in [7e4, (-1e5, 1.0)]:
        with pytest.raises(fg.ClipError, match=r"parameters\[1\].*float16.*overflow"):
            fg.clip_weights_([a, h], bad, backend=backend)
        assert isinstance(fg.ClipError("x"), RuntimeError)  # eager clamp_ raises RuntimeError here
    assert_same(a, torch.full((4,), 1e5, device=device))
    assert_same(h, torch.full((4,), 2.0, device=device, dtype=torch.float16))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=IDS)
@pytest.mark.parametrize("third", ["inference", "expanded"])
def test_whole_list_checked_before_any_write(backend, device, third):
    big = torch.full((6, 8), 5.0, device=device)
    dense = torch.full((10,), 5.0, device=device)
    if third == "inference":
        with torch.inference_mode():
            bad = torch.full((3,), 5.0, device=device)
        msg = r"parameters\[2\].*inference"
    else:
        bad = torch.full((1,), 5.0, device=device).expand(4)
        msg = r"parameters\[2\].*share memory"
    items = [big[:, ::2], dense, bad]
    with pytest.raises(fg.ClipError, match=msg):
        fg.clip_weights_(items, 1.0, backend=backend)
    assert_same(big, torch.full((6, 8), 5.0, device=device))
    assert_same(dense, torch.full((10,), 5.0, device=device))
    if third == "inference":  # inside inference mode, as eager clamp_, it is allowed
        with torch.inference_mode():
            fg.clip_weights_(items, 1.0, backend=backend)
        assert float(bad.max()) == 1.0 and float(big[:, 1].max()) == 5.0


@pytest.mark.skipif(not fg.backends()["cpu"]["available"], reason=fg.backends()["cpu"]["reason"])
def test_cpu_op_refuses_what_eager_refuses():
    x = torch.full((3,), 5.0)
    with pytest.raises(ValueError, match=r"tensors\[1\].*share memory"):
        torch.ops.fastgan.clip_weights_([x, torch.zeros(1).expand(3)], -1.0, 1.0)
    with pytest.raises(ValueError, match=r"tensors\[1\].*Half.*overflow"):
        torch.ops.fastgan.clip_weights_([x, torch.zeros(2, dtype=torch.half)], -7e4, 1.0)
    assert_same(x, torch.full((3,), 5.0))
    torch.ops.fastgan.clip_weights_([x], -7e4, 1.0)  # no half tensor: fine
    assert_same(x, torch.ones(3))


# --------------------------------------------------------------------------------------------
# issue 13: the CPU kernel's ISA and threading
@pytest.mark.skipif(not fg.backends()["cpu"]["available"], reason=fg.backends()["cpu"]["reason"])
def test_cpu_kernel_follows_torchs_isa():
    """The clamp loop runs the ISA torch's kernels run (ATEN_CPU_CAPABILITY included), where built."""
    import subprocess
    import sys

    code = "import torch, fastgan; print(torch.backends.cpu.get_cpu_capability(), torch.ops.fastgan.clip_cpu_isa())"
    import os
    for cap in [None, "avx2", "default"]:
        env = dict(os.environ)
        if cap:
            env["ATEN_CPU_CAPABILITY"] = cap
        torch_isa, ours = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                         check=True).stdout.split()
        check_isa_choice(torch_isa, ours)


@pytest.mark.skipif(not fg.backends()["cpu"]["available"], reason=fg.backends()["cpu"]["reason"])
@pytest.mark.parametrize("mode", ["adaptive", "serial", "parallel"])
def test_threading_modes_give_eager_results(mode):
    torch.ops.fastgan.clip_cpu_threading(mode)
    gen = torch.Generator().manual_seed(9)
    shapes = [(64, 3, 4, 4), (64,), (128, 64, 4, 4), (128,), (3, 7), (50000,)]
    tensors = [rand(s, dt, "cpu", gen) for s in shapes for dt in (torch.float32, torch.bfloat16)]
    for _ in range(3):  # adaptive: timed runs of both choices
        check_clip(tensors, 0.01, "cpu")
    with pytest.raises(ValueError, match="mode"):
        torch.ops.fastgan.clip_cpu_threading("fast")


@pytest.mark.skipif(not fg.backends()["cpu"]["available"], reason=fg.backends()["cpu"]["reason"])
def test_adaptive_splits_wherever_the_clamp_loop_splits():
    """issue 13: by default a list holding a tensor that torch's clamp_ splits between threads
    (above its grain, 32768 elements) is split on every call, never timed against one thread (the
    loop it replaces wakes the pool for that tensor anyway). One thread, serial mode and lists
    below two 128 KiB grains never split; values are eager's every time."""
    count = torch.ops.fastgan._clip_parallel_calls
    gen = torch.Generator().manual_seed(13)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.ops.fastgan.clip_cpu_threading("adaptive")  # fresh timings: the first calls would time both
        big = [rand(s, torch.float32, "cpu", gen) for s in [(64, 3, 4, 4), (64,), (32769,), (128, 64, 4, 4), (7,)]]
        before = count()
        for _ in range(6):
            check_clip(big, 0.01, "cpu")
            for t in big:  # out of bounds again for the next round
                t.mul_(3)
        assert count() - before == 6
        below = [rand(s, torch.float32, "cpu", gen) for s in [(40000,), (20000,)]]  # 234 KiB
        before = count()
        for _ in range(3):
            check_clip(below, 0.01, "cpu")
        assert count() == before
        torch.ops.fastgan.clip_cpu_threading("serial")
        check_clip(big, 0.01, "cpu")
        assert count() == before
        torch.ops.fastgan.clip_cpu_threading("adaptive")
        torch.set_num_threads(1)
        check_clip(big, 0.01, "cpu")
        assert count() == before
    finally:
        torch.set_num_threads(threads)
        torch.ops.fastgan.clip_cpu_threading("parallel")  # the module's fixture setting


# --------------------------------------------------------------------------------------------
# issue 16: WeightClipper lifecycle
def test_weight_clipper_refuses_a_consumed_generator():
    D = make_critic("cpu")
    params = D.parameters()
    torch.optim.RMSprop(params, lr=5e-5)  # consumes the generator
    with pytest.raises(ValueError, match="parameters.*empty"):
        fg.WeightClipper(params, 0.01)
    with pytest.raises(ValueError, match="parameters"):
        fg.WeightClipper([], 0.01)
    with pytest.raises(ValueError, match="skip_1d"):
        fg.WeightClipper([torch.zeros(3)], 0.01, skip_1d=True)


def test_weight_clipper_checks_backend_and_items_at_construction():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="'bogus'"):
        fg.WeightClipper([x], 0.01, backend="bogus")
    with pytest.raises(TypeError, match=r"parameters\[1\]"):
        fg.WeightClipper([x, torch.arange(3)], 0.01)
    with pytest.raises(fg.ClipError, match="overflow"):
        fg.WeightClipper([x.half()], 7e4)
    with pytest.raises(TypeError, match="skip_1d"):
        fg.WeightClipper([x], 0.01, skip_1d=1)


def test_weight_clipper_attach_is_idempotent_and_reports_its_optimizers():
    D = make_critic("cpu")
    opt = torch.optim.RMSprop(D.parameters(), lr=5e-3)
    c = fg.WeightClipper(D.parameters(), 0.01).attach(opt).attach(opt)
    assert c.attached == [opt] and "attached=1" in repr(c)
    assert len(opt._optimizer_step_post_hooks) == 1
    c.detach()
    assert c.attached == [] and "attached=0" in repr(c) and len(opt._optimizer_step_post_hooks) == 0


@pytest.mark.parametrize("how", ["pickle", "deepcopy-together", "deepcopy-alone"])
def test_copied_attached_clipper_clips_its_optimizers_copy(how):
    import pickle

    D = make_critic("cpu")
    opt = torch.optim.RMSprop(D.parameters(), lr=5e-3)
    clipper = fg.WeightClipper(D.parameters(), 0.01).attach(opt)
    if how == "pickle":
        D2, opt2, c2 = pickle.loads(pickle.dumps((D, opt, clipper)))
    elif how == "deepcopy-together":
        D2, opt2, c2 = copy.deepcopy((D, opt, clipper))
    else:
        c2 = copy.deepcopy(clipper)
        opt2 = c2.attached[0]
        D2 = None
    assert len(c2.attached) == 1 and c2.attached[0] is opt2 and opt2 is not opt
    assert all(any(p is q for q in opt2.param_groups[0]["params"]) for p in c2.params)
    if D2 is not None:
        assert all(p is q for p, q in zip(c2.params, D2.parameters()))
    # the copy clips after its optimizer's steps, the original after the original's
    gen = torch.Generator().manual_seed(4)
    for p in c2.params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt2.step()
    assert max(float(p.abs().max()) for p in c2.params) <= 0.01
    assert len(opt._optimizer_step_post_hooks) == 1


def test_use_backend_object_reenterable():
    ctx = fg.use_backend("reference")
    assert fg.get_backend() == "auto"
    with ctx:
        assert fg.get_backend() == "reference"
        with ctx:  # nested
            assert fg.get_backend() == "reference"
        assert fg.get_backend() == "reference"
    assert fg.get_backend() == "auto"
    with ctx:  # again later
        assert fg.get_backend() == "reference"
    assert fg.get_backend() == "auto"

    @fg.use_backend("reference")
    def inner():
        return fg.get_backend()

    assert inner() == "reference" and inner() == "reference" and fg.get_backend() == "auto"
    with pytest.raises(ValueError, match="'bogus'"):
        fg.use_backend("bogus")
