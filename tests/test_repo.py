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


# --------------------------------------------------------------------------------------------
# the README is read where the repository is: every path it names lives inside it and exists
def readme_paths():
    """Markdown link targets and `backticked` path-like tokens of README.md (no URLs, no code)."""
    text = (ROOT / "README.md").read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold code, not references
    links = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", prose)]
    ticks = [t for t in re.findall(r"`([^`\s]+)`", prose) if re.fullmatch(r"[\w.~/-]+", t) and "/" in t]
    return [p for p in links + ticks if p and not re.match(r"[a-z]+://", p)]


def bad_paths(paths, root=ROOT):
    """(path, why) for each path outside root or missing; output folders the commands create are exempt."""
    made_by_commands = ("demo-results/", "bench-results/")
    bad = []
    for p in paths:
        if p.startswith(("/", "~")) or ".." in pathlib.PurePosixPath(p).parts:
            bad.append((p, "outside the repository"))
        elif not p.startswith(made_by_commands) and not (root / p.rstrip("/")).exists():
            if not (root / "fastgan" / p.rstrip("/")).exists():  # `_triton/` under the Layout's `fastgan/`
                bad.append((p, "missing"))
    return bad


def test_readme_points_only_inside_the_repository():
    paths = readme_paths()
    assert "docs/SPEC.md" in paths  # the formulas and the error contract ship with the project
    assert bad_paths(paths) == []


def test_readme_path_check_catches_outside_and_missing(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "SPEC.md").write_text("x")
    paths = ["docs/SPEC.md", "../shared/SPEC.md", "/etc/passwd", "docs/NOPE.md", "bench-results/x.md"]
    assert bad_paths(paths, tmp_path) == [("../shared/SPEC.md", "outside the repository"),
                                          ("/etc/passwd", "outside the repository"), ("docs/NOPE.md", "missing")]
