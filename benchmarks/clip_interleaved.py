"""Weight clipping, contenders interleaved: per-tensor loop vs foreach vs fastgan, round-robin.

    python benchmarks/clip_interleaved.py [rounds] [--after-step] [--lists a,b,...]

pytest-benchmark (test_bench_clip.py) times one contender after another; on a shared machine the
load changes between them. Here every round runs all contenders in a random order on the same
parameter lists, so they see the same load; the medians of rounds after 50 warm-up rounds are
printed, with fastgan's time over the loop's, over foreach's and over the faster of the two
(< 1: fastgan is faster). Set OMP_NUM_THREADS to fix the thread count. The CPU kernel's ISA
(torch's choice, AVX-512 where present) and its threading mode are printed too, and the load
average before and after.

--after-step: before each timed contender, an untimed RMSprop step (lr 5e-5, WGAN's) on the list
with fixed random gradients, as in training: the weights were just written (the optimizer swept
the list forwards) and about half sit beyond the bounds again. Without it, every contender
re-clamps already-clipped weights that the previous contender left in cache.
"""
import argparse
import os
import random
import statistics
import sys
import time

import torch

import fastgan as fg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_bench_clip import LISTS, impls  # noqa: E402


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main(rounds=600, warmup=50, after_step=False, lists=None):
    if fg.backends()["cpu"]["available"]:
        print(f"clip CPU kernel: {torch.ops.fastgan.clip_cpu_isa()}, threading "
              f"{torch.ops.fastgan.clip_cpu_threading('')}; torch {torch.__version__}: "
              f"{torch.backends.cpu.get_cpu_capability()}; {torch.get_num_threads()} threads; "
              f"after_step={after_step}; load average {loadavg()}")
    rng = random.Random(0)
    fns = impls("cpu")
    for lst in lists or LISTS:
        shapes = LISTS[lst]
        g = torch.Generator().manual_seed(1)
        params = [torch.randn(s, generator=g) * 0.02 for s in shapes]
        step = lambda: None  # noqa: E731
        if after_step:
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt = torch.optim.RMSprop(params, lr=5e-5)
            step = opt.step
        times = {k: [] for k in fns}
        with torch.no_grad():
            for r in range(rounds + warmup):
                order = list(fns)
                rng.shuffle(order)
                for k in order:
                    step()
                    t0 = time.perf_counter()
                    fns[k](params, -0.01, 0.01)
                    if r >= warmup:
                        times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = "  ".join(f"{k}/loop {m / med['loop']:.2f} {k}/foreach {m / med['foreach']:.2f} "
                           f"{k}/eager {m / min(med['loop'], med['foreach']):.2f}"
                           for k, m in med.items() if k.startswith("fastgan"))
        print(f"{lst} ({len(params)} tensors, {sum(p.numel() for p in params)} floats, "
              f"{torch.get_num_threads()} threads): "
              + "  ".join(f"{k} {m * 1e6:.0f} us" for k, m in med.items()) + f"   [{ratios}]", flush=True)
    print(f"load average {loadavg()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("rounds", nargs="?", type=int, default=600)
    ap.add_argument("--after-step", action="store_true")
    ap.add_argument("--lists", default=None, help=f"comma-separated subset of {','.join(LISTS)}")
    a = ap.parse_args()
    main(a.rounds, after_step=a.after_step, lists=a.lists.split(",") if a.lists else None)
