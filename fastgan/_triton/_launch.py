"""Every Triton launch of fastgan goes through :func:`launch`.

Why one place:

* **Device and stream.** Triton launches on the *current* CUDA device and its current stream. A
  tensor on ``cuda:1`` while ``cuda:0`` is current would be launched on the wrong device (illegal
  address, or reads unordered with the producer's stream). :func:`launch` makes the tensors'
  device current for the launch, so the kernel runs on that device's current stream, the stream
  torch ordered the inputs on.
* **The ahead-of-time compile tier.** :func:`recording` collects the specialization of every launch
  (kernel, argument types, constexpr values), so ``tests/test_triton_aot.py`` compiles for sm_90 and
  sm_80 exactly what the launchers pass, and a new kernel or constexpr cannot escape it.
* **fp64 scalars.** Triton types a Python float argument as fp32, so an fp64 kernel would see its
  ``target``/``power``/``eps`` rounded. :func:`f64_bits` passes the float64 bit pattern as an
  int64 instead; kernels decode it with :func:`f64` (exact in float64, rounded once to fp32 in an
  fp32 kernel, as before). Unlike a parameter tensor this needs no host->device copy, so it stays
  CUDA-graph capturable.
"""
import contextlib
import struct

import torch
import triton
import triton.language as tl

_recorders = []


def f64_bits(x: float) -> int:
    """The IEEE-754 float64 bit pattern of ``x`` as a signed 64-bit int (``f64`` decodes it).

    Example::

        >>> f64_bits(1.0) == 0x3FF0000000000000
        True
    """
    return struct.unpack("<q", struct.pack("<d", float(x)))[0]


@triton.jit
def f64(bits, ACC: tl.constexpr):
    """The float passed as ``f64_bits(x)``, in ``ACC`` (float64: exact; float32: rounded once)."""
    # an int32 in the interpreter when the value is small; widen before reinterpreting the bits
    return tl.cast(tl.cast(bits, tl.int64), tl.float64, bitcast=True).to(ACC)


def _device(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    raise ValueError("launch: a Triton kernel needs at least one tensor argument")


def kernel_name(kernel) -> str:
    """``module:qualname`` of a ``@triton.jit`` kernel (JITFunction or interpreter wrapper)."""
    fn = getattr(kernel, "fn", kernel)
    return f"{fn.__module__}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def arg_names(kernel):
    return list(getattr(kernel, "arg_names"))


def _type_str(value):
    """The Triton signature type of a runtime (non-constexpr) argument, as its JIT would see it
    (written out rather than taken from Triton's private helpers, which change between versions)."""
    if isinstance(value, torch.Tensor):
        return "*" + {torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16",
                      torch.bfloat16: "bf16", torch.int64: "i64", torch.int32: "i32", torch.int8: "i8",
                      torch.uint8: "u8", torch.bool: "i1"}[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else ("i64" if -2**63 <= value < 2**63 else "u64")
    if isinstance(value, float):
        return "fp32"  # what Triton makes of a Python float; fastgan passes f64_bits instead
    raise TypeError(f"launch: unsupported runtime argument {value!r} ({type(value).__name__})")


def _constexpr_str(value):
    if isinstance(value, tl.dtype):
        return {"kind": "dtype", "value": str(value)}
    if isinstance(value, bool):
        return {"kind": "bool", "value": value}
    if isinstance(value, int):
        return {"kind": "int", "value": value}
    raise TypeError(f"launch: unsupported constexpr value {value!r} ({type(value).__name__})")


def specialization(kernel, args, constexprs):
    """(kernel name, {arg: type}, {constexpr: json value}) of one launch: pure data, JSON-able.

    ``args`` are the runtime arguments in order, ``constexprs`` the keyword constexprs. Annotated
    argument types (``x: tl.int64``) win over the value's type, as in Triton's JIT."""
    names = arg_names(kernel)
    fn = getattr(kernel, "fn", kernel)
    ann = getattr(fn, "__annotations__", {})
    runtime = [n for n in names if n not in constexprs]
    if len(runtime) != len(args):
        raise TypeError(f"launch: {kernel_name(kernel)} takes {len(runtime)} runtime arguments "
                        f"({runtime}), got {len(args)}")
    sig = {}
    for n, a in zip(runtime, args):
        t = ann.get(n)
        sig[n] = str(t).removeprefix("tl.") if t is not None and not isinstance(a, torch.Tensor) else _type_str(a)
        sig[n] = {"int64": "i64", "int32": "i32"}.get(sig[n], sig[n])
    for n in constexprs:
        sig[n] = "constexpr"
    return kernel_name(kernel), sig, {k: _constexpr_str(v) for k, v in constexprs.items()}


@contextlib.contextmanager
def recording():
    """Collect the specialization of every :func:`launch` in this block (a list of tuples)."""
    rec = []
    _recorders.append(rec)
    try:
        yield rec
    finally:
        _recorders.remove(rec)


def _guard(device):
    """The context that makes ``device`` current (CUDA), or nothing (CPU: the interpreter)."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def launch(kernel, grid, *args, **constexprs):
    """``kernel[grid](*args, **constexprs)`` on the device of the first tensor argument.

    Example::

        >>> launch(_scale, (triton.cdiv(n, BLOCK),), w, out, sigma, n, BLOCK=BLOCK, ACC=tl.float32)
    """
    device = _device(args)
    for rec in _recorders:
        rec.append(specialization(kernel, args, constexprs))
    with _guard(device):
        kernel[grid](*args, **constexprs)
