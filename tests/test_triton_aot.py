"""Ahead-of-time compile tier: every Triton kernel fastgan launches, in every specialization it
launches, compiled for sm_90 and sm_80 with Triton's own compiler and bundled ptxas (no GPU needed).

The interpreter, which runs the Triton kernels in the CPU tests, accepts code that Triton's
compiler rejects (a loop variable reassigned inside the loop was one); this tier compiles what the
GPU would compile. The specializations are not listed by hand: the launchers are driven with
representative inputs (every dtype, every penalty flag combination) while
``fastgan._triton._launch.recording`` records what they pass (argument types, constexpr values),
and the checks below make sure no ``@triton.jit`` function and no launch site escapes.
"""
import ast
import importlib
import json
import os
import pathlib
import pkgutil
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

import fastgan._triton as triton_pkg  # noqa: E402
from fastgan._triton import _launch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# (target, power, one_sided): SUMSQ (R1), and two-sided / one-sided for power 2, 1 and a general one
PENALTY_SETTINGS = [(0.0, 2.0, False)] + [(1.0, p, s) for p in (2.0, 1.0, 6.0) for s in (False, True)]
# every compiled kernel must fit these (sm_80 and sm_90: 255 registers per thread; fastgan's
# kernels are memory bound, so any spill is a regression worth a look)
MAX_REGS = 255


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _drive_launchers():
    """Run every Triton launcher once per representative input; returns the recorded specs."""
    from fastgan._triton import clip, grad_norm, spectral_norm

    dev = _device()
    with _launch.recording() as rec:
        for dt in DTYPES:
            g = torch.randn(3, 5, dtype=dt, device=dev)
            for target, power, one_sided in PENALTY_SETTINGS:
                phi, norms = grad_norm.gnp_forward(g, target, power, one_sided)
                grad_norm.gnp_backward(torch.ones_like(phi), g, norms, target, power, one_sided)
            w = torch.randn(4, 3, 2, dtype=dt, device=dev)
            u = torch.randn(3, dtype=dt, device=dev)
            v = torch.randn(8, dtype=dt, device=dev)
            for n_iter in (0, 1):
                sigmas, us, vs = spectral_norm.sn_power([w], [u], [v], [1], n_iter, 1e-12)
            out = spectral_norm.sn_normalize(w, us[0], vs[0], sigmas[0], 1)
            spectral_norm.sn_normalize_backward(torch.ones_like(out), w, us[0], vs[0], sigmas[0], 1)
            clip.clip_weights_([torch.randn(7, dtype=dt, device=dev), torch.randn(2, 3, dtype=dt, device=dev)],
                               -0.5, 0.5)
    return rec


@pytest.fixture(scope="module")
def specs():
    seen = {}
    for s in _drive_launchers():
        seen.setdefault(json.dumps(s, sort_keys=True), s)
    return list(seen.values())


def _modules():
    return [importlib.import_module(f"fastgan._triton.{m.name}") for m in pkgutil.iter_modules(triton_pkg.__path__)]


def _jit_functions():
    """{module:qualname: function object} of every @triton.jit function in fastgan._triton."""
    import triton
    from triton.runtime.interpreter import InterpretedFunction

    out = {}
    for mod in _modules():
        for name, obj in vars(mod).items():
            if isinstance(obj, (triton.runtime.jit.JITFunction, InterpretedFunction)) \
                    and getattr(obj, "fn", obj).__module__ == mod.__name__:
                out[_launch.kernel_name(obj)] = obj
    return out


def _called_names(fn):
    import inspect

    tree = ast.parse(inspect.getsource(getattr(fn, "fn", fn)).lstrip())
    return {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def test_every_jit_function_is_launched_or_called_by_a_launched_kernel(specs):
    funcs = _jit_functions()
    launched = {s[0] for s in specs}
    assert launched, "no launch recorded"
    reached, todo = set(launched), list(launched)
    while todo:
        name = todo.pop()
        fn = funcs[name]
        scope = getattr(fn, "fn", fn).__globals__
        for callee in _called_names(fn):
            obj = scope.get(callee)
            key = _launch.kernel_name(obj) if obj is not None and hasattr(obj, "fn") else None
            if key in funcs and key not in reached:
                reached.add(key)
                todo.append(key)
    missing = sorted(set(funcs) - reached)
    assert not missing, f"@triton.jit functions no recorded launch reaches (drive them in _drive_launchers): {missing}"


def test_every_launch_goes_through_the_launch_helper():
    """A direct ``kernel[grid](...)`` would escape both the device guard and the AOT tier."""
    offenders = []
    for path in sorted((ROOT / "fastgan" / "_triton").glob("*.py")):
        if path.name == "_launch.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"direct Triton launches (use _launch.launch): {offenders}"


def test_specializations_cover_dtypes_and_flags(specs):
    """The drive reaches every dtype and flag combination (guards the driver itself)."""
    by_kernel = {}
    for name, sig, cx in specs:
        by_kernel.setdefault(name.split(":")[1] + "@" + name.split(":")[0].rsplit(".", 1)[1], []).append((sig, cx))
    ptr_types = {k: {sig[next(iter(sig))] for sig, _ in v} for k, v in by_kernel.items()}
    for k in ("_sumsq@grad_norm", "_scale@grad_norm", "_power@spectral_norm", "_scale@spectral_norm",
              "_clamp_chunks@clip", "_dot_partial@spectral_norm", "_normalize_bwd@spectral_norm"):
        assert ptr_types[k] == {"*fp64", "*fp32", "*fp16", "*bf16"}, (k, ptr_types[k])
    flags = {(cx["ONE_SIDED"]["value"], cx["SUMSQ"]["value"], cx["KIND"]["value"])
             for sig, cx in by_kernel["_scale@grad_norm"]}
    assert len(flags) == 7, flags


def test_no_python_float_arguments(specs):
    """Triton types a Python float as fp32, which rounds an fp64 kernel's parameter: scalars travel
    as ``f64_bits`` ints (decoded by ``f64`` in the kernel) instead."""
    floats = sorted({f"{name}({arg})" for name, sig, _ in specs for arg, t in sig.items() if t in ("fp32", "fp64")})
    assert not floats, f"Python float kernel arguments: {floats}"


def _compile(specs, tmp_path, ccs="90,80"):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    path = tmp_path / "aot_specs.json"
    path.write_text(json.dumps(specs))
    res = subprocess.run([sys.executable, "-m", "fastgan._triton.aot", str(path), ccs], capture_output=True,
                         text=True, env=env, timeout=900, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout)


def test_aot_compile_sm90_sm80(specs, tmp_path):
    rows = _compile(specs, tmp_path)
    assert len(rows) == 2 * len(specs)
    failed = [f"{r['kernel']} cc={r['cc']} {r['signature']} {r['constexprs']}:\n{r['error']}" for r in rows
              if not r["ok"]]
    assert not failed, "Triton compile failed:\n" + "\n\n".join(failed)
    heavy = [r for r in rows if r["regs"] > MAX_REGS or r["spills"] > 0]
    assert not heavy, f"register limit or spills: {heavy}"
    out = os.environ.get("FASTGAN_AOT_REPORT")
    if out:  # benchmarks/NOTES.md's table is made from this file
        pathlib.Path(out).write_text(json.dumps(rows, indent=1))
