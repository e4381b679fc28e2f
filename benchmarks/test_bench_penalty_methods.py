"""Critic steps with each penalty method (issue 15) under pytest-benchmark, with peak memory.

    pytest benchmarks/test_bench_penalty_methods.py --benchmark-only --benchmark-group-by=group

Time: the step in this process. Peak memory: VmHWM of a fresh subprocess that runs only that
step (``fastgan.bench_fd.measure``), stored in extra_info["vmhwm_mib"] (ru_maxrss would carry the
parent's peak over fork). FASTGAN_BENCH_QUICK=1 uses small critics.
"""
import os

import pytest

from fastgan import bench_fd

QUICK = os.environ.get("FASTGAN_BENCH_QUICK", "0") == "1"
PARAMS = [(c, p, m) for c, p in bench_fd.ROWS for m in ("exact", "fd") + (("approx",) if p == "r1" else ())]


@pytest.mark.parametrize("critic,penalty,method", PARAMS, ids=["|".join(p) for p in PARAMS])
def test_penalty_method_step(benchmark, critic, penalty, method):
    step = bench_fd.step_fn(critic, penalty, method, QUICK)
    mem = bench_fd.measure(critic, penalty, method, steps=1, quick=QUICK)
    benchmark.group = f"{critic} {penalty} critic step"
    benchmark.extra_info.update(vmhwm_mib=mem["vmhwm_kib"] / 1024, label=bench_fd.make(critic, QUICK)[4])
    benchmark.pedantic(step, rounds=3 if not QUICK else 2, iterations=1, warmup_rounds=1)
