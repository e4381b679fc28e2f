"""Shared test setup.

Triton kernels run on CPU tensors through the interpreter; TRITON_INTERPRET must be set before
triton is imported, so it is set here when no GPU is visible.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fastgan._inductor_cache import separate_inductor_cache  # noqa: E402

separate_inductor_cache()  # runs under another ATEN_CPU_CAPABILITY must not reuse this one's kernels

import pytest  # noqa: E402

import fastgan  # noqa: E402

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# relative-error tolerances against a float64 computation, per input dtype
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def available_backends(include_reference=False):
    st = fastgan.backends()
    names = [n for n in ("cpu", "cuda", "triton") if st[n]["available"]]
    return (["reference"] if include_reference else []) + names


def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def device_for(backend, cuda_available=None):
    """The device a backend's kernels run on here: ``cuda`` for cuda; for triton ``cuda`` when a
    GPU is visible (TRITON_INTERPRET is then unset, so Triton cannot take CPU tensors) else ``cpu``
    (the interpreter); ``cpu`` for cpu and reference."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if backend == "cuda" or (backend == "triton" and cuda):
        return "cuda"
    return "cpu"


def backend_devices(backends=None, cuda_available=None):
    """(backend, device) pairs that can run here: each backend on the device it runs on (the
    reference is left out: callers add the pairs they want)."""
    backends = available_backends() if backends is None else backends
    return [(b, device_for(b, cuda_available)) for b in backends if b != "reference"]


def check_isa_choice(torch_isa, ours):
    """A kernel file's copy (``ours``: "AVX512", "AVX2", "DEFAULT") against torch's choice: AVX512
    where torch runs AVX512 and the CPU and build have it, never AVX512 otherwise, and never more
    than torch allows but the build's AVX2 base."""
    if torch_isa == "AVX512":
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags and os.environ.get("FASTGAN_NO_AVX512") != "1":
            assert ours == "AVX512"
    else:
        assert ours in (torch_isa, "AVX2") and ours != "AVX512"


def rel_err(a, b):
    """max |a - b| / max |b| in float64 (0 when both are zero); either may be on a GPU."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    den = b.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    return float((a - b).abs().max() / den)


@pytest.fixture
def small_triton_blocks(monkeypatch):
    """Tiny Triton blocks so small test shapes exercise row splitting and loops (interpreter is slow)."""
    from fastgan._triton import grad_norm

    monkeypatch.setattr(grad_norm, "BLOCK", 16)
    monkeypatch.setattr(grad_norm, "TARGET_PROGRAMS", 8)
    monkeypatch.setattr(grad_norm, "FINAL_ROWS", 4)
    monkeypatch.setattr(grad_norm, "FINAL_SPLITS", 4)  # _finalize steps over the splits more than once


def leave_process_group():
    """A rank's last step: ``destroy_process_group`` after a short sleep. torch 2.13 + gloo can
    deadlock in it right after a collective (README, Multi-GPU); the sleep lets gloo's worker thread
    finish first (0 hangs in 40 runs). Every distributed test worker ends through here."""
    import time

    import torch.distributed as dist

    time.sleep(0.1)
    dist.destroy_process_group()


def run_ranks(worker, world, deadline_s, what="worker"):
    """Runs ``worker(rank, init_file, out_dir)`` in ``world`` spawned processes (file rendezvous: no port
    to pick) and returns each rank's ``torch.load(out_dir/rank{r}.pt)``; a rank that hangs past
    ``deadline_s`` is killed and fails the test, one whose result holds "worker" (a traceback) too."""
    import tempfile
    import time

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=worker, args=(r, init_file, tmp), daemon=True) for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + deadline_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for r in hung:
            procs[r].kill()
            procs[r].join()
        if hung:
            pytest.fail(f"{what} ranks {hung} did not finish within {deadline_s} s")
        out = []
        for r in range(world):
            path = os.path.join(tmp, f"rank{r}.pt")
            assert os.path.exists(path), f"rank {r} exited with code {procs[r].exitcode} and no result"
            res = torch.load(path)
            assert "worker" not in res, f"rank {r} failed:\n{res['worker']}"
            out.append(res)
        return out


def ddp(**kw):
    """Critic wrapper for the 2-process tests: DistributedDataParallel with ``kw``."""
    return lambda D: torch.nn.parallel.DistributedDataParallel(D, **kw)


def fsdp(per_layer):
    """Critic wrapper for the 2-process tests: FSDP2 ``fully_shard`` (each Linear too if ``per_layer``)."""
    def wrap(D):
        from torch.distributed.fsdp import fully_shard

        if per_layer:
            for m in D:
                if isinstance(m, torch.nn.Linear):
                    fully_shard(m)
        return fully_shard(D)
    return wrap
