"""One-command GPU validation: ``python -m fastgan gpucheck --out DIR``.

On a fresh GPU machine (CUDA torch, nvcc, no internet) it runs, each step under its own timeout so
the whole run ends within about 8 minutes on an H100/H200:

1. ``build``: the CUDA extension, in place (``python setup.py build_ext --inplace``, only for the
   visible GPU's architecture, all cores);
2. ``backends``: ``python -m fastgan info``, failing unless the ``cuda`` and ``triton`` backends are
   available (a build that silently left CUDA out would make every later step meaningless);
3. in parallel: ``tests`` (the whole suite, on CUDA where a backend runs there, JUnit XML),
   ``memcheck`` and ``racecheck`` (compute-sanitizer on the CUDA kernels' tests);
4. ``bench``: ``python -m fastgan bench --device cuda`` alone on the GPU.

Everything lands under DIR: ``logs/<step>.log``, ``tests/junit.xml``, ``bench/`` (the benchmark's
results.json/.md), and ``results.json`` + ``results.md`` (GPU name, driver, torch/Triton/CUDA
versions, commit, each step's status, time and summary), rewritten after every step so a run cut
short still leaves what it did. Exit status 0 only when every step passed. Without a visible GPU it
refuses (exit status 2) before writing anything; ``--dry-run`` prints the plan instead.
"""
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_S = 470  # the whole run, under 8 minutes
# the CUDA kernels' tests (C++ kernels: the sanitizers' shared-memory and bounds checks are about them)
SANITIZER_TESTS = ["tests/test_grad_norm.py", "tests/test_clip.py", "tests/test_spectral_norm.py",
                   "tests/test_penalties.py"]
SANITIZER_SELECT = "cuda and not triton and not graph and not ddp"


@dataclass
class Step:
    name: str
    cmd: list
    timeout: int
    env: dict = field(default_factory=dict)
    group: str = ""  # steps with the same non-empty group run concurrently
    what: str = ""


def find_sanitizer():
    """Path of compute-sanitizer (PATH, CUDA_HOME, /usr/local/cuda), or None."""
    hit = shutil.which("compute-sanitizer")
    if hit:
        return hit
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "compute-sanitizer")):
            return os.path.join(home, "bin", "compute-sanitizer")
    return None


def build_plan(out, *, python=sys.executable, root=ROOT, arch="9.0", jobs=None, sanitizer="compute-sanitizer",
               skip_build=False):
    """The steps of one validation run (pure: nothing is run or written)."""
    jobs = jobs or os.cpu_count() or 4
    pytest = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs"]
    steps = []
    if not skip_build:
        steps.append(Step("build", [python, "setup.py", "build_ext", "--inplace"], 140,
                          env={"TORCH_CUDA_ARCH_LIST": arch, "MAX_JOBS": str(jobs), "FORCE_CUDA": "1"},
                          what="build fastgan._C with the CUDA kernels for this GPU only"))
    steps.append(Step("backends", [python, "-c",
                                   "import sys, fastgan, fastgan.__main__ as m; m.info(None); "
                                   "st = fastgan.backends(); "
                                   "sys.exit(0 if st['cuda']['available'] and st['triton']['available'] else 1)"],
                      30, what="the cuda and triton backends are available"))
    # the nvcc compile check is left out: the build step has just compiled the same sources with the
    # same flags, for this GPU (it would spend a minute of the budget recompiling them)
    steps.append(Step("tests", pytest + ["--junitxml", os.path.join(out, "tests", "junit.xml"),
                                         "-k", "not test_cuda_source_compiles", "tests"], 220,
                      group="checks", what="the whole test suite (each backend on its own device)"))
    for tool in ("memcheck", "racecheck"):
        env = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"} if tool == "memcheck" else {}
        steps.append(Step(tool, [sanitizer, "--tool", tool, "--error-exitcode", "3", "--print-limit", "50",
                                 *pytest, "-x", *SANITIZER_TESTS, "-k", SANITIZER_SELECT], 220, env=env,
                          group="checks", what=f"compute-sanitizer {tool} on the CUDA kernels' tests"))
    # the bench gets what the budget leaves (run_steps clips it), at least QUICK_BENCH_S: with less
    # than FULL_BENCH_S left it runs --quick rather than be cut off with nothing written
    steps.append(Step("bench", [python, "-m", "fastgan", "bench", "--device", "cuda", "--out",
                                os.path.join(out, "bench")], 300, what="python -m fastgan bench --device cuda"))
    return steps


QUICK_BENCH_S = 60
FULL_BENCH_S = 150


