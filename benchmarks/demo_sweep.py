"""Every demo method x seeds x torch CPU kernel sets on 8 Gaussians: does each outcome hold everywhere?

    python benchmarks/demo_sweep.py                          # all methods, seeds 0-4, avx2/avx512/default
    python benchmarks/demo_sweep.py --method lp wgan-gp --seeds 0 1 2 --jobs 2 --out /tmp/sweep

One run = one fresh process with ``ATEN_CPU_CAPABILITY`` set (it must be set before torch loads;
``avx2`` / ``avx512`` pick torch's vectorized kernels for that ISA, ``default`` the scalar ones),
one thread, the demo's defaults (``fastgan.demo.run_one``; generator steps: ``demo.default_steps``, an
equal budget of critic updates); the ``avx2`` runs also set
``MKL_ENABLE_INSTRUCTIONS=AVX2`` (see ``launch``). ``--jobs`` processes run at once.
Results are appended to ``runs.jsonl`` as they finish (an interrupted sweep keeps what it has and a
rerun skips the runs already there); ``results.md`` tabulates modes covered per seed and checks each
method's expected outcome (``fastgan.demo.EXPECT``) in every column. The machine is named in the
table (CPU model from /proc/cpuinfo, core count, torch version). MKL's GEMM picks its own code path
from the CPU, whatever ``ATEN_CPU_CAPABILITY`` says: on another CPU family the GEMM rounding differs
too, which is one more reason the expectations are checked over several seeds, never one.
"""
import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPS = ("avx2", "avx512", "default")


def worker(cap, method, seed, steps):
    """Runs in the child: one training run, one JSON line on stdout."""
    import torch

    torch.set_num_threads(1)
    from fastgan import demo

    t0 = time.process_time()
    _, _, m, _ = demo.run_one("8gaussians", method, steps=steps, batch_size=256, seed=seed, progress=False)
    # the method's setup (all but the penalty's code) goes with the record: a record made under
    # another setup is not counted (main)
    config = {k: v for k, v in dataclasses.asdict(demo.METHODS[method]).items()
              if k not in ("penalty", "source")}
    print(json.dumps({"config": config, "cap": cap, "cap_used": torch.backends.cpu.get_cpu_capability(),
                      "mkl_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS", "auto"), "method": method,
                      "seed": seed, "steps": steps, "modes_covered": m["modes_covered"],
                      "high_quality": m["high_quality"], "nn_gen_to_data": m["nn_gen_to_data"],
                      "nn_data_to_gen": m["nn_data_to_gen"], "cpu_s": time.process_time() - t0}))


