"""Fixtures of the emulated-CUDA tier: the library is built (or taken from the cache) once per run."""
import os
import signal
import subprocess
import sys

import pytest

# A small SM count keeps grids small (blocks run one after another on the CPU); the penalty still
# splits rows across blocks. test_emu_runtime.py also runs H100's count (132) in a subprocess.
os.environ.setdefault("FASTGAN_EMU_SMS", "8")

from . import build  # noqa: E402


def sanitizer():
    return os.environ.get("FASTGAN_EMU_SANITIZE") or None


@pytest.fixture(scope="session")
def emu():
    """``torch.ops.fastgan_emu``: csrc/cuda's kernels, compiled for the CPU against emu/."""
    return build.load(sanitizer())


def run_child(code, env=None, timeout=600):
    """Run ``code`` in a fresh python that loads the emulation: a kernel that kills the process
    (SIGFPE, abort) fails the test instead of killing pytest."""
    prelude = ("import sys, torch, fastgan\n"
               f"sys.path.insert(0, {str(build.ROOT)!r})\n"
               "from tests.cuda_emu import build\n"
               f"ops = build.load({sanitizer()!r})\n")
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=str(build.ROOT))


def describe(res):
    """How a child process ended, for an assertion message."""
    how = f"killed by {signal.Signals(-res.returncode).name}" if res.returncode < 0 else f"exit status {res.returncode}"
    return f"child process: {how}\n--- stdout:\n{res.stdout[-2000:]}\n--- stderr:\n{res.stderr[-4000:]}"
