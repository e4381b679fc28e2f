"""The cases of `python -m fastgan bench`, as pytest-benchmark tests (one group per op and shape).

    pytest benchmarks/test_bench_suite.py --benchmark-only --benchmark-group-by=group
    pytest benchmarks/ --benchmark-only --benchmark-save=NAME      # then --benchmark-compare

The cases come from fastgan.bench.CASE_FAMILIES, so the command and this suite time exactly the
same code. FASTGAN_BENCH_QUICK=1 uses the command's --quick shapes; FASTGAN_BENCH_DEVICE=cuda runs
them on the GPU. Each case's first call is checked against its eager reference.
"""
import os

import pytest
import torch

from fastgan import bench

DEVICE = torch.device(os.environ.get("FASTGAN_BENCH_DEVICE", "cpu"))
QUICK = os.environ.get("FASTGAN_BENCH_QUICK", "0") == "1"


def _cases():
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        return []
    return [c for fam in bench.CASE_FAMILIES.values() for c in fam(DEVICE, QUICK)]


CASES = _cases()
PARAMS = [(c, name) for c in CASES for name in c.impls]
_REFS = {}


@pytest.mark.parametrize("case,impl", PARAMS, ids=[f"{c.op}|{c.shape}|{n}" for c, n in PARAMS])
def test_case(benchmark, case, impl):
    key = id(case)
    if key not in _REFS:
        _REFS[key] = [None if t is None else t.detach().clone() for t in bench._flat(case.impls["eager"]())]
    fn = case.impls[impl]
    out = fn()
    if impl not in case.unchecked and impl != "eager":
        assert case.check(out, _REFS[key]), f"{impl} does not match the eager reference"

    def run():
        fn()
        bench._sync(DEVICE)

    benchmark.group = f"{case.op} | {case.shape}"
    benchmark.extra_info.update(threads=torch.get_num_threads(), bytes=case.nbytes)
    benchmark.pedantic(run, rounds=20 if not QUICK else 5, iterations=1, warmup_rounds=2)
