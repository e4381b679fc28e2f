"""fastgan under DistributedDataParallel: real 2-process gloo runs on loopback.

One spawn (two worker processes) runs every scenario, because starting a process that imports
torch costs seconds on the 2-core CI machine. Each rank trains on its half of a global batch;
the parent replays the same steps in one process on the whole batch (same init, same alpha/noise)
and every rank's final parameters must equal that replay to float64 tolerance. A rank that stepped
on unsynchronised (local) gradients lands ~1e-2 away, far outside the tolerance.
"""
import os
import signal
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import fastgan as fg
from conftest import ddp, fsdp, leave_process_group, run_ranks

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch built without gloo")

WORLD = 2
LOCAL = 4                 # samples per rank; the single-process replay sees WORLD * LOCAL
STEPS = 2
LR = 0.05
CLIP = 0.3
TOL = 1e-10               # float64; unsynchronised gradients give differences ~1e-2
DEADLINE_S = 240          # the whole spawn (process start + all scenarios), generous for a loaded machine


# --- the models and the training steps, shared by the workers and the single-process replay ----
def critic():
    """The last Linear's bias gets no gradient from any penalty: the case DDP mishandles."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.LeakyReLU(0.2),
                         nn.Linear(8, 1)).double()


def batch(step, part=None):
    """Global batch of step `step`; `part=r` is rank r's contiguous slice of it."""
    g = torch.Generator().manual_seed(100 + step)
    n = WORLD * LOCAL
    b = dict(real=torch.randn(n, 6, generator=g, dtype=torch.float64),
             fake=torch.randn(n, 6, generator=g, dtype=torch.float64) + 0.5,
             alpha=torch.rand(n, generator=g, dtype=torch.float64),
             noise=torch.randn(n, 6, generator=g, dtype=torch.float64))
    if part is not None:
        b = {k: v[part * LOCAL:(part + 1) * LOCAL] for k, v in b.items()}
    return b


