"""Critic steps with each penalty method: time and peak memory, one subprocess per measurement.

``python -m fastgan.bench_fd`` (also run by ``python -m fastgan bench --ops penalty_methods``, which
times the same steps round-robin in-process). Peak memory is VmHWM from /proc/self/status of a
fresh process that builds the critic and runs the steps of one method only (ru_maxrss would carry
the parent's peak over fork). Methods: ``exact`` (double backward; the ViT critic under the math
attention kernel for the whole step, the fused one has no double backward), ``exact_pm`` (ViT rows
only: the math kernel only around the penalty, the loss's own D(real), D(fake) on the fused kernel,
as a user who knows this would write it), ``fd`` (method="finite_difference", fused attention),
``approx`` (approx_r1_penalty; on the R1 rows only). Time: wall clock and the process's CPU time
(1 thread: CPU time is what the step costs when other jobs share the cores; wall time then also
counts the time the scheduler gave to them).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import fastgan as fg

from ._bench_models import ViTCritic, dcgan_critic, gelu_mlp_critic

# name: (critic factory, input shape without batch, batch, label)
CRITICS = {
    "dcgan": (lambda: dcgan_critic(), (3, 32, 32), 64, "DCGAN 3x32x32 (LeakyReLU) B=64"),
    "gelu_mlp": (lambda: gelu_mlp_critic(3 * 32 * 32, 512, 3), (3 * 32 * 32,), 64, "GELU MLP 3072-512x3 B=64"),
    "vit": (lambda: ViTCritic(img=64, patch=4, width=128, depth=2, heads=4), (3, 64, 64), 32,
            "ViT 2 blocks width 128, 256 tokens, B=32"),
}
QUICK = {"dcgan": (lambda: dcgan_critic(16), (3, 32, 32), 8, "DCGAN ch16 B=8"),
         "gelu_mlp": (lambda: gelu_mlp_critic(64, 64, 2), (64,), 16, "GELU MLP 64-64x2 B=16"),
         "vit": (lambda: ViTCritic(img=16, patch=4, width=32, depth=1, heads=2), (3, 16, 16), 4, "ViT 16 tokens B=4")}


def make(critic, quick=False, seed=0):
    factory, shape, b, label = (QUICK if quick else CRITICS)[critic]
    torch.manual_seed(seed)
    D = factory()
    g = torch.Generator().manual_seed(seed + 1)
    real = torch.randn((b,) + shape, generator=g)
    fake = torch.randn((b,) + shape, generator=g)
    alpha = torch.rand(b, generator=g)
    return D, real, fake, alpha, label


def _math_attention(on):
    """The math SDPA kernel (the only one with a double backward) when ``on``; else nothing."""
    if on:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.MATH)
    import contextlib
    return contextlib.nullcontext()


def _context(critic, method):
    # exact: the whole step under the math kernel
    return _math_attention(critic == "vit" and method == "exact")


def _penalty_context(method):
    # exact_pm: the math kernel only where double backward needs it (a no-op on critics without SDPA)
    return _math_attention(method == "exact_pm")


def _fg_method(method):
    """fastgan's ``method=`` for one of this module's methods (approx has its own function)."""
    return "double_backward" if method in ("exact", "exact_pm") else "finite_difference"


def loss_fn(D, real, fake, alpha, penalty, method):
    """The critic loss: WGAN + gradient penalty ("gp") or non-saturating + R1 ("r1")."""
    m = _fg_method(method)
    if penalty == "gp":
        loss = D(fake).mean() - D(real).mean()
        with _penalty_context(method):
            return loss + fg.gradient_penalty(D, real, fake, alpha=alpha, method=m)
    s_real = D(real)
    loss = F.softplus(-s_real).mean() + F.softplus(D(fake)).mean()
    if method == "approx":
        return loss + fg.approx_r1_penalty(D, real, weight=100.0, sigma=0.01, scores=s_real)
    with _penalty_context(method):
        return loss + fg.r1_penalty(D, real, method=m)


def step_fn(critic, penalty, method, quick=False):
    D, real, fake, alpha, _ = make(critic, quick)
    opt = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.9))
    def step():
        with _context(critic, method):
            loss = loss_fn(D, real, fake, alpha, penalty, method)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def penalty_grads(critic, penalty, method, quick=False, dtype=torch.float32):
    """Parameter gradients of the penalty alone (same init and data for every method)."""
    D, real, fake, alpha, _ = make(critic, quick)
    D, real, fake, alpha = D.to(dtype), real.to(dtype), fake.to(dtype), alpha.to(dtype)
    m = _fg_method(method)
    with _context(critic, method):
        p = (fg.gradient_penalty(D, real, fake, alpha=alpha, method=m) if penalty == "gp"
             else fg.r1_penalty(D, real, method=m))
    grads = torch.autograd.grad(p, list(D.parameters()), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(q)).flatten() for g, q in zip(grads, D.parameters())])


def rel_err(critic, penalty, quick=False, dtype=torch.float32):
    """||g_fd - g_exact|| / ||g_exact|| of the penalty's parameter gradient."""
    a = penalty_grads(critic, penalty, "fd", quick, dtype).double()
    b = penalty_grads(critic, penalty, "exact", quick, dtype).double()
    return float((a - b).norm() / b.norm())


