"""Run tests/cuda_emu against a sanitizer build of the emulation.

    python -m tests.cuda_emu.sanitize thread  [pytest args]   # ThreadSanitizer: data races
    python -m tests.cuda_emu.sanitize address [pytest args]   # AddressSanitizer + alignment (UBSan)

The library is built with ``-fsanitize=...`` and pytest runs in a child python with the
sanitizer runtime preloaded (python itself is not instrumented). The first report ends the run
with a non-zero status. Returns pytest's status.
"""
import glob
import os
import subprocess
import sys
import tempfile

from . import build

HERE = os.path.dirname(os.path.abspath(__file__))
OPTIONS = {
    "thread": {"TSAN_OPTIONS": "halt_on_error=1 exitcode=66 report_signal_unsafe=0 second_deadlock_stack=1"},
    "address": {"ASAN_OPTIONS": "detect_leaks=0 halt_on_error=1 abort_on_error=0",
                "UBSAN_OPTIONS": "halt_on_error=1 print_stacktrace=1"},
}


def command(kind, pytest_args=(), log_dir=None):
    """(argv, env) of the sanitized pytest run (the library is built first, without the runtime).
    Reports go to files under ``log_dir``: pytest's output capture would swallow them when the
    sanitizer ends the process."""
    build.build(kind)
    runtime = build.sanitizer_runtime(kind)
    if runtime is None:
        raise RuntimeError(f"the compiler has no {kind} sanitizer runtime")
    opts = {k: v + (f" log_path={log_dir}/report" if log_dir else "") for k, v in OPTIONS[kind].items()}
    env = dict(os.environ, FASTGAN_EMU_SANITIZE=kind, LD_PRELOAD=runtime, **opts)
    # torch's own OpenMP threads are not instrumented: ThreadSanitizer would report their
    # synchronisation as races (false positives). The emulation's threads are unaffected.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(build.ROOT), env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", HERE,
            f"--ignore={os.path.join(HERE, 'test_sanitizers.py')}", *pytest_args]
    return argv, env


def run(kind, pytest_args=(), **kw):
    """(status, sanitizer reports) of the sanitized test run; a report makes the status non-zero."""
    with tempfile.TemporaryDirectory() as log_dir:
        argv, env = command(kind, pytest_args, log_dir)
        res = subprocess.run(argv, env=env, cwd=str(build.ROOT), **kw)
        reports = "".join(open(f).read() for f in sorted(glob.glob(os.path.join(log_dir, "report*"))))
    return (res.returncode or (1 if reports else 0)), reports, res


def main(args):
    if not args or args[0] not in OPTIONS:
        print(__doc__, file=sys.stderr)
        return 2
    status, reports, _ = run(args[0], args[1:])
    if reports:
        print(reports, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
