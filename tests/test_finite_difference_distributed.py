"""method="finite_difference" under DDP and FSDP2 (fully_shard): 2-process gloo runs on loopback.

As tests/test_ddp.py: one spawn runs every scenario; each rank trains on its half of a global
batch and its parameters after every step must equal a single-process replay on the whole batch.
The critic is smooth (tanh/GELU) in float64; finite-difference steps are per sample, so a rank's
result does not depend on the other rank's samples. The exact path through FSDP stays refused
with an error naming finite_difference and set_reshard_after_backward.
"""
import os
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

WORLD, LOCAL, STEPS, LR = 2, 4, 2, 0.05
TOL = 1e-9        # float64; unsynchronised gradients land ~1e-2 away
DEADLINE_S = 240
FD = "finite_difference"


def critic():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.GELU(), nn.Linear(8, 1)).double()


def batch(step, part=None):
    g = torch.Generator().manual_seed(100 + step)
    n = WORLD * LOCAL
    b = dict(real=torch.randn(n, 6, generator=g, dtype=torch.float64),
             fake=torch.randn(n, 6, generator=g, dtype=torch.float64) + 0.5,
             alpha=torch.rand(n, generator=g, dtype=torch.float64))
    if part is not None:
        b = {k: v[part * LOCAL:(part + 1) * LOCAL] for k, v in b.items()}
    return b


def step_wgan_gp(D, opt, b):
    loss = D(b["fake"]).mean() - D(b["real"]).mean() + fg.gradient_penalty(D, b["real"], b["fake"], alpha=b["alpha"],
                                                                           method=FD)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_r1_lazy(D, opt, b):
    """R1 backpropagated on its own: every parameter must still be all-reduced."""
    loss = F.softplus(D(b["fake"])).mean() + F.softplus(-D(b["real"])).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    fg.r1_penalty(D, b["real"], method=FD).backward()
    opt.step()


def step_approx_r1(D, opt, b):
    s = D(b["real"])
    loss = F.softplus(-s).mean() + F.softplus(D(b["fake"])).mean() + fg.approx_r1_penalty(
        D, b["real"], noise=b["fake"], scores=s)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


SCENARIOS = {
    "ddp_wgan_gp": (step_wgan_gp, ddp()),
    "ddp_wgan_gp_find_unused": (step_wgan_gp, ddp(find_unused_parameters=True)),
    "ddp_r1_lazy": (step_r1_lazy, ddp()),
    "ddp_approx_r1": (step_approx_r1, ddp()),
    "fsdp_root_wgan_gp": (step_wgan_gp, fsdp(False)),
    "fsdp_per_layer_wgan_gp": (step_wgan_gp, fsdp(True)),
    "fsdp_per_layer_r1_lazy": (step_r1_lazy, fsdp(True)),
    "fsdp_approx_r1": (step_approx_r1, fsdp(True)),
}


def state(D):
    from torch.distributed.tensor import DTensor

    return [(p.full_tensor() if isinstance(p, DTensor) else p).detach().clone() for p in D.parameters()]


def replay(name):
    step_fn, _ = SCENARIOS[name]
    D = critic()
    opt = torch.optim.SGD(D.parameters(), lr=LR)
    out = []
    for s in range(STEPS):
        step_fn(D, opt, batch(s))
        out.append(state(D))
    return out


def _worker(rank, init_file, out_dir):
    result = {}
    try:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
        for name, (step_fn, wrap) in SCENARIOS.items():
            result[name] = run = dict(states=[], error=None)
            try:
                D = wrap(critic())
                opt = torch.optim.SGD(D.parameters(), lr=LR)
                for s in range(STEPS):
                    step_fn(D, opt, batch(s, rank))
                    run["states"].append(state(D))
            except Exception:
                run["error"] = traceback.format_exc()
            dist.barrier()
        # the exact path through FSDP: a clear error naming both ways out
        from torch.distributed.fsdp import fully_shard

        D = fully_shard(critic())
        try:
            fg.r1_penalty(D, batch(0, rank)["real"])
            result["fsdp_exact"] = None
        except ValueError as e:
            result["fsdp_exact"] = str(e)
        dist.barrier()
        leave_process_group()
    except Exception:
        result["worker"] = traceback.format_exc()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ranks():
    return run_ranks(_worker, WORLD, DEADLINE_S)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_matches_single_process(ranks, name):
    want = replay(name)
    for r, res in enumerate(ranks):
        run = res[name]
        assert run["error"] is None, f"rank {r} raised in {name}:\n{run['error']}"
        assert len(run["states"]) == STEPS
        for s, (got_s, want_s) in enumerate(zip(run["states"], want)):
            for i, (a, b) in enumerate(zip(got_s, want_s)):
                err = float((a - b).abs().max())
                assert err < TOL, f"{name}: step {s}, rank {r}, parameter {i} differs by {err:.3g}"
        # and the step did something: the parameters moved
        assert float((run["states"][-1][0] - critic()[0].weight.detach()).abs().max()) > 1e-4


def test_fsdp_exact_path_error(ranks):
    for res in ranks:
        msg = res["fsdp_exact"]
        assert msg is not None and "finite_difference" in msg and "set_reshard_after_backward" in msg, msg
