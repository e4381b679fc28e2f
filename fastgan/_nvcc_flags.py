"""nvcc flags of fastgan's CUDA kernels: the one list setup.py builds with and
tests/test_cuda_compile.py compile-checks with (setup.py reads this file with runpy, without
importing fastgan).

No ``--use_fast_math``: it would turn on approximate division and square root (the penalty divides
by the norm), ``__powf`` (WGAN-div's p = 6 through an approximate exp2/log2) and flush denormals to
zero, so results would drift from the CPU kernels and the reference by more than rounding. These
kernels are memory bound; the precise instructions are not their bottleneck. The precise-math
switches are spelled out so a later edit cannot flip them silently. FMA contraction stays on (the
nvcc default): a fused multiply-add rounds once, so it is never less accurate; it makes CUDA and
CPU results differ in the last bit, which the tests' tolerances already allow.
"""
NVCC_FLAGS = [
    "-O3",
    "-std=c++20",
    "-lineinfo",  # source lines for compute-sanitizer and profilers; no effect on the code
    "--prec-div=true",
    "--prec-sqrt=true",
    "--ftz=false",
    "--fmad=true",
]