def machine():
    model = "unknown CPU"
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import torch

    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (f"{model} ({isa}), {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def launch(job):
    cap, method, seed, steps = job
    env = dict(os.environ, ATEN_CPU_CAPABILITY=cap, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MKL_ENABLE_INSTRUCTIONS", None)
    if cap == "avx2":
        # ATEN_CPU_CAPABILITY moves only ATen's elementwise kernels, and on this MLP those round the
        # same at any width (avx2 and avx512 runs were bitwise equal): the GEMMs, which set the
        # trajectory, are MKL's, and MKL picks its kernels from the CPU. An AVX2 machine runs MKL's
        # AVX2 GEMM, so the avx2 column asks MKL for it too.
        env["MKL_ENABLE_INSTRUCTIONS"] = "AVX2"
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", cap, method, str(seed), str(steps)],
                       env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{job} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(records, methods, seeds, caps, expect, min_modes, min_seeds, header):
    lines = [header, "",
             f"Modes covered (of 8) for seeds {', '.join(map(str, seeds))}; `ok` = the method's expected "
             f"outcome holds in that column (learns: >= {min_modes} modes in >= {min_seeds} of "
             f"{len(seeds)} seeds; fails: < {min_modes} modes in >= {min_seeds} seeds). "
             "Last column: smallest high-quality share over the seeds that reached the mode threshold.", "",
             "| method | expected | " + " | ".join(caps) + " | min high-quality share |",
             "|---|---|" + "---|" * len(caps) + "---:|"]
    by = {(r["cap"], r["method"], r["seed"]): r for r in records}
    verdicts = {}
    for m in methods:
        cells, hq = [], []
        for c in caps:
            rs = [by.get((c, m, s)) for s in seeds]
            modes = ["-" if r is None else str(r["modes_covered"]) for r in rs]
            done = [r for r in rs if r is not None]
            good = sum(r["modes_covered"] >= min_modes for r in done)
            hq += [r["high_quality"] for r in done if r["modes_covered"] >= min_modes]
            if len(done) < len(seeds):
                ok = "incomplete"
            elif expect[m] == "learns":
                ok = "ok" if good >= min_seeds else "NOT MET"
            else:
                ok = "ok" if len(done) - good >= min_seeds else "NOT MET"
            verdicts[(m, c)] = ok
            cells.append(f"[{', '.join(modes)}] {ok}")
        lines.append(f"| {m} | {expect[m]} | " + " | ".join(cells) + f" | {min(hq):.2f} |" if hq else
                     f"| {m} | {expect[m]} | " + " | ".join(cells) + " | - |")
    cpu = sum(r["cpu_s"] for r in records)
    lines += ["", f"{len(records)} runs, {cpu / 60:.1f} CPU-minutes in all (one thread per run)."]
    return "\n".join(lines) + "\n", verdicts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", nargs=4, metavar=("CAP", "METHOD", "SEED", "STEPS"), help=argparse.SUPPRESS)
    ap.add_argument("--method", nargs="+", default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--caps", nargs="+", choices=CAPS, default=list(CAPS))
    ap.add_argument("--steps", type=int, default=None,
                    help="generator steps of every method (default: the demo's, demo.default_steps)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "demo_sweep"))
    ap.add_argument("--table-only", action="store_true", help="only rewrite results.md from runs.jsonl")
    args = ap.parse_args(argv)
    if args.worker:
        cap, method, seed, steps = args.worker
        return worker(cap, method, int(seed), int(steps))

    sys.path.insert(0, ROOT)
    from fastgan import demo

    methods = args.method or list(demo.METHODS)
    def config_of(m):  # as the worker records it (JSON: tuples become lists)
        return json.loads(json.dumps({k: v for k, v in dataclasses.asdict(demo.METHODS[m]).items()
                                      if k not in ("penalty", "source")}))

    def steps_of(m):
        return args.steps or demo.default_steps("8gaussians", m)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "runs.jsonl")
    records = []
    if os.path.exists(path):
        with open(path) as f:
            records = [r for r in map(json.loads, f)
                       if r["method"] in demo.METHODS and r["steps"] == steps_of(r["method"])
                       and (r["cap"] != "avx2" or r.get("mkl_instructions") == "AVX2")
                       and r.get("config", config_of(r["method"])) == config_of(r["method"])]
    have = {(r["cap"], r["method"], r["seed"]) for r in records}
    # seed by seed (an interrupted sweep leaves whole seeds done), expensive methods first within a seed
    jobs = [(c, m, s, steps_of(m)) for s in args.seeds
            for m in sorted(methods, key=lambda n: -demo._cost("8gaussians", n, args.steps))
            for c in args.caps if (c, m, s) not in have and not args.table_only]
    print(f"{len(jobs)} runs to do ({len(have)} already in {path}), {args.jobs} at a time", file=sys.stderr)
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool, open(path, "a") as f:
        futures = [pool.submit(launch, job) for job in jobs]
        for i, fut in enumerate(concurrent.futures.as_completed(futures)):  # saved as soon as done
            rec = fut.result()
            f.write(json.dumps(rec) + "\n")
            f.flush()
            records.append(rec)
            print(f"[{i + 1}/{len(jobs)} {time.time() - t0:.0f}s] {rec['cap']} {rec['method']} seed {rec['seed']}: "
                  f"{rec['modes_covered']} modes", file=sys.stderr)
    budget = (f"{args.steps} generator steps" if args.steps else
              f"{demo.CRITIC_STEPS['8gaussians']} critic updates per run (generator steps: "
              f"{demo.CRITIC_STEPS['8gaussians']} / n_critic)")
    header = (f"# demo sweep: 8 Gaussians, {budget}, batch 256\n\n"
              f"Machine: {machine()}. Date: {datetime.date.today()}.\n"
              f"Command: `python benchmarks/demo_sweep.py --seeds {' '.join(map(str, args.seeds))}`.")
    text, verdicts = table(records, methods, args.seeds, args.caps, demo.EXPECT, demo.MIN_MODES_LEARNED,
                           demo.MIN_SEEDS, header)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    print(text)
    return 0 if all(v == "ok" for v in verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
