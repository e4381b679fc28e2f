"""Weight clipping, contenders interleaved: per-tensor loop vs foreach vs fastgan, round-robin.

    python benchmarks/clip_interleaved.py [rounds]

pytest-benchmark (test_bench_clip.py) times one contender after another; on a shared machine the
load changes between them. Here every round runs all contenders in a random order on the same
parameter lists, so they see the same load; the medians of rounds after 50 warm-up rounds are
printed, with fastgan's time over the faster eager contender's (< 1: fastgan is faster). Set
OMP_NUM_THREADS to fix the thread count. The CPU kernel's ISA (torch's choice, AVX-512 where
present) and its threading (serial or parallel, picked by timing) are printed too.
"""
import os
import random
import statistics
import sys
import time

import torch

import fastgan as fg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_bench_clip import LISTS, impls  # noqa: E402


def main(rounds=600, warmup=50):
    if fg.backends()["cpu"]["available"]:
        print(f"clip CPU kernel: {torch.ops.fastgan.clip_cpu_isa()}, threading "
              f"{torch.ops.fastgan.clip_cpu_threading('')}; torch: {torch.backends.cpu.get_cpu_capability()}")
    rng = random.Random(0)
    fns = impls("cpu")
    for lst, shapes in LISTS.items():
        g = torch.Generator().manual_seed(1)
        params = [torch.randn(s, generator=g) * 0.02 for s in shapes]
        times = {k: [] for k in fns}
        for r in range(rounds):
            order = list(fns)
            rng.shuffle(order)
            for k in order:
                t0 = time.perf_counter()
                fns[k](params, -0.01, 0.01)
                if r >= warmup:
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        best_eager = min(med["loop"], med["foreach"])
        ratio = "  ".join(f"{k}/eager {m / best_eager:.2f}" for k, m in med.items() if k.startswith("fastgan"))
        print(f"{lst} ({torch.get_num_threads()} threads): "
              + "  ".join(f"{k} {m * 1e6:.0f} us" for k, m in med.items()) + f"   [{ratio}]")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
