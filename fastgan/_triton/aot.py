"""Ahead-of-time compile of fastgan's Triton kernels for GPUs this machine does not have.

``compile_specs(specs, ccs)`` compiles each recorded launch specialization (see
``fastgan._triton._launch.recording``) with ``triton.compile(ASTSource(...), target=GPUTarget(
"cuda", cc, 32))``: Triton's front end, its LLVM/PTX back end and its bundled ``ptxas``, no GPU
and no driver needed. It returns, per (kernel, specialization, cc), the registers, shared memory,
local (spill) memory and spill count that ptxas assigned, read from the cubin with the bundled
``cuobjdump --dump-resource-usage``.

Must run in a process where TRITON_INTERPRET is not set (the interpreter wraps kernels in objects
the compiler cannot take): ``python -m fastgan._triton.aot specs.json`` reads specs and prints
JSON results; ``tests/test_triton_aot.py`` runs it so.
"""
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ARCHS = (90, 80)  # H100/H200 and A100


def _constexpr_value(v):
    import triton.language as tl

    if v["kind"] == "dtype":
        return tl.dtype(v["value"])
    return v["value"]


def _kernel(name):
    mod, qual = name.split(":")
    return getattr(importlib.import_module(mod), qual)


def _cuobjdump():
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else shutil.which("cuobjdump")


def resource_usage(cubin: bytes) -> dict:
    """{"regs", "shared", "local", "stack"} of the single function in ``cubin`` (bytes but regs)."""
    tool = _cuobjdump()
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    fields = dict(re.findall(r"\b(REG|SHARED|LOCAL|STACK):(\d+)", out))
    return {"regs": int(fields.get("REG", -1)), "shared": int(fields.get("SHARED", -1)),
            "local": int(fields.get("LOCAL", -1)), "stack": int(fields.get("STACK", -1))}


def compile_one(spec, cc):
    """Compile one specialization for sm_<cc>; returns its resource usage (raises on failure)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    name, signature, constexprs = spec
    fn = _kernel(name)
    if not isinstance(fn, triton.runtime.jit.JITFunction):
        raise RuntimeError(f"{name} is a {type(fn).__name__}, not a JITFunction: is TRITON_INTERPRET set?")
    src = ASTSource(fn, dict(signature), {k: _constexpr_value(v) for k, v in constexprs.items()})
    k = triton.compile(src, target=GPUTarget("cuda", cc, 32))
    usage = resource_usage(k.asm["cubin"])
    # ptxas reports spills as local memory; shared includes the static reduction scratch
    usage["spills"] = usage["local"]
    usage["shared_triton"] = int(k.metadata.shared)
    return usage


def spec_key(spec):
    return json.dumps(spec, sort_keys=True)


def _compile_row(job):
    spec, cc = job
    row = {"kernel": spec[0], "signature": spec[1], "constexprs": spec[2], "cc": cc}
    try:
        row.update(compile_one(spec, cc), ok=True)
    except Exception as e:  # noqa: BLE001 - reported per kernel, the caller asserts
        row.update(ok=False, error=f"{type(e).__name__}: {str(e)[-3000:]}")
    return row


def compile_specs(specs, ccs=ARCHS, workers=1):
    """[{"kernel", "signature", "constexprs", "cc", "ok", "error" | usage...}] for every spec x cc,
    in ``workers`` processes (forked: call before this process has compiled anything)."""
    jobs = [(spec, cc) for spec in specs for cc in ccs]
    if workers <= 1:
        return [_compile_row(j) for j in jobs]
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_compile_row, jobs, chunksize=1)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: the AOT compile needs real JITFunctions")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the runtime default; silences 3.9's warning
    with open(argv[0]) as f:
        specs = json.load(f)
    ccs = tuple(int(c) for c in argv[1].split(",")) if len(argv) > 1 else ARCHS
    workers = min(4, len(os.sched_getaffinity(0)))
    json.dump(compile_specs(specs, ccs, workers), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