def vm_hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def _worker(critic, penalty, method, steps, quick, threads):
    torch.set_num_threads(threads)
    step = step_fn(critic, penalty, method, quick)
    base = vm_hwm_kib()
    step()                                    # warm-up (allocator, lazy init)
    times, cpu = [], []
    for _ in range(steps):
        c0, t0 = time.process_time(), time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    times.sort()
    cpu.sort()
    return {"critic": critic, "penalty": penalty, "method": method, "median_s": times[len(times) // 2],
            "min_s": times[0], "median_cpu_s": cpu[len(cpu) // 2], "vmhwm_kib": vm_hwm_kib(),
            "vmhwm_before_kib": base}


def measure(critic, penalty, method, steps=5, quick=False, threads=1):
    """One fresh subprocess: median seconds per critic step and VmHWM."""
    cmd = [sys.executable, "-m", "fastgan.bench_fd", "--worker", critic, penalty, method,
           "--steps", str(steps), "--threads", str(threads)] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


ROWS = [("dcgan", "gp"), ("gelu_mlp", "gp"), ("vit", "gp"), ("vit", "r1")]


def run(rounds=3, steps=5, quick=False, threads=1):
    """Round-robin over methods (load drifts): per row, medians over rounds of each method."""
    results = []
    for critic, penalty in ROWS:
        methods = ["exact"] + (["exact_pm"] if critic == "vit" else []) + ["fd"] + (["approx"] if penalty == "r1" else [])
        per = {m: [] for m in methods}
        for _ in range(rounds):
            for m in methods:
                per[m].append(measure(critic, penalty, m, steps, quick, threads))
        row = {"critic": critic, "penalty": penalty, "label": make(critic, quick)[4],
               "fd_rel_err_f32": rel_err(critic, penalty, quick)}
        for m, rs in per.items():
            ts = sorted(r["median_s"] for r in rs)
            mem = sorted(r["vmhwm_kib"] for r in rs)
            cs = sorted(r["median_cpu_s"] for r in rs)
            row[m] = {"median_s": ts[len(ts) // 2], "median_cpu_s": cs[len(cs) // 2],
                      "vmhwm_mib": mem[len(mem) // 2] / 1024,
                      "rounds_s": [r["median_s"] for r in rs], "rounds_cpu_s": [r["median_cpu_s"] for r in rs]}
        row["fd_speedup"] = row["exact"]["median_s"] / row["fd"]["median_s"]
        row["fd_speedup_cpu"] = row["exact"]["median_cpu_s"] / row["fd"]["median_cpu_s"]
        if "exact_pm" in row:
            row["fd_speedup_pm"] = row["exact_pm"]["median_s"] / row["fd"]["median_s"]
            row["fd_speedup_pm_cpu"] = row["exact_pm"]["median_cpu_s"] / row["fd"]["median_cpu_s"]
        row["fd_mem_ratio"] = row["fd"]["vmhwm_mib"] / row["exact"]["vmhwm_mib"]
        row["loadavg"] = _loadavg()
        results.append(row)
        print(format_row(row), flush=True)
    return results


def _loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def format_row(r):
    s = (f"{r['label']:<42} {r['penalty']:<3} exact {r['exact']['median_s'] * 1e3:8.1f} ms "
         f"(cpu {r['exact']['median_cpu_s'] * 1e3:.1f}) {r['exact']['vmhwm_mib']:7.0f} MiB | fd "
         f"{r['fd']['median_s'] * 1e3:8.1f} ms (cpu {r['fd']['median_cpu_s'] * 1e3:.1f}) {r['fd']['vmhwm_mib']:7.0f} MiB"
         f" | fd speedup {r['fd_speedup']:.2f}x (cpu {r['fd_speedup_cpu']:.2f}x), memory {r['fd_mem_ratio']:.2f}x, "
         f"fd grad rel err {r['fd_rel_err_f32']:.1e}")
    if "exact_pm" in r:
        s += (f" | exact_pm {r['exact_pm']['median_s'] * 1e3:.1f} ms (cpu {r['exact_pm']['median_cpu_s'] * 1e3:.1f}), "
              f"fd speedup vs it {r['fd_speedup_pm']:.2f}x (cpu {r['fd_speedup_pm_cpu']:.2f}x)")
    if "approx" in r:
        s += f" | approx {r['approx']['median_s'] * 1e3:.1f} ms {r['approx']['vmhwm_mib']:.0f} MiB"
    return s + f" | loadavg {r.get('loadavg')}"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastgan.bench_fd", description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=3, metavar=("CRITIC", "PENALTY", "METHOD"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(_worker(*a.worker, a.steps, a.quick, a.threads)))
        return 0
    rows = run(a.rounds, a.steps, a.quick, a.threads)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"torch": torch.__version__, "threads": a.threads, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
