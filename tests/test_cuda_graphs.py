"""CUDA graph capture of every op family, on each GPU backend explicitly ("auto" would test the
reference on CUDA tensors, since no GPU kernel is in "auto" before it passed on a GPU).

Each test warms up on a side stream (as torch.cuda.graphs asks; the clip chunk table is built
then), captures one call, writes new input values into the captured tensors, replays, and compares
with an eager call of the reference. GPU only: skipped on a CPU machine.
"""
import copy

import pytest
import torch
from conftest import rel_err
from torch import nn

import fastgan as fg
from fastgan import reference

GPU_BACKENDS = ["cuda", "triton"]


def _need(backend):
    if not torch.cuda.is_available():
        pytest.skip("CUDA graph capture needs a GPU")
    st = fg.backends()[backend]
    if not st["available"]:
        pytest.fail(f"backend {backend!r} is not available on this GPU machine: {st['reason']}")


def _capture(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g, out


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_penalty_graph(backend, dtype):
    _need(backend)
    grads = torch.randn(8, 3000, device="cuda", dtype=dtype)
    g, out = _capture(lambda: fg.grad_norm_penalty(grads, target=1.0, power=2.0, reduction="none", backend=backend))
    for seed in (1, 2):
        grads.copy_(torch.randn(8, 3000, generator=torch.Generator().manual_seed(seed), dtype=dtype))
        g.replay()
        torch.cuda.synchronize()
        want = reference.gnp_forward(grads.cpu(), 1.0, 2.0, False)[0]
        assert rel_err(out, want) <= (1e-12 if dtype == torch.float64 else 1e-5), seed


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_clip_graph(backend):
    _need(backend)
    ts = [torch.randn(n, device="cuda") for n in (5, 70000, 300)] + [torch.randn(40, device="cuda").half()]
    g, _ = _capture(lambda: fg.clip_weights_(ts, 0.01, backend=backend))
    gen = torch.Generator().manual_seed(3)
    for t in ts:
        t.copy_(torch.randn(t.shape, generator=gen))
    want = [t.clone().clamp_(-0.01, 0.01) for t in ts]
    g.replay()
    torch.cuda.synchronize()
    for t, w in zip(ts, want):
        assert torch.equal(t, w)


class _Critic(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.fc = nn.Linear(8 * 4 * 4, 1)

    def forward(self, x):
        return self.fc(torch.nn.functional.leaky_relu(self.c1(x), 0.2).flatten(1))


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("batched", [True, False])
def test_spectral_norm_graph(backend, batched):
    _need(backend)
    torch.manual_seed(0)
    D = _Critic().cuda()
    if batched:
        fg.apply_spectral_norm(D, backend=backend)
    else:
        for m in (D.c1, D.fc):
            fg.spectral_norm(m, backend=backend)
    x = torch.randn(2, 3, 8, 8, device="cuda")
    with torch.no_grad():
        g, out = _capture(lambda: D(x))
        twin = copy.deepcopy(D)  # the state the replay starts from (training mode: u, v move)
        x.copy_(torch.randn(2, 3, 8, 8))
        g.replay()
        torch.cuda.synchronize()
        with fg.use_backend("reference"):
            want = twin(x)
    assert torch.isfinite(out).all()
    assert rel_err(out, want) <= 1e-5
