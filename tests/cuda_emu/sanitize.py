"""Run tests/cuda_emu against a sanitizer build of the emulation.

    python -m tests.cuda_emu.sanitize thread  [pytest args]   # ThreadSanitizer: data races
    python -m tests.cuda_emu.sanitize address [pytest args]   # AddressSanitizer + alignment (UBSan)

The library is built with ``-fsanitize=...`` and pytest runs in a child python with the
sanitizer runtime preloaded (python itself is not instrumented). The first report ends the run
with a non-zero status. Returns pytest's status.
"""
import os
import subprocess
import sys

from . import build

HERE = os.path.dirname(os.path.abspath(__file__))
OPTIONS = {
    "thread": {"TSAN_OPTIONS": "halt_on_error=1 exitcode=66 report_signal_unsafe=0 second_deadlock_stack=1"},
    "address": {"ASAN_OPTIONS": "detect_leaks=0 halt_on_error=1 abort_on_error=0",
                "UBSAN_OPTIONS": "halt_on_error=1 print_stacktrace=1"},
}


def command(kind, pytest_args=()):
    """(argv, env) of the sanitized pytest run (the library is built first, without the runtime)."""
    build.build(kind)
    runtime = build.sanitizer_runtime(kind)
    if runtime is None:
        raise RuntimeError(f"the compiler has no {kind} sanitizer runtime")
    env = dict(os.environ, FASTGAN_EMU_SANITIZE=kind, LD_PRELOAD=runtime, **OPTIONS[kind])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(build.ROOT), env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", HERE,
            f"--ignore={os.path.join(HERE, 'test_sanitizers.py')}", *pytest_args]
    return argv, env


def main(args):
    if not args or args[0] not in OPTIONS:
        print(__doc__, file=sys.stderr)
        return 2
    argv, env = command(args[0], args[1:])
    return subprocess.call(argv, env=env, cwd=str(build.ROOT))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
