"""Mutation harness: apply one plausible one-line bug at a time and check that the tests catch it.

    python -m tests.mutation.run                 # every mutant in tests/mutation/mutants.py
    python -m tests.mutation.run --only clip-    # mutants whose id starts with "clip-"
    python -m tests.mutation.run --list          # the list, nothing run

Each mutant is applied to a scratch copy of the working tree (``--scratch``, default
``$TMPDIR/fastgan-mutation``; kept between runs so C++ rebuilds stay incremental), the extension
is rebuilt (``python setup.py build_ext --inplace``, ninja: only the changed object) when the
mutant touches ``csrc/`` outside ``csrc/cuda`` (the emulated CUDA tier compiles ``csrc/cuda``
itself), the emulated-CUDA library is rebuilt (``tests/cuda_emu/build.py``: only the mutated ``.cu``
is recompiled, objects are cached by content) when it touches ``csrc/cuda``, the mutant's tests
run with ``-x`` (and its ``-k``) with the scratch copy first on the
path, and the file is restored. A mutant is *killed* when its tests fail (any non-zero exit; a
timeout counts as killed and is marked), *survived* when they pass. Mutants marked
``equivalent`` (with the reason) are not run and not counted. Before a test set's first mutant,
the set must pass on the unmutated copy (the baseline), else the run stops.

Speed: importing torch costs most of a short test run. The runner imports torch, triton and
pytest once and forks a fresh child per build and per test run (``--no-fork``: a new interpreter
each time); fastgan itself is imported only in the children, from the scratch copy.

Prints the score (killed / non-equivalent) and the survivors; ``--json FILE`` writes the details.
"""
import argparse
import filecmp
import json
import os
import shutil
import signal
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


def needs_emu_build(m):
    """A mutant of csrc/cuda: the emulated-CUDA library (tests/cuda_emu/build.py) is rebuilt for it."""
    return m.file.startswith("csrc/cuda/")


def uses_emu(tests):
    return any(t.startswith("tests/cuda_emu/") for t in tests)


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


# --------------------------------------------------------------------------------------------
# running a build or a test session: in a forked child of this process (torch already imported),
# or in a fresh interpreter
_FORK = [hasattr(os, "fork")]


def _preload():
    """Import the heavy, fastgan-independent modules once, before any fork. TRITON_INTERPRET must
    be set before triton is imported, exactly as tests/conftest.py does."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import setuptools  # noqa: F401
    import torch.utils.cpp_extension  # noqa: F401

    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        pass


def _child(scratch, argv, kind):
    """In the forked child: run setup.py or pytest in ``scratch``; never returns."""
    code = 1
    try:
        os.chdir(scratch)
        sys.path.insert(0, str(scratch))
        os.environ["PYTHONPATH"] = str(scratch) + os.pathsep + os.environ.get("PYTHONPATH", "")
        if kind in ("build", "emu"):
            import runpy

            script = "setup.py" if kind == "build" else "tests/cuda_emu/build.py"
            sys.argv = [script, *argv]
            try:
                runpy.run_path(script, run_name="__main__")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        else:
            import pytest

            code = int(pytest.main(list(argv)))
    except BaseException:  # noqa: BLE001 - report anything, exit non-zero
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_in(scratch, argv, kind, timeout):
    """(returncode or "timeout", output, seconds) of ``setup.py argv`` / ``pytest argv`` in scratch."""
    t0 = time.time()
    if not _FORK[0]:
        head = {"build": ["setup.py"], "emu": ["tests/cuda_emu/build.py"]}.get(kind, ["-m", "pytest"])
        env = dict(os.environ, PYTHONPATH=str(scratch) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        try:
            r = subprocess.run([sys.executable, *head, *argv], cwd=scratch, env=env, capture_output=True,
                               text=True, timeout=timeout)
            return r.returncode, r.stdout + r.stderr, time.time() - t0
        except subprocess.TimeoutExpired as e:
            return "timeout", str(e.stdout or "")[-2000:], time.time() - t0
    with tempfile.TemporaryFile(mode="w+") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            _child(scratch, argv, kind)
        rc = None
        while rc is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
            elif time.time() - t0 > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                rc = "timeout"
            else:
                time.sleep(0.05)
        log.seek(0)
        return rc, log.read(), time.time() - t0


def build(scratch, timeout):
    rc, out, dt = run_in(scratch, ["build_ext", "--inplace"], "build", timeout)
    if rc != 0:
        raise RuntimeError(f"build failed in {scratch} (rc {rc}):\n{out[-6000:]}")
    return dt


def build_emu(scratch, timeout):
    """Build (or take from its content-keyed cache) the emulated-CUDA library of the scratch copy, so
    that a mutant that does not compile is reported as an error, not counted as killed."""
    rc, out, dt = run_in(scratch, [], "emu", timeout)
    if rc != 0:
        raise RuntimeError(f"emulated CUDA build failed in {scratch} (rc {rc}):\n{out[-6000:]}")
    return dt


def copy_extension(src, dst):
    """Use the source tree's built extension (for runs without C++ mutants)."""
    for so in (src / "fastgan").glob("_C*.so"):
        shutil.copy2(so, dst / "fastgan" / so.name)


