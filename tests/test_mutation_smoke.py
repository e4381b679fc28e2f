"""The mutation harness cannot rot: every mutant applies to today's tree and names tests that
exist, and a few Python mutants run end to end (scratch copy, mutate, test, restore) and are
killed. The full run (C++ rebuilds, minutes) is `python -m tests.mutation.run` (README)."""
import json
import re
import subprocess
import sys
from pathlib import Path

from mutation.mutants import MUTANTS
from mutation.run import needs_build

ROOT = Path(__file__).resolve().parents[1]


def test_every_mutant_applies_and_names_existing_tests():
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids)), "duplicate mutant ids"
    for m in MUTANTS:
        text = (ROOT / m.file).read_text()
        assert text.count(m.find) == m.count, f"{m.id}: {m.find!r} occurs {text.count(m.find)}x in {m.file}"
        assert m.find != m.replace, m.id
        assert m.why and (m.tests or m.equivalent), m.id
        for t in m.tests:
            path, _, name = t.partition("::")
            assert (ROOT / path).exists(), f"{m.id}: test file {path} does not exist"
            if name:
                assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), \
                    f"{m.id}: no test {name} in {path}"
        if m.k:  # the -k expression selects at least one test of the listed files
            words = [w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", m.k) if w not in ("and", "or", "not")]
            src = "".join((ROOT / t.split("::")[0]).read_text() for t in m.tests)
            assert all(w in src for w in words), f"{m.id}: -k {m.k!r} names something absent from its tests"


def test_the_list_covers_every_kernel_family():
    files = {m.file for m in MUTANTS if not m.equivalent}
    for f in ("csrc/cpu/grad_norm.cpp", "csrc/cpu/clip.cpp", "csrc/cpu/spectral_norm.cpp", "csrc/gnp_math.h",
              "csrc/grad_norm_autograd.cpp", "csrc/spectral_norm_autograd.cpp", "fastgan/_triton/grad_norm.py",
              "fastgan/_triton/clip.py", "fastgan/_triton/spectral_norm.py", "fastgan/penalty.py",
              "fastgan/spectral.py", "fastgan/clip.py", "fastgan/losses.py", "fastgan/noise.py",
              "csrc/cuda/grad_norm.cu", "csrc/cuda/clip.cu", "csrc/cuda/spectral_norm.cu"):
        assert f in files, f
    assert any(needs_build(m) for m in MUTANTS) and all(m.equivalent or m.tests for m in MUTANTS)


# One mutant per tier that needs no C++ build of the scratch copy: the public Python API, the
# Python autograd glue of the CUDA/Triton ops (through the emulated CUDA tier), a Triton kernel
# (through the interpreter) and a CUDA kernel (the emulated CUDA tier rebuilds the mutated .cu;
# the other objects come from the tree's content-keyed cache, build/cuda_emu).
SMOKE = ["pen-lipschitz-two-sided", "ops-autograd-onesided-not-saved", "tri-clip-nan-to-hi", "cu-clip-nan-to-hi"]


def test_harness_kills_one_mutant_per_tier(tmp_path):
    """End to end: scratch copy, mutate, (re)build, test, restore. --skip-baseline: the same tests
    run unmutated in this very suite. The C++ tiers (csrc/cpu, csrc/*_autograd.cpp) are left to
    the full run: their first build of the scratch copy alone costs minutes."""
    by_id = {m.id: m for m in MUTANTS}
    tiers = ("fastgan/penalty.py", "fastgan/ops/", "fastgan/_triton/", "csrc/cuda/")
    assert all(any(by_id[i].file.startswith(t) for i in SMOKE) for t in tiers)
    out = tmp_path / "res.json"
    r = subprocess.run([sys.executable, "-m", "mutation.run", "--python-only", "--no-build", "--skip-baseline",
                        "--ids", *SMOKE, "--scratch", str(tmp_path / "scratch"), "--json", str(out),
                        "--timeout", "300"], cwd=ROOT / "tests", capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["total"] == len(SMOKE) and res["killed"] == len(SMOKE), res
    assert all(x["rc"] != "timeout" for x in res["results"]), res  # killed by an assertion, not the clock
    # the scratch copy was restored: every file equals the tree's again
    for i in SMOKE:
        m = by_id[i]
        assert (tmp_path / "scratch" / m.file).read_text() == (ROOT / m.file).read_text()