def plan_seconds(steps, budget=None):
    """Worst-case wall time of a plan: sequential steps add up, a concurrent group counts once;
    with a ``budget`` (run_steps' deadline) the run ends by then, bar the last step's minimum."""
    total, groups = 0, {}
    for s in steps:
        if s.group:
            groups[s.group] = max(groups.get(s.group, 0), s.timeout)
        else:
            total += s.timeout
    total += sum(groups.values())
    return total if budget is None else min(total, budget)


def _run_cmd(cmd, timeout):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment(root=ROOT):
    """What the results are about: GPU, driver, versions, commit."""
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "host": platform.node(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_count=torch.cuda.device_count(), capability=f"{p.major}.{p.minor}",
                   sm_count=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    smi = _run_cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], 20)
    env["driver"] = smi.splitlines()[0] if smi else None
    nvcc = _run_cmd(["nvcc", "--version"], 20)
    env["nvcc"] = nvcc.splitlines()[-1] if nvcc else None
    commit = _run_cmd(["git", "-C", root, "rev-parse", "HEAD"], 20)
    if commit:
        dirty = _run_cmd(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], 20)
        commit += "-dirty" if dirty else ""
    env["commit"] = commit or os.environ.get("FASTGAN_COMMIT") or "unknown"
    return env


