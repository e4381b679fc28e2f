"""Where the primitive's time goes at (64, 3*64*64) on CPU, with eager and torch.compile run in between
(the state `python -m fastgan bench` measures in): medians over rounds, microseconds.

    python benchmarks/gnp_floor.py [rounds]

* eager / compile / fastgan: fwd+bwd as in the benchmark (autograd.grad of the penalty w.r.t. g);
* fastgan fwd / bwd: the public call, then autograd.grad, timed apart;
* ops fwd / bwd: the two CPU kernels called directly (no autograd, no Python wrapper);
* autograd.grad(g.sum()): the cost of any autograd.grad call here, a floor for every contender;
* page faults per call of eager and fastgan (glibc returns freed multi-MB blocks to the kernel).
"""
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastgan as fg  # noqa: E402
from fastgan.bench import eager_penalty  # noqa: E402


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main(rounds=300):
    torch.manual_seed(0)
    g = torch.randn(64, 3 * 64 * 64, requires_grad=True)
    gd = g.detach()
    ops = torch.ops.fastgan
    n, one = gd.norm(dim=1), torch.tensor(1.0)
    cf = torch.compile(eager_penalty)
    contenders = {
        "eager": lambda: torch.autograd.grad(eager_penalty(g), g)[0],
        "compile": lambda: torch.autograd.grad(cf(g), g)[0],
        "fastgan": lambda: torch.autograd.grad(fg.grad_norm_penalty(g, backend="cpu"), g)[0],
    }
    for f in contenders.values():
        for _ in range(20):
            f()
    t = {k: [] for k in list(contenders) + ["fastgan fwd", "fastgan bwd", "ops fwd", "ops bwd", "autograd.grad(g.sum())"]}
    flt = {"eager": 0, "fastgan": 0}

    def others(skip=()):
        for k, f in contenders.items():
            if k not in skip:
                f()

    for _ in range(rounds):
        for k, f in contenders.items():
            others(skip=(k,))
            f0, t0 = faults(), time.perf_counter()
            f()
            t[k].append(time.perf_counter() - t0)
            if k in flt:
                flt[k] += faults() - f0
        others()
        t0 = time.perf_counter()
        p = fg.grad_norm_penalty(g, backend="cpu")
        t1 = time.perf_counter()
        torch.autograd.grad(p, g)
        t["fastgan fwd"].append(t1 - t0)
        t["fastgan bwd"].append(time.perf_counter() - t1)
        others()
        t0 = time.perf_counter()
        ops.gnp_loss(gd, 1.0, 2.0, False, 1 / 64)
        t1 = time.perf_counter()
        ops.gnp_loss_backward(one, gd, n, 1.0, 2.0, False, 1 / 64)
        t["ops fwd"].append(t1 - t0)
        t["ops bwd"].append(time.perf_counter() - t1)
        others()
        t0 = time.perf_counter()
        torch.autograd.grad(g.sum(), g)
        t["autograd.grad(g.sum())"].append(time.perf_counter() - t0)
    print(f"threads {torch.get_num_threads()}, rounds {rounds}, loadavg {os.getloadavg()[0]:.2f}")
    for k, v in t.items():
        print(f"  {k:24s} {statistics.median(v) * 1e6:8.0f} us")
    for k, v in flt.items():
        print(f"  page faults per {k} call: {v / rounds:.0f}")
    print(f"  eager / fastgan: {statistics.median(t['eager']) / statistics.median(t['fastgan']):.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
