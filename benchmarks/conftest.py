"""pytest-benchmark setup: `pytest benchmarks/ --benchmark-only` (never run in CI's test command).

CPU timings use a fixed thread count (FASTGAN_BENCH_THREADS, default: all cores) and say so in
the benchmark's extra_info.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fastgan._inductor_cache import separate_inductor_cache  # noqa: E402

separate_inductor_cache()  # runs under another ATEN_CPU_CAPABILITY must not reuse this one's kernels

THREADS = int(os.environ.get("FASTGAN_BENCH_THREADS", os.cpu_count() or 1))
torch.set_num_threads(THREADS)