def test_args(m):
    """pytest arguments of a mutant: its test ids, and ``-k`` when it names one."""
    return tuple(m.tests) + (("-k", m.k) if m.k else ())


def run_tests(scratch, tests, timeout):
    return run_in(scratch, ["-x", "-q", "-p", "no:cacheprovider", *tests], "pytest", timeout)


def apply(scratch, m):
    path = scratch / m.file
    text = path.read_text()
    n = text.count(m.find)
    if n != m.count:
        raise ValueError(f"mutant {m.id}: {m.find!r} occurs {n} times in {m.file}, expected {m.count}")
    path.write_text(text.replace(m.find, m.replace))
    return text


def write_json(path, results, t_start):
    killed = sum(r["killed"] for r in results)
    Path(path).write_text(json.dumps(dict(results=results, killed=killed, total=len(results),
                                          seconds=round(time.time() - t_start)), indent=1))


def select(ids=None, only=None, python_only=False):
    ms = [m for m in MUTANTS if not m.equivalent]
    if only:
        ms = [m for m in ms if any(m.id.startswith(p) for p in only)]
    if ids:  # in the order given
        by_id = {m.id: m for m in ms}
        ms = [by_id[i] for i in dict.fromkeys(ids) if i in by_id]
    if python_only:
        ms = [m for m in ms if not needs_build(m)]
    return ms


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="id prefixes to run")
    ap.add_argument("--ids", nargs="*", help="exact ids to run, in this order")
    ap.add_argument("--python-only", action="store_true", help="skip mutants that need a C++ rebuild")
    ap.add_argument("--no-build", action="store_true",
                    help="copy the source tree's built extension instead of building (only with --python-only)")
    ap.add_argument("--no-fork", action="store_true", help="a fresh interpreter per build and test run")
    ap.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "fastgan-mutation"))
    ap.add_argument("--timeout", type=float, default=600, help="seconds per mutant's test run")
    ap.add_argument("--json", help="write the per-mutant results here")
    ap.add_argument("--reverse", action="store_true",
                    help="run the selected mutants last to first (to split one run between two processes)")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="do not re-run the unmutated tests (only when the same tree's baseline just passed)")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    ms = select(a.ids, a.only, a.python_only)
    if a.reverse:
        ms = ms[::-1]
    if a.list:
        for m in MUTANTS:
            tag = f"EQUIVALENT: {m.equivalent}" if m.equivalent else " ".join(test_args(m))
            print(f"{m.id:38s} {m.file:34s} {tag}")
        return 0
    if not ms:
        print("no mutants selected")
        return 2
    if a.no_build and any(needs_build(m) for m in ms):
        ap.error("--no-build needs --python-only (C++ mutants must rebuild)")
    if a.no_fork:
        _FORK[0] = False
    if _FORK[0]:
        _preload()
    scratch = Path(a.scratch)
    # the emulated-CUDA objects are cached by content (tests/cuda_emu/build.py): the scratch copy
    # shares the tree's cache, so a csrc/cuda mutant recompiles only its own .cu
    os.environ.setdefault("FASTGAN_EMU_CACHE", str(ROOT / "build" / "cuda_emu"))
    t_start = time.time()
    sync(ROOT, scratch)
    if a.no_build:
        copy_extension(ROOT, scratch)
    else:
        print(f"building the scratch copy in {scratch} ...", flush=True)
        build(scratch, 3600)
    if any(needs_emu_build(m) or uses_emu(m.tests) for m in ms):
        print("building the emulated CUDA library of the scratch copy ...", flush=True)
        build_emu(scratch, 3600)
    results, dirty, checked = [], False, set()
    for m in ms:
        # baseline, before a test set's first mutant: it passes on the unmutated copy (else every
        # mutant it tests would count as killed); done lazily so results come in from the start
        if not a.skip_baseline and test_args(m) not in checked:
            if dirty:  # the .so still holds the previous C++ mutant
                build(scratch, 1800)
                dirty = False
            rc, out, dt = run_tests(scratch, test_args(m), a.timeout)
            if rc != 0:
                print(f"baseline FAILED for {' '.join(test_args(m))} (rc {rc}); fix the tests first:\n{out[-3000:]}")
                return 2
            checked.add(test_args(m))
            print(f"baseline ok: {' '.join(test_args(m))} ({dt:.0f} s)", flush=True)
        original = apply(scratch, m)
        try:
            t_build = build(scratch, 1800) if (needs_build(m) or dirty) else 0.0
            if needs_emu_build(m):
                t_build += build_emu(scratch, 1800)
            rc, out, dt = run_tests(scratch, test_args(m), a.timeout)
        finally:
            (scratch / m.file).write_text(original)
        dirty = needs_build(m)  # the .so holds the mutant until the next build
        killed = rc != 0
        results.append(dict(id=m.id, file=m.file, killed=killed, rc=rc, seconds=round(dt + t_build, 1),
                            why=m.why, tail=out[-600:] if not killed else ""))
        print(f"{'killed  ' if killed else 'SURVIVED'} {m.id:38s} ({dt + t_build:.0f} s)"
              f"{' timeout' if rc == 'timeout' else ''}", flush=True)
        if a.json:  # after every mutant: an interrupted run keeps what it found
            write_json(a.json, results, t_start)
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
        write_json(a.json, results, t_start)
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
