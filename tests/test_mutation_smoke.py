"""The mutation harness cannot rot: every mutant applies to today's tree, and a few Python
mutants run end to end (scratch copy, mutate, test, restore) and are killed."""
import subprocess
import sys
from pathlib import Path

from mutation.mutants import MUTANTS
from mutation import run as harness

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
            assert (ROOT / t.split("::")[0]).exists(), f"{m.id}: test {t} does not exist"


def test_harness_kills_python_mutants(tmp_path):
    smoke = ["pen-r1-gamma-not-halved", "pen-dragan-std-not-sqrt"]
    out = tmp_path / "res.json"
    r = subprocess.run([sys.executable, "-m", "mutation.run", "--python-only", "--no-build", "--ids", *smoke,
                        "--scratch", str(tmp_path / "scratch"), "--json", str(out), "--timeout", "300"],
                       cwd=ROOT / "tests", capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    import json

    res = json.loads(out.read_text())
    assert res["total"] == len(smoke) and res["killed"] == len(smoke)
    # the scratch copy was restored: every file equals the tree's again
    for m in MUTANTS:
        if m.id in smoke:
            assert (tmp_path / "scratch" / m.file).read_text() == (ROOT / m.file).read_text()
