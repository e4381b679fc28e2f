"""Smoke test of `python -m fastgan bench --quick` (speed is never asserted; the command must not rot)."""
import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("TRITON_INTERPRET", None)  # as a user runs it
    res = subprocess.run([sys.executable, "-m", "fastgan", "bench", "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=900, env=env)
    return res, out


def test_quick_bench_runs_and_matches(quick_run):
    res, out = quick_run
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    assert data["machine"]["torch"] and data["copy_GBps"] > 0
    timed = [r for r in data["rows"] if "median_s" in r]
    ops = {r["op"] for r in timed}
    assert "grad_norm_penalty fwd+bwd" in ops and "WGAN-GP critic step" in ops
    assert all(r["matched"] is not False for r in timed)  # None: a floor row (no SN), not a result
    assert sum(r["matched"] is True for r in timed) >= len(timed) // 2
    assert all(r["p20_s"] <= r["median_s"] <= r["p80_s"] for r in timed)
    # every case has its eager baseline and at least one fastgan implementation timed
    for op in ops:
        impls = {r["impl"] for r in timed if r["op"] == op}
        assert "eager" in impls and any(i.startswith("fastgan:") for i in impls), (op, impls)


def test_quick_bench_writes_markdown_and_png(quick_run):
    _, out = quick_run
    md = (out / "results.md").read_text()
    assert md.startswith("# fastgan benchmark") and "| op | shape | impl |" in md
    png = out / "speedup.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_cuda_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: --device cuda is valid here")
    res = subprocess.run([sys.executable, "-m", "fastgan", "bench", "--device", "cuda", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "no CUDA device" in res.stderr
    assert not (tmp_path / "x").exists()


def test_sn_step_case_keeps_its_inputs_when_later_cases_are_built(monkeypatch):
    """`python -m fastgan bench` builds every case before running any: the DCGAN SN-step case must
    still run on its own inputs once the generator has built the SNGAN cases after it (its closure
    over `step` once picked up the SNGAN step's x, y: fastgan's grads then looked wrong vs float64
    only because one pre-activation sat within float32 rounding of LeakyReLU's kink)."""
    import torch

    from fastgan import _bench_models, bench

    # tiny critics, no torch.compile trial: only which inputs a case uses is under test
    monkeypatch.setattr(bench, "dcgan_critic", lambda ch=4: _bench_models.dcgan_critic(4))
    monkeypatch.setattr(bench, "SNGANResNetCritic", lambda ch=4: _bench_models.SNGANResNetCritic(4))
    monkeypatch.setattr(bench, "_works", lambda fn, what: (None, "not tried in this test"))
    cpu = torch.device("cpu")
    gen = bench.sn_cases(cpu, False)
    next(gen)
    alone = next(gen)  # the DCGAN step case, run before the generator moves on
    assert "DCGAN" in alone.shape and "step" in alone.op
    expected = [t.clone() for t in bench._flat(alone.impls["eager"]())]
    cases = list(bench.sn_cases(cpu, False))  # built the way the bench command builds them
    assert len(cases) == 4 and cases[1].shape == alone.shape
    got = bench._flat(cases[1].impls["eager"]())
    assert len(got) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_whole_gradient_check_is_relative_to_the_norm_of_all_tensors():
    """The finite-difference rows' check (issue 15's measure): ||out - ref|| / ||ref|| over all
    tensors together; a small tensor far off its own scale passes, a large error or a NaN fails."""
    import torch

    from fastgan.bench import _close_whole

    ref = [torch.full((100,), 1.0), torch.full((3,), 1e-3)]
    check = _close_whole(2e-3)
    assert check([ref[0] * (1 + 1e-3), ref[1] * 1.5], ref)            # 0.5 of a tiny tensor: fine overall
    assert not check([ref[0] * (1 + 3e-3), ref[1]], ref)              # 3e-3 of everything: not
    assert not check([ref[0], torch.tensor([float("nan"), 0.0, 0.0])], ref)
    assert not check([ref[0]], ref)                                   # a missing tensor
    assert not check([ref[0], None], ref)
