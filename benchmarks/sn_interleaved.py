"""Spectral-norm overhead, contenders interleaved: none / torch / fg_layer / fg_batched, round-robin.

    FASTGAN_BENCH_THREADS=1 python benchmarks/sn_interleaved.py [rounds] [critic ...]

pytest-benchmark (test_bench_spectral_norm.py) times one variant after another; on a shared machine
the load changes between them. Here every round runs all variants in a random order, so they see
the same load. Printed per critic (medians over rounds after warm-up, microseconds):

* ``fwd``: training-mode critic forward, batch 64 (autograd recording, as in a critic step);
* ``ovh``: the issue's SN overhead = median over rounds of fwd(variant) - fwd(none) in the same round;
* ``sn``: the SN-only work of one training forward (power iterations + every layer's W / sigma);
* the memory floor: bytes of W read by one power-iteration sweep plus W read / W/sigma written by
  the normalization, at the copy bandwidth measured here on a buffer of the same total size,
  twice: ``hot`` (the copy repeated back to back: caches warm, as no critic step leaves them) and
  ``in-loop`` (the same copy + read as one more contender of the round-robin, so it runs in the
  cache state the sn-only work sees, mostly right after a critic forward has evicted W).
"""
import os
import random
import statistics
import sys
import time

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_HERE), _HERE]  # this checkout's fastgan, not an installed one
from test_bench_spectral_norm import BATCH, CRITICS, VARIANTS, build, sn_layers, sn_only  # noqa: E402


def copy_floor_us(numel, reps=400):
    """Time of reading numel floats and writing numel floats (one copy), median, microseconds."""
    src, dst = torch.randn(numel), torch.empty(numel)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def main(rounds=300, critics=None, warmup=30):
    rng = random.Random(0)
    x = torch.randn(BATCH, 3, 32, 32)
    import fastgan

    print(f"fastgan from {os.path.dirname(fastgan.__file__)}, threads {torch.get_num_threads()}, loadavg {os.getloadavg()[0]:.2f}")
    for critic in critics or list(CRITICS):
        models = {v: build(critic, v) for v in VARIANTS}
        fwd = {v: (lambda D=D: D(x)) for v, D in models.items()}
        sn = {v: sn_only(models[v], v) for v in VARIANTS[1:]}
        numel = sum(m.weight.numel() for m in sn_layers(models["torch"]))
        src, dst = torch.randn(numel), torch.empty(numel)
        jobs = [("fwd", v, f) for v, f in fwd.items()] + [("sn", v, f) for v, f in sn.items()]
        jobs.append(("floor", "in-loop", lambda: (dst.copy_(src), src.sum())))
        times = {(k, v): [] for k, v, _ in jobs}
        for r in range(rounds + warmup):
            rng.shuffle(jobs)
            for k, v, f in jobs:
                t0 = time.perf_counter()
                f()
                if r >= warmup:
                    times[(k, v)].append(time.perf_counter() - t0)
        med = {key: statistics.median(t) * 1e6 for key, t in times.items()}
        ovh = {v: statistics.median(a - b for a, b in zip(times[("fwd", v)], times[("fwd", "none")])) * 1e6
               for v in VARIANTS[1:]}
        cp = copy_floor_us(numel)  # read W + write W/sigma at copy speed
        rd = cp / 2  # one more read of W (power-iteration sweep), same bandwidth
        hot, in_loop = cp + rd, med[("floor", "in-loop")]
        print(f"{critic}: {len(sn_layers(models['torch']))} SN layers, {numel} weights "
              f"({numel * 4 / 2**20:.2f} MiB); fwd(none) {med[('fwd', 'none')]:.0f} us; "
              f"memory floor hot ~{hot:.0f} us (copy {cp:.0f} + read {rd:.0f}), in-loop {in_loop:.0f} us; "
              f"loadavg {os.getloadavg()[0]:.2f}")
        for v in VARIANTS[1:]:
            print(f"  {v:10s} fwd {med[('fwd', v)]:7.0f}  ovh {ovh[v]:6.0f}  sn {med[('sn', v)]:6.0f}"
                  f"  ovh/torch {ovh[v] / ovh['torch']:.2f}  sn/torch {med[('sn', v)] / med[('sn', 'torch')]:.2f}"
                  f"  sn/(3 floor + 50 us) hot {med[('sn', v)] / (3 * hot + 50):.2f} in-loop "
                  f"{med[('sn', v)] / (3 * in_loop + 50):.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, sys.argv[2:] or None)