def gpu_visible():
    """(True, description) or (False, why not)."""
    try:
        import torch
    except ImportError as e:
        return False, f"torch is not importable ({e})"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return False, (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device "
                       f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    return True, torch.cuda.get_device_name(0)


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the step's whole process group (pytest children, nvcc)
    except (ProcessLookupError, PermissionError):
        pass


def _start(step, out, root):
    log = open(os.path.join(out, "logs", f"{step.name}.log"), "w")
    log.write(f"$ {' '.join(step.cmd)}\n# timeout {step.timeout} s; env {step.env}\n")
    log.flush()
    env = dict(os.environ, **step.env)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("TRITON_INTERPRET", None)  # Triton must run on the GPU here
    try:
        proc = subprocess.Popen(step.cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as e:
        log.write(f"cannot start: {e}\n")
        log.close()
        return None, log, time.monotonic()
    return proc, log, time.monotonic()


def _finish(step, proc, log, t0, out, timed_out):
    secs = round(time.monotonic() - t0, 1)
    log.close()
    path = os.path.join(out, "logs", f"{step.name}.log")
    with open(path, errors="replace") as f:
        text = f.read()
    if proc is None:
        status, rc = "failed", None
    else:
        rc = proc.returncode
        status = "timeout" if timed_out else ("passed" if rc == 0 else "failed")
    return {"name": step.name, "what": step.what, "cmd": step.cmd, "timeout_s": step.timeout, "seconds": secs,
            "rc": rc, "status": status, "log": os.path.relpath(path, out), "summary": summarize(step.name, text, out),
            "tail": text[-1500:]}


def _fit(step, left):
    """``step`` with its timeout clipped to the ``left`` seconds of the budget (bench: --quick when
    too little is left for the full run)."""
    if left is None or left >= step.timeout:
        return step
    if step.name == "bench" and left < FULL_BENCH_S:
        return Step(step.name, step.cmd + ["--quick"], max(int(left), QUICK_BENCH_S), step.env, step.group,
                    step.what + f" (--quick: {int(left)} s of the budget left)")
    return Step(step.name, step.cmd, max(int(left), 1), step.env, step.group, step.what + " (clipped to the budget)")


def run_steps(steps, out, root=ROOT, on_result=None, budget=None):
    """Run the plan (a concurrent group's steps together); returns one result dict per step.
    ``budget``: seconds for the whole run; later steps' timeouts are clipped to what is left."""
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    start = time.monotonic()
    results, i = [], 0
    while i < len(steps):
        batch = [steps[i]]
        while steps[i].group and i + len(batch) < len(steps) and steps[i + len(batch)].group == steps[i].group:
            batch.append(steps[i + len(batch)])
        i += len(batch)
        left = None if budget is None else budget - (time.monotonic() - start)
        batch = [_fit(s, left) for s in batch]
        running = [(s, *_start(s, out, root)) for s in batch]
        for s, proc, log, t0 in running:
            timed_out = False
            if proc is not None:
                try:
                    proc.wait(timeout=max(0.1, s.timeout - (time.monotonic() - t0)))
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill(proc)
                    proc.wait()
            res = _finish(s, proc, log, t0, out, timed_out)
            results.append(res)
            if on_result:
                on_result(results)
    return results


def summarize(name, text, out):
    """A one-line summary of a step's log (test counts, sanitizer errors)."""
    if name == "tests":
        path = os.path.join(out, "tests", "junit.xml")
        if os.path.exists(path):
            try:
                suite = ET.parse(path).getroot()
                suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
                a = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
                return (f"{a['tests'] - a['failures'] - a['errors'] - a['skipped']} passed, {a['failures']} failed, "
                        f"{a['errors']} errors, {a['skipped']} skipped")
            except (ET.ParseError, AttributeError, ValueError):
                pass
    if name in ("memcheck", "racecheck"):
        m = re.findall(r"ERROR SUMMARY: (\d+) error", text)
        if m:
            return f"{m[-1]} sanitizer errors"
    m = re.findall(r"=+ (.*(?:passed|failed|error).*) =+", text)
    if m:
        return m[-1]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def write_results(out, env, results, plan):
    """results.json and results.md under ``out``."""
    ok = bool(results) and all(r["status"] == "passed" for r in results) and len(results) == len(plan)
    data = {"ok": ok, "environment": env, "steps": results,
            "plan": [asdict(s) for s in plan], "budget_s": BUDGET_S}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    e = env
    lines = [f"# fastgan gpucheck: {'PASSED' if ok else 'NOT PASSED'}", "",
             f"- GPU: {e.get('gpu')} (sm {e.get('capability')}, {e.get('sm_count')} SMs, "
             f"{e.get('memory_gib')} GiB) x{e.get('gpu_count')}",
             f"- driver: {e.get('driver')}; nvcc: {e.get('nvcc')}",
             f"- torch {e.get('torch')} (CUDA {e.get('torch_cuda')}), Triton {e.get('triton')}, "
             f"Python {e.get('python')}",
             f"- commit: {e.get('commit')}; run {e.get('date_utc')} on {e.get('host')}", "",
             "| step | status | seconds | timeout | summary |", "|---|---|---|---|---|"]
    done = {r["name"] for r in results}
    for r in results:
        lines.append(f"| {r['name']} | {r['status']} | {r['seconds']} | {r['timeout_s']} | "
                     f"{r['summary'].replace('|', '/')} |")
    for s in plan:
        if s.name not in done:
            lines.append(f"| {s.name} | not run | - | {s.timeout} | |")
    lines += ["", "Logs: `logs/<step>.log`; tests: `tests/junit.xml`; benchmark: `bench/results.md`."]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return data


def main(args):
    out = os.path.abspath(args.out)
    ok, why = gpu_visible()
    if args.dry_run:
        plan = build_plan(out, skip_build=args.skip_build, sanitizer=find_sanitizer() or "compute-sanitizer")
        for s in plan:
            print(f"[{s.name}] timeout {s.timeout} s{' (group ' + s.group + ')' if s.group else ''}: "
                  f"{' '.join(s.cmd)}")
        print(f"worst case {plan_seconds(plan, BUDGET_S)} s (budget {BUDGET_S} s); GPU: {why}")
        return 0
    if not ok:
        print(f"gpucheck: refusing to run: no CUDA GPU is visible: {why}.\n"
              f"It validates fastgan's CUDA and Triton kernels on a GPU machine with a CUDA build of torch and "
              f"nvcc; nothing was written to {out}. `--dry-run` prints the plan.", file=sys.stderr)
        return 2
    import torch

    cap = torch.cuda.get_device_capability(0)
    sanitizer = find_sanitizer()
    plan = build_plan(out, arch=f"{cap[0]}.{cap[1]}", skip_build=args.skip_build,
                      sanitizer=sanitizer or "compute-sanitizer")
    for d in ("logs", "tests", "bench"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    env = environment()
    env["sanitizer"] = sanitizer
    with open(os.path.join(out, "env.json"), "w") as f:
        json.dump(env, f, indent=1)
    t0 = time.monotonic()

    def progress(results):
        r = results[-1]
        print(f"[gpucheck {time.monotonic() - t0:6.1f}s] {r['name']}: {r['status']} ({r['seconds']} s) "
              f"{r['summary']}", flush=True)
        write_results(out, env, results, plan)

    results = run_steps(plan, out, on_result=progress, budget=BUDGET_S)
    data = write_results(out, env, results, plan)
    print(f"gpucheck: {'all steps passed' if data['ok'] else 'NOT all steps passed'}; see {out}/results.md")
    return 0 if data["ok"] else 1


def add_parser(sub):
    p = sub.add_parser("gpucheck", help="validate the CUDA and Triton kernels on this GPU machine (< 8 min)")
    p.add_argument("--out", required=True, help="folder for logs and results.json/.md")
    p.add_argument("--skip-build", action="store_true", help="use the fastgan._C already built")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing (works without a GPU)")
    p.set_defaults(func=main)
