"""Build fastgan and its C++/CUDA extension ``fastgan._C``.

CPU kernels (csrc/*.cpp, csrc/cpu/*.cpp) are always built. CUDA kernels (csrc/cuda/*.cu) are
built only when torch has CUDA and a CUDA toolkit is found, or when FORCE_CUDA=1.
Install with ``pip install --no-build-isolation -e .`` so the build uses the torch already
installed (build isolation would download an unpinned, multi-GB CUDA torch).
"""
import glob
import os
import platform
import runpy

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cpu_flags():
    if platform.machine() not in ("x86_64", "AMD64"):
        return set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_has_avx2():
    return {"avx2", "fma", "f16c"} <= _cpu_flags()


def _cpu_has_avx512():
    # the subset torch's AVX512 kernels (at::vec's vec512) are compiled for
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= _cpu_flags()


def _want_cuda():
    import torch

    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, "torch was built without CUDA"
    if cpp_extension.CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    return True, f"torch CUDA {torch.version.cuda}, toolkit at {cpp_extension.CUDA_HOME}"


def extensions():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-std=c++20", "-g0", "-fopenmp", "-Wno-unknown-pragmas"]
    # at::vec picks its SIMD width from CPU_CAPABILITY; torch does this by compiling kernels
    # once per ISA, we compile once for the build machine (the machine that runs it).
    if os.environ.get("FASTGAN_NO_AVX2", "0") != "1" and _cpu_has_avx2():
        cxx += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
        # kernels with an AVX-512 copy (csrc/cpu/*_avx512.cpp: it enables the ISA for itself) are
        # built with it too, and pick it at run time as torch does (CPU and ATEN_CPU_CAPABILITY)
        if os.environ.get("FASTGAN_NO_AVX512", "0") != "1" and _cpu_has_avx512():
            cxx += ["-DFASTGAN_CPU_AVX512"]
    use_cuda, why = _want_cuda()
    kwargs = dict(extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"], py_limited_api=True)
    if use_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        # one list for the build and the compile-check test (fastgan/_nvcc_flags.py says why no fast math)
        kwargs["extra_compile_args"]["nvcc"] = list(
            runpy.run_path(os.path.join(ROOT, "fastgan", "_nvcc_flags.py"))["NVCC_FLAGS"])
        kwargs["define_macros"] = [("FASTGAN_WITH_CUDA", None)]
        ext = cpp_extension.CUDAExtension("fastgan._C", sources, **kwargs)
    else:
        ext = cpp_extension.CppExtension("fastgan._C", sources, **kwargs)
    print(f"fastgan: building CPU kernels; CUDA kernels {'ON' if use_cuda else 'OFF'} ({why})")
    return [ext]


setup(
    name="fastgan",
    version="0.1.0",
    packages=find_packages(include=["fastgan", "fastgan.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
