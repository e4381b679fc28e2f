"""Mutation harness: apply one plausible one-line bug at a time and check that the tests catch it.

    python -m tests.mutation.run                 # every mutant in tests/mutation/mutants.py
    python -m tests.mutation.run --only clip-    # mutants whose id starts with "clip-"
    python -m tests.mutation.run --list          # the list, nothing run

Each mutant is applied to a scratch copy of the working tree (``--scratch``, default
``$TMPDIR/fastgan-mutation``; kept between runs so C++ rebuilds stay incremental), the extension
is rebuilt when the mutant touches ``csrc/`` outside ``csrc/cuda`` (the emulated CUDA tier
compiles ``csrc/cuda`` itself), the mutant's tests run with the scratch copy first on
``PYTHONPATH``, and the file is restored. A mutant is *killed* when its tests fail (any non-zero
exit; a timeout counts as killed and is marked), *survived* when they pass. Mutants marked
``equivalent`` (with the reason) are not run and not counted. Before the mutants, every selected
mutant's tests must pass on the unmutated copy (the baseline), else the run stops.

Prints the score (killed / non-equivalent) and the survivors; ``--json FILE`` writes the details.
"""
import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .mutants import MUTANTS

ROOT = Path(__file__).resolve().parents[2]
NATIVE = (".cpp", ".h", ".hpp", ".cc")


def needs_build(m):
    return m.file.startswith("csrc/") and not m.file.startswith("csrc/cuda/") and m.file.endswith(NATIVE)


def tree_files(root):
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True, text=True).stdout.split()
    return [f for f in out if (root / f).is_file()]


def sync(src, dst):
    """Make ``dst`` hold the working tree of ``src``; unchanged files keep their mtime (incremental builds)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in tree_files(src):
        s, d = src / f, dst / f
        if d.is_file() and filecmp.cmp(s, d, shallow=False):
            continue
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(s, d)


def build(scratch, timeout):
    t0 = time.time()
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=scratch,
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"build failed in {scratch}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.time() - t0


def copy_extension(src, dst):
    """Use the source tree's built extension (for runs without C++ mutants)."""
    for so in (src / "fastgan").glob("_C*.so"):
        shutil.copy2(so, dst / "fastgan" / so.name)


def run_tests(scratch, tests, timeout):
    env = dict(os.environ, PYTHONPATH=str(scratch) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = r.returncode, (r.stdout + r.stderr)
    except subprocess.TimeoutExpired as e:
        rc, out = "timeout", str(e.stdout or "")[-2000:]
    return rc, out, time.time() - t0


def apply(scratch, m):
    path = scratch / m.file
    text = path.read_text()
    n = text.count(m.find)
    if n != m.count:
        raise ValueError(f"mutant {m.id}: {m.find!r} occurs {n} times in {m.file}, expected {m.count}")
    path.write_text(text.replace(m.find, m.replace))
    return text


def select(ids=None, only=None, python_only=False):
    ms = [m for m in MUTANTS if not m.equivalent]
    if only:
        ms = [m for m in ms if any(m.id.startswith(p) for p in only)]
    if ids:
        ms = [m for m in ms if m.id in ids]
    if python_only:
        ms = [m for m in ms if not needs_build(m)]
    return ms


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="id prefixes to run")
    ap.add_argument("--ids", nargs="*", help="exact ids to run")
    ap.add_argument("--python-only", action="store_true", help="skip mutants that need a C++ rebuild")
    ap.add_argument("--no-build", action="store_true",
                    help="copy the source tree's built extension instead of building (only with --python-only)")
    ap.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "fastgan-mutation"))
    ap.add_argument("--timeout", type=float, default=600, help="seconds per mutant's test run")
    ap.add_argument("--json", help="write the per-mutant results here")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    ms = select(a.ids, a.only, a.python_only)
    if a.list:
        for m in MUTANTS:
            tag = f"EQUIVALENT: {m.equivalent}" if m.equivalent else " ".join(m.tests)
            print(f"{m.id:32s} {m.file:36s} {tag}")
        return 0
    if not ms:
        print("no mutants selected")
        return 2
    if a.no_build and any(needs_build(m) for m in ms):
        ap.error("--no-build needs --python-only (C++ mutants must rebuild)")
    scratch = Path(a.scratch)
    t_start = time.time()
    sync(ROOT, scratch)
    if a.no_build:
        copy_extension(ROOT, scratch)
    else:
        print(f"building the scratch copy in {scratch} ...", flush=True)
        build(scratch, 3600)
    # baseline: each selected test set passes unmutated
    for tests in sorted({tuple(m.tests) for m in ms}):
        rc, out, dt = run_tests(scratch, tests, a.timeout)
        if rc != 0:
            print(f"baseline FAILED for {' '.join(tests)} (rc {rc}); fix the tests first:\n{out[-3000:]}")
            return 2
        print(f"baseline ok: {' '.join(tests)} ({dt:.0f} s)", flush=True)
    results, dirty = [], False
    for m in ms:
        original = apply(scratch, m)
        try:
            t_build = build(scratch, 1800) if (needs_build(m) or dirty) else 0.0
            rc, out, dt = run_tests(scratch, m.tests, a.timeout)
        finally:
            (scratch / m.file).write_text(original)
        dirty = needs_build(m)  # the .so holds the mutant until the next build
        killed = rc != 0
        results.append(dict(id=m.id, file=m.file, killed=killed, rc=rc, seconds=round(dt + t_build, 1),
                            why=m.why, tail=out[-600:] if not killed else ""))
        print(f"{'killed  ' if killed else 'SURVIVED'} {m.id:32s} ({dt + t_build:.0f} s)"
              f"{' timeout' if rc == 'timeout' else ''}", flush=True)
    if dirty:
        build(scratch, 1800)
    killed = sum(r["killed"] for r in results)
    n_eq = sum(1 for m in MUTANTS if m.equivalent)
    print(f"\nscore: {killed}/{len(results)} killed = {100 * killed / len(results):.1f}% "
          f"({n_eq} equivalent mutants listed, not run); {time.time() - t_start:.0f} s")
    for r in results:
        if not r["killed"]:
            print(f"  survivor: {r['id']} ({r['file']}): {r['why']}")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(results=results, killed=killed, total=len(results)), indent=1))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
