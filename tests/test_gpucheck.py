"""``python -m fastgan gpucheck`` without a GPU: the plan it builds, the step runner (timeouts, logs),
the result files, and the refusal when no GPU is visible. Also the test parametrization's device
logic (conftest), which decides what a GPU run tests.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import backend_devices, device_for

from fastgan import gpucheck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# conftest: every backend is tested on the device it runs on
def test_backend_devices_on_a_gpu_machine():
    pairs = backend_devices(["reference", "cpu", "cuda", "triton"], cuda_available=True)
    assert pairs == [("cpu", "cpu"), ("cuda", "cuda"), ("triton", "cuda")]  # no (triton, cpu): no interpreter


def test_backend_devices_on_a_cpu_machine():
    assert backend_devices(["reference", "cpu", "triton"], cuda_available=False) == [("cpu", "cpu"), ("triton", "cpu")]


@pytest.mark.parametrize("backend, cuda, want", [("cuda", True, "cuda"), ("triton", True, "cuda"),
                                                ("triton", False, "cpu"), ("cpu", True, "cpu"),
                                                ("reference", True, "cpu")])
def test_device_for(backend, cuda, want):
    assert device_for(backend, cuda_available=cuda) == want


# ---------------------------------------------------------------------------------------------
# the plan
def test_plan_steps_outputs_and_budget(tmp_path):
    out = str(tmp_path / "run")
    plan = gpucheck.build_plan(out, python="PY", arch="9.0", jobs=16, sanitizer="SAN")
    names = [s.name for s in plan]
    assert names == ["build", "backends", "tests", "memcheck", "racecheck", "bench"]
    by = {s.name: s for s in plan}
    assert by["build"].cmd == ["PY", "setup.py", "build_ext", "--inplace"]
    assert by["build"].env["TORCH_CUDA_ARCH_LIST"] == "9.0" and by["build"].env["MAX_JOBS"] == "16"
    assert by["tests"].cmd[-1] == "tests" and os.path.join(out, "tests", "junit.xml") in by["tests"].cmd
    for tool in ("memcheck", "racecheck"):
        cmd = by[tool].cmd
        assert cmd[:3] == ["SAN", "--tool", tool] and "--error-exitcode" in cmd
        assert "cuda" in cmd[cmd.index("-k") + 1]
    assert by["memcheck"].env.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1"  # else pooled overruns go unseen
    assert by["bench"].cmd[-4:] == ["--device", "cuda", "--out", os.path.join(out, "bench")]
    assert {s.group for s in plan if s.name in ("tests", "memcheck", "racecheck")} == {"checks"}
    assert not by["bench"].group, "the benchmark must have the GPU to itself"
    # every step has a timeout, and without the bench the worst case leaves the bench its minimum
    assert all(s.timeout > 0 for s in plan)
    assert gpucheck.plan_seconds(plan[:-1]) + gpucheck.QUICK_BENCH_S <= gpucheck.BUDGET_S < 8 * 60
    assert gpucheck.plan_seconds(plan, gpucheck.BUDGET_S) <= gpucheck.BUDGET_S
    assert [s.name for s in gpucheck.build_plan(out, skip_build=True)][0] == "backends"


def test_bench_is_clipped_to_the_budget_left():
    step = gpucheck.Step("bench", ["py", "-m", "fastgan", "bench"], 300)
    assert gpucheck._fit(step, 1000) is step
    mid = gpucheck._fit(step, gpucheck.FULL_BENCH_S + 10)
    assert mid.timeout == gpucheck.FULL_BENCH_S + 10 and "--quick" not in mid.cmd
    low = gpucheck._fit(step, 20)
    assert low.cmd[-1] == "--quick" and low.timeout == gpucheck.QUICK_BENCH_S


# ---------------------------------------------------------------------------------------------
# running steps and writing results (harmless commands stand in for the GPU steps)
def test_run_steps_statuses_logs_and_results(tmp_path):
    out = str(tmp_path)
    py = sys.executable
    plan = [gpucheck.Step("ok", [py, "-c", "print('hello')"], 30),
            gpucheck.Step("bad", [py, "-c", "import sys; print('boom'); sys.exit(3)"], 30, group="g"),
            gpucheck.Step("slow", [py, "-c", "import time; print('start', flush=True); time.sleep(60)"], 2,
                          group="g"),
            gpucheck.Step("env", [py, "-c", "import os; print(os.environ['FOO'], os.environ.get('TRITON_INTERPRET'))"],
                          30, env={"FOO": "bar"}),
            gpucheck.Step("missing", ["/nonexistent/tool"], 30)]
    seen = []
    res = gpucheck.run_steps(plan, out, on_result=lambda r: seen.append(len(r)))
    st = {r["name"]: r for r in res}
    assert [r["name"] for r in res] == ["ok", "bad", "slow", "env", "missing"]
    assert st["ok"]["status"] == "passed" and "hello" in st["ok"]["tail"]
    assert st["bad"]["status"] == "failed" and st["bad"]["rc"] == 3
    assert st["slow"]["status"] == "timeout" and st["slow"]["seconds"] < 30
    assert "bar None" in st["env"]["tail"]  # step env applied, the interpreter switched off
    assert st["missing"]["status"] == "failed"
    assert seen == [1, 2, 3, 4, 5]
    for name in st:
        assert os.path.exists(os.path.join(out, "logs", f"{name}.log"))
    env = {"gpu": "NVIDIA H100 80GB HBM3", "driver": "580.1", "torch": "2.11.0+cu130", "torch_cuda": "13.0",
           "triton": "3.6.0", "commit": "abc123", "python": "3.12.3", "capability": "9.0"}
    data = gpucheck.write_results(out, env, res, plan)
    assert data["ok"] is False
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["environment"]["gpu"] == env["gpu"] and len(saved["steps"]) == 5
    md = open(os.path.join(out, "results.md")).read()
    for text in ("NOT PASSED", "H100", "580.1", "2.11.0+cu130", "3.6.0", "abc123", "| slow | timeout |"):
        assert text in md, text


def test_results_all_passed_and_not_run_steps(tmp_path):
    out = str(tmp_path)
    plan = [gpucheck.Step("a", [sys.executable, "-c", "pass"], 30), gpucheck.Step("b", ["x"], 30)]
    res = gpucheck.run_steps(plan[:1], out)
    data = gpucheck.write_results(out, {}, res, plan)
    assert data["ok"] is False  # b never ran
    assert "| b | not run |" in open(os.path.join(out, "results.md")).read()
    assert gpucheck.write_results(out, {}, res, plan[:1])["ok"] is True


def test_summaries(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "junit.xml").write_text(
        '<testsuites><testsuite tests="10" failures="1" errors="0" skipped="2"></testsuite></testsuites>')
    assert gpucheck.summarize("tests", "", str(tmp_path)) == "7 passed, 1 failed, 0 errors, 2 skipped"
    assert gpucheck.summarize("memcheck", "x\n========= ERROR SUMMARY: 4 errors\n", str(tmp_path)) == "4 sanitizer errors"


# ---------------------------------------------------------------------------------------------
# no GPU: refuse clearly, write nothing
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_refuses_without_a_gpu(tmp_path):
    out = tmp_path / "gc"
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-m", "fastgan", "gpucheck", "--out", str(out)], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 2
    assert "no CUDA GPU is visible" in res.stderr and "nothing was written" in res.stderr
    assert not out.exists()
    dry = subprocess.run([sys.executable, "-m", "fastgan", "gpucheck", "--out", str(out), "--dry-run"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert dry.returncode == 0 and "[memcheck]" in dry.stdout and "bench --device cuda" in dry.stdout
    assert not out.exists()


def test_gpu_visible_reports_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, why = gpucheck.gpu_visible()
    assert not ok and ("CPU-only" in why or "no CUDA device" in why)
