"""The mutants: one plausible, single-point bug each, of the kind a kernel author writes.

``M(id, file, find, replace, tests, why)``: ``find`` must occur exactly ``count`` times (default
1) in ``file``; the mutant replaces it with ``replace``; ``tests`` are the pytest node ids or
files that should catch it (the runner runs them with ``-x``). ``equivalent="reason"`` marks a
mutant that cannot change any observable result; it is listed, justified and not counted.
``tests/test_mutation_smoke.py`` (in CI) checks that every mutant still applies to the tree.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class M:
    id: str
    file: str
    find: str
    replace: str
    tests: tuple
    why: str
    count: int = 1
    equivalent: str = ""


T_GNP = ("tests/test_grad_norm.py",)
T_PEN = ("tests/test_penalties.py",)
T_CLIP = ("tests/test_clip.py",)
T_SN = ("tests/test_spectral_norm.py",)
T_LOSS = ("tests/test_losses.py",)

MUTANTS = [
    # ---- fastgan/penalty.py (public API)
    M("pen-gp-alpha-swap", "fastgan/penalty.py",
      "interp = a * real.detach() + (1 - a) * fake.detach()",
      "interp = a * fake.detach() + (1 - a) * real.detach()", T_PEN,
      "WGAN-GP interpolates with alpha on the wrong side"),
    M("pen-r1-gamma-not-halved", "fastgan/penalty.py",
      "return _penalty(_grads(D, {\"real\": real}, scores, scaler)[0], gamma / 2,",
      "return _penalty(_grads(D, {\"real\": real}, scores, scaler)[0], gamma,", ("tests/test_penalties.py::test_r1_r2",),
      "R1 weight gamma instead of gamma/2"),
    M("pen-dragan-std-not-sqrt", "fastgan/penalty.py",
      "delta = math.sqrt(c) * torch.randn(", "delta = c * torch.randn(", ("tests/test_penalties.py::test_dragan_gaussian",),
      "DRAGAN noise std c instead of sqrt(c)"),
    # ---- fastgan/losses.py
    # ---- csrc/gnp_math.h (shared by CPU and CUDA kernels)
    M("gnp-math-onesided-coef", "csrc/gnp_math.h",
      "if (d < acc_t(0)) return acc_t(0);", "if (d <= acc_t(-1)) return acc_t(0);", T_GNP,
      "one-sided derivative not zeroed below the target"),
    # ---- csrc/cpu/clip_kernel.h (the clamp loop of csrc/cpu/clip.cpp, compiled per ISA)
    M("clip-tail-nan-to-hi", "csrc/cpu/clip_kernel.h",
      "if (x > hi) x = hi;", "if (!(x <= hi)) x = hi;", T_CLIP,
      "NaN in the scalar tail becomes hi"),
]
