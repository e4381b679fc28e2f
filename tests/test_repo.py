"""The README's two commands are what CI and users run: keep them and .ci/run in step."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [ln for b in blocks for ln in b.splitlines() if ln.startswith("pip install torch==")]


def test_ci_runs_the_readme_test_command():
    cmds = readme_commands()
    tests = [c for c in cmds if "pytest" in c and c.rstrip().endswith("tests")]
    assert len(tests) == 1, cmds
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests[0].strip() in [ln.strip() for ln in ci]


def test_readme_commands_pin_torch_and_skip_build_isolation():
    for c in readme_commands():
        assert "torch==2.13.0" in c and "--no-build-isolation" in c, c
