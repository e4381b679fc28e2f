"""Where a finite-difference critic step spends its time (ViT critic of fastgan.bench_fd, 1 thread).

    python benchmarks/fd_phases.py passes --rounds 5   # single critic passes, flash vs math kernel
    python benchmarks/fd_phases.py steps --rounds 7    # whole WGAN-GP steps: exact, fd, bare floor

Everything runs round-robin in one process; each figure is the median over rounds of the thread's
CPU time (``time.thread_time``; on a shared machine wall time also counts other jobs' slices) and
of wall time. ``steps`` also prints paired per-round ratios against the first kind. See
benchmarks/NOTES.md, "Finite-difference penalties: where the time goes".

Step kinds: ``exact_all_math`` (what ``bench_fd``'s "exact" runs: the whole step under the math
attention kernel), ``exact_pen_math`` (the math kernel only around the penalty), ``fd``
(method="finite_difference"), ``floor`` (the same critic passes as fd with none of fastgan's
bookkeeping: value pass with an input-only backward, then D(x+d) - D(x-d) with full backward),
``loss_only`` (the WGAN loss without a penalty).
"""
import argparse
import contextlib
import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import fastgan as fg
from fastgan import bench_fd


def _math():
    return sdpa_kernel(SDPBackend.MATH)


def pass_cases():
    D, real, fake, alpha, _ = bench_fd.make("vit")
    x = real
    params = list(D.parameters())

    def fwd_nograd():
        with torch.no_grad():
            D(x)

    def fwd():
        D(x).sum()

    def fwd_bwd_full():
        D(x).sum().backward()

    def fwd_bwd_x():
        xr = x.detach().requires_grad_()
        torch.autograd.grad(D(xr).sum(), xr)

    def fwd_bwd_params():
        torch.autograd.grad(D(x).sum(), params)

    cases = {}
    for name, f in [("fwd no_grad", fwd_nograd), ("fwd", fwd), ("fwd+bwd (params)", fwd_bwd_full),
                    ("fwd+bwd (input only)", fwd_bwd_x), ("fwd+bwd (params, autograd.grad)", fwd_bwd_params)]:
        cases[f"{name}, fused"] = (f, contextlib.nullcontext)
        cases[f"{name}, math"] = (f, _math)

    def exact_pen():
        with _math():
            p = fg.gradient_penalty(D, real, fake, alpha=alpha)
        p.backward()

    def fd_pen():
        fg.gradient_penalty(D, real, fake, alpha=alpha, method="finite_difference").backward()

    cases["exact GP penalty + backward, math"] = (exact_pen, contextlib.nullcontext)
    cases["fd GP penalty + backward, fused"] = (fd_pen, contextlib.nullcontext)

    def run(name):
        f, ctx = cases[name]
        D.zero_grad(set_to_none=True)
        with ctx():
            f()
    return list(cases), run


def step_cases(kinds):
    def make_step(kind):
        D, real, fake, alpha, _ = bench_fd.make("vit")
        opt = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.9))
        a = alpha.view(-1, 1, 1, 1)
        x = a * real + (1 - a) * fake

        def step():
            if kind == "exact_all_math":
                with _math():
                    loss = D(fake).mean() - D(real).mean() + fg.gradient_penalty(D, real, fake, alpha=alpha)
            elif kind == "exact_pen_math":
                loss = D(fake).mean() - D(real).mean()
                with _math():
                    loss = loss + fg.gradient_penalty(D, real, fake, alpha=alpha)
            elif kind == "fd":
                loss = D(fake).mean() - D(real).mean() + fg.gradient_penalty(
                    D, real, fake, alpha=alpha, method="finite_difference")
            elif kind == "floor":
                loss = D(fake).mean() - D(real).mean()
                xr = x.detach().requires_grad_()
                (g,) = torch.autograd.grad(D(xr).sum(), xr)
                d = 1e-3 * g
                loss = loss + (D(x + d).sum() - D(x - d).sum())
            elif kind == "loss_only":
                loss = D(fake).mean() - D(real).mean()
            else:
                raise ValueError(f"unknown kind {kind!r}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    steps = {k: make_step(k) for k in kinds}
    return kinds, lambda k: steps[k]()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("passes", "steps"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--kinds", default="exact_all_math,exact_pen_math,fd,floor,loss_only")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    names, run = pass_cases() if a.what == "passes" else step_cases(a.kinds.split(","))
    for n in names:   # warm-up
        run(n)
    load0 = open("/proc/loadavg").read().split()[:3]
    res = {n: [] for n in names}
    for _ in range(a.rounds):
        for n in names:
            c, w = time.thread_time(), time.perf_counter()
            run(n)
            res[n].append((time.thread_time() - c, time.perf_counter() - w))
    load1 = open("/proc/loadavg").read().split()[:3]
    for n in names:
        print(f"{n:<40} cpu {statistics.median(c for c, _ in res[n]) * 1e3:8.1f} ms  "
              f"wall {statistics.median(w for _, w in res[n]) * 1e3:8.1f} ms")
    if a.what == "steps":
        ref = names[0]
        for n in names[1:]:
            rc = statistics.median(res[ref][i][0] / res[n][i][0] for i in range(a.rounds))
            rw = statistics.median(res[ref][i][1] / res[n][i][1] for i in range(a.rounds))
            print(f"{ref} / {n}: paired median ratio, cpu {rc:.3f}, wall {rw:.3f}")
    print("loadavg at start", " ".join(load0), "| at end", " ".join(load1))


if __name__ == "__main__":
    main()