def step_wgan_gp(D, opt, b):
    loss = D(b["fake"]).mean() - D(b["real"]).mean() + fg.gradient_penalty(D, b["real"], b["fake"], alpha=b["alpha"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_r1_lazy(D, opt, b):
    """Non-saturating loss, then R1 backpropagated ON ITS OWN (StyleGAN's lazy regularization)."""
    loss = F.softplus(D(b["fake"])).mean() + F.softplus(-D(b["real"])).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    fg.r1_penalty(D, b["real"]).backward()
    opt.step()


def step_dragan(D, opt, b):
    ones, zeros = torch.ones(b["real"].shape[0], 1, dtype=torch.float64), torch.zeros(b["real"].shape[0], 1, dtype=torch.float64)
    loss = (F.binary_cross_entropy_with_logits(D(b["real"]), ones)
            + F.binary_cross_entropy_with_logits(D(b["fake"]), zeros)
            + fg.dragan_penalty(D, b["real"], noise=b["noise"]))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_penalties_alone(D, opt, b):
    """WGAN-div, LP and R2 each backpropagated on their own (the tie-in is what makes them sync)."""
    for loss in (lambda: fg.wgan_div_penalty(D, b["real"], b["fake"]),
                 lambda: fg.lipschitz_penalty(D, b["real"], b["fake"], alpha=b["alpha"]),
                 lambda: fg.r2_penalty(D, b["fake"])):
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()


def step_r1_lambda(D, opt, b):
    """The critic reaches fastgan as a plain callable around the DDP module (conditional critics)."""
    opt.zero_grad(set_to_none=True)
    fg.r1_penalty(lambda x: D(x) * 2.0, b["real"]).backward()
    opt.step()


def step_wgan(D, opt, b):
    loss = D(b["fake"]).mean() - D(b["real"]).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_wgan_clip(D, opt, b):
    step_wgan(D, opt, b)
    fg.clip_weights_(D.parameters(), CLIP)


def step_wgan_clipper(D, opt, b):
    if not hasattr(opt, "clipper"):
        opt.clipper = fg.WeightClipper(D.parameters(), CLIP).attach(opt)
    step_wgan(D, opt, b)


def sn_critic(batched):
    def make():
        D = critic()
        if batched:
            return fg.apply_spectral_norm(D)
        for m in D:
            if isinstance(m, nn.Linear):
                fg.spectral_norm(m)
        return D
    return make


SCENARIOS = {
    # name: (step function, wrapper, critic factory)
    "wgan_gp": (step_wgan_gp, ddp(), critic),
    "wgan_gp_find_unused": (step_wgan_gp, ddp(find_unused_parameters=True), critic),
    "r1_lazy": (step_r1_lazy, ddp(), critic),
    "r1_lazy_find_unused": (step_r1_lazy, ddp(find_unused_parameters=True), critic),
    "dragan": (step_dragan, ddp(), critic),
    "penalties_alone": (step_penalties_alone, ddp(), critic),
    "r1_lambda": (step_r1_lambda, ddp(), critic),
    # spectral norm: D(fake), D(real) and the penalty's D(x̂) before one backward; u, v compared too
    "sn_wgan_gp_broadcast_buffers": (step_wgan_gp, ddp(broadcast_buffers=True), sn_critic(False)),
    "sn_wgan_gp_no_broadcast_buffers": (step_wgan_gp, ddp(broadcast_buffers=False), sn_critic(False)),
    "sn_batched_wgan_gp_broadcast_buffers": (step_wgan_gp, ddp(broadcast_buffers=True), sn_critic(True)),
    "sn_batched_wgan_gp_no_broadcast_buffers": (step_wgan_gp, ddp(broadcast_buffers=False), sn_critic(True)),
    "sn_batched_r1_lazy": (step_r1_lazy, ddp(), sn_critic(True)),
    # weight clipping after a DDP step (CLIP cuts some weights, not all: the steps still matter)
    "clip_weights_": (step_wgan_clip, ddp(), critic),
    "weight_clipper": (step_wgan_clipper, ddp(), critic),
    # FSDP2 (fully_shard) with spectral norm: sharded weights
    "fsdp_sn_root": (step_wgan, fsdp(False), sn_critic(False)),
    "fsdp_sn_per_layer": (step_wgan, fsdp(True), sn_critic(False)),
    "fsdp_sn_batched_root": (step_wgan, fsdp(False), sn_critic(True)),
    "fsdp_sn_batched_per_layer": (step_wgan, fsdp(True), sn_critic(True)),
}


def state(D):
    """Parameters (FSDP's shards gathered) and buffers (spectral norm's u, v) as plain tensors."""
    from torch.distributed.tensor import DTensor

    full = [p.full_tensor() if isinstance(p, DTensor) else p for p in D.parameters()]
    return [t.detach().clone() for t in full + list(D.buffers())]


def replay(name):
    """The single-process run on the global batch: the state every rank must hold after each step."""
    step_fn, _, make = SCENARIOS[name]
    D = make()
    opt = torch.optim.SGD(D.parameters(), lr=LR)
    out = []
    for s in range(STEPS):
        step_fn(D, opt, batch(s))
        out.append(state(D))
    return out


# --- the worker ------------------------------------------------------------------------------
def _value_error(fn):
    """The message of the ValueError that fn() raises, or None when it raises nothing."""
    try:
        fn()
    except ValueError as e:
        return str(e)
    return None


def _worker(rank, init_file, out_dir):
    result = {}
    try:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"          # loopback only
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
        for name, (step_fn, wrap, make) in SCENARIOS.items():
            result[name] = run = dict(states=[], error=None)   # state after each step
            try:
                D = wrap(make())
                opt = torch.optim.SGD(D.parameters(), lr=LR)
                for s in range(STEPS):
                    step_fn(D, opt, batch(s, rank))
                    run["states"].append(state(D))
            except Exception:
                run["error"] = traceback.format_exc()
            dist.barrier()

        # static_graph=True cannot sync a penalty: fastgan must refuse before DDP's forward runs
        D = nn.parallel.DistributedDataParallel(critic(), static_graph=True)
        result["static_graph"] = _value_error(lambda: fg.r1_penalty(D, batch(0, rank)["real"]))
        dist.barrier()

        # a sharded weight read outside its module's forward: a clear error naming FSDP
        from torch.distributed.fsdp import fully_shard

        D = sn_critic(False)()
        fully_shard(D[0])
        fully_shard(D)
        result["fsdp_outside_forward"] = _value_error(lambda: D[0].weight)
        # ... and a penalty through an FSDP critic (FSDP frees the weights the double backward needs)
        result["fsdp_penalty"] = _value_error(lambda: fg.r1_penalty(D, batch(0, rank)["real"]))
        dist.barrier()
        leave_process_group()
    except Exception:
        result["worker"] = traceback.format_exc()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ranks():
    """Runs all scenarios in 2 gloo processes; returns [rank0 results, rank1 results]."""
    return run_ranks(_worker, WORLD, DEADLINE_S, "DDP worker")


def _check(ranks, name):
    want = replay(name)
    for r, res in enumerate(ranks):
        run = res[name]
        # values first: a skipped all-reduce shows as a wrong step before DDP's own error (if any)
        for s, (got_s, want_s) in enumerate(zip(run["states"], want)):
            assert len(got_s) == len(want_s)
            for i, (a, b) in enumerate(zip(got_s, want_s)):
                err = float((a - b).abs().max())
                assert err < TOL, (f"{name}: after step {s}, rank {r} tensor {i} (parameters, then buffers) "
                                   f"differs from the single-process run by {err:.3g}")
        assert run["error"] is None, f"rank {r} raised in {name}:\n{run['error']}"
        assert len(run["states"]) == STEPS
    # and the ranks agree bitwise with each other (spectral norm's u, v included)
    for s, (a_s, b_s) in enumerate(zip(ranks[0][name]["states"], ranks[1][name]["states"])):
        assert all(torch.equal(a, b) for a, b in zip(a_s, b_s)), f"{name}: ranks differ after step {s}"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_ddp_matches_single_process(ranks, name):
    _check(ranks, name)


@pytest.mark.parametrize("key, words", [("static_graph", "static_graph=True"),
                                        ("fsdp_outside_forward", "FSDP"),
                                        ("fsdp_penalty", "FSDP")])
def test_unsupported_setups_raise(ranks, key, words):
    """DDP(static_graph=True) with a penalty, a sharded SN weight read outside its FSDP module's
    forward, a penalty through an FSDP critic: a ValueError that names the cause."""
    for res in ranks:
        assert res[key] is not None and words in res[key], res[key]


def test_tie_in_is_exact():
    """The tie leaves the value and the gradient w.r.t. g untouched and sends exactly zero to out,
    even where out holds inf (``out.sum() * 0`` would turn the loss into NaN)."""
    from fastgan.distributed import tie_in

    w = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    out = w * 1e308 * 10.0                      # [5e308 -> inf, inf, inf]: overflow from finite weights
    assert torch.isinf(out).all()
    g = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = (tie_in(g, out) ** 2).sum()
    assert torch.equal(loss, (g ** 2).sum())
    gw, gg = torch.autograd.grad(loss, (w, g))
    assert torch.equal(gg, 2 * g) and torch.equal(gw, torch.zeros(3, dtype=torch.float64))


def test_readme_ddp_snippet_runs(tmp_path):
    """The README's Multi-GPU script, shortened to a few iterations, under torchrun with 2 gloo
    processes (--standalone: the rendezvous port is picked by the OS); it asserts at its end that
    the ranks' critics are bitwise identical."""
    import pathlib
    import re
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Multi-GPU"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "snippet.py").write_text(code)
    # main() returns and the interpreter exits normally, as when a user runs the script (the
    # snippet's sleep before destroy_process_group avoids a gloo teardown deadlock seen here)
    (tmp_path / "run.py").write_text(
        "import os, runpy\n"
        "open(f'worker.{os.getpid()}.pid', 'w').close()\n"
        f"runpy.run_path({str(tmp_path / 'snippet.py')!r}, run_name='snippet')['main'](iters=3, n_critic=2)\n"
        "print('snippet main() returned', flush=True)\n")
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    # output to a file, not a pipe: a stray worker holding a pipe open cannot block the test
    with open(tmp_path / "torchrun.log", "w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 str(tmp_path / "run.py")], env=env, stdout=log, stderr=subprocess.STDOUT,
                                text=True, cwd=tmp_path, start_new_session=True)
        try:
            proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            # torchrun's workers run in sessions of their own: kill them by pid, then torchrun
            for f in tmp_path.glob("worker.*.pid"):
                try:
                    os.kill(int(f.name.split(".")[1]), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.seek(0)
        out = log.read()
    assert proc.returncode == 0, out[-3000:]
    assert out.count("snippet main() returned") == 2, out[-3000:]
    assert "iter 0: loss_d" in out
