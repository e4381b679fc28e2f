"""Build fastgan's CUDA sources (csrc/cuda/*.cu) for the CPU against the emulation in emu/.

Each .cu is rewritten (into the build dir, never in place) so that g++ compiles it with
``emu/cuda_emu.h`` force-included and ``emu/stubs`` standing in for c10/cuda and ATen/cuda:

- ``kernel<...><<<grid, block, smem, stream>>>(args)`` becomes ``::cuemu::launch(...)``, which
  checks the configuration (and ``__launch_bounds__``) and runs the kernel's blocks on the CPU;
- ``__shared__`` variables become function statics registered with the runtime;
- ``TORCH_LIBRARY_IMPL(fastgan, CUDA, m)`` becomes ``TORCH_LIBRARY_IMPL(fastgan_emu, CPU, m)``,
  ``DeviceType::CUDA`` becomes ``DeviceType::CPU`` (CPU tensors stand for cuda:0);
- line numbers are kept (plus ``#line``) so diagnostics name the original .cu lines.

The op schemas are those of csrc/ops.cpp, registered again as ``fastgan_emu::``. The library is
cached under ``build/cuda_emu/<variant>/`` (``FASTGAN_EMU_CACHE`` overrides the root),
keyed by every input, so a test run builds it once. Usage::

    python -m tests.cuda_emu.build [thread|address]   # build (and print the .so path)
"""
import fcntl
import hashlib
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
EMU = pathlib.Path(__file__).resolve().parent / "emu"
NS = "fastgan_emu"

SANITIZE_FLAGS = {
    None: ["-O1", "-g0"],
    "thread": ["-O1", "-g", "-fsanitize=thread"],
    "address": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,alignment",
                "-fno-sanitize-recover=all"],
}


class RewriteError(RuntimeError):
    pass


def _match_back(text, end, open_ch, close_ch):
    """Index of the ``open_ch`` matching the ``close_ch`` at ``end``, scanning backwards."""
    depth = 0
    for k in range(end, -1, -1):
        if text[k] == close_ch:
            depth += 1
        elif text[k] == open_ch:
            depth -= 1
            if depth == 0:
                return k
    raise RewriteError(f"unbalanced {open_ch}{close_ch} before offset {end}")


def _match_fwd(text, start, open_ch, close_ch):
    depth = 0
    for k in range(start, len(text)):
        if text[k] == open_ch:
            depth += 1
        elif text[k] == close_ch:
            depth -= 1
            if depth == 0:
                return k
    raise RewriteError(f"unbalanced {open_ch}{close_ch} after offset {start}")


def launch_bounds(text):
    """{kernel name: __launch_bounds__ expression} for the kernels of a source."""
    out = {}
    for m in re.finditer(r"__global__\s+void\s+__launch_bounds__\s*\(", text):
        close = _match_fwd(text, m.end() - 1, "(", ")")
        name = re.match(r"\s*(\w+)\s*\(", text[close + 1:])
        if not name:
            raise RewriteError(f"cannot find the kernel name after __launch_bounds__ at offset {m.start()}")
        out[name.group(1)] = text[m.end():close].strip()
    return out


def _rewrite_launches(text, bounds):
    out, pos, count = [], 0, 0
    while True:
        i = text.find("<<<", pos)
        if i < 0:
            break
        # the kernel expression before <<<: name, optionally with template arguments
        k = i - 1
        while text[k].isspace():
            k -= 1
        if text[k] == ">":
            k = _match_back(text, k, "<", ">") - 1
        end_name = k + 1
        while k >= 0 and (text[k].isalnum() or text[k] in "_:"):
            k -= 1
        start = k + 1
        name = re.match(r"[\w:]+", text[start:end_name])
        if not name:
            raise RewriteError(f"no kernel name before <<< at offset {i}")
        base = name.group(0).split("::")[-1]
        j = text.find(">>>", i)
        if j < 0:
            raise RewriteError(f"<<< without >>> at offset {i}")
        cfg = text[i + 3:j]
        p = j + 3
        while text[p].isspace():
            p += 1
        if text[p] != "(":
            raise RewriteError(f"no argument list after >>> at offset {j}")
        q = _match_fwd(text, p, "(", ")")
        kernel = text[start:i].rstrip()
        args = text[p + 1:q]
        label = " ".join(kernel.split()).replace('"', r"\"")
        rep = (f"::cuemu::launch(CUEMU_SITE, \"{label}\", {bounds.get(base, '1024')}, ::cuemu::Config({cfg}), "
               f"{kernel}{', ' if args.strip() else ''}{args})")
        missing = text[start:q + 1].count("\n") - rep.count("\n")
        out.append(text[pos:start] + rep + "\n" * missing)
        pos = q + 1
        count += 1
    out.append(text[pos:])
    return "".join(out), count


def _rewrite_shared(text):
    def repl(m):
        extern, decl = m.group(1), " ".join(m.group(2).split())
        d = re.match(r"^(.*?)\b(\w+)\s*((?:\[[^\]]*\])*)$", decl)
        if not d:
            raise RewriteError(f"cannot parse __shared__ declaration {decl!r}")
        typ, name, ext = d.group(1).strip(), d.group(2), d.group(3)
        typ = re.sub(r"__align__\s*\(\s*\d+\s*\)", "", typ).strip()
        nl = "\n" * m.group(0).count("\n")
        if extern:  # dynamic shared memory: the launch's smem bytes
            return f"{typ}* {name} = static_cast<{typ}*>(::cuemu::dynamic_smem());{nl}"
        return (f"static {typ} {name}{ext}; "
                f"static ::cuemu::SharedReg cuemu_shared_{name}_(&{name}, sizeof({name}));{nl}")

    return re.subn(r"(extern\s+)?__shared__\s+([^;]+?)\s*;", repl, text)


def rewrite_cu(text, path, require_impl=True):
    """The emulation source for one .cu file (same line numbers, plus #line)."""
    bounds = launch_bounds(text)
    text, n_launch = _rewrite_launches(text, bounds)
    text, _ = _rewrite_shared(text)
    text, n_impl = re.subn(r"TORCH_LIBRARY_IMPL\(\s*fastgan\s*,\s*CUDA\s*,", f"TORCH_LIBRARY_IMPL({NS}, CPU,", text)
    text = re.sub(r"\bDeviceType::CUDA\b", "DeviceType::CPU", text)
    text = re.sub(r"\b(at|c10|torch)::kCUDA\b", r"\1::kCPU", text)
    text = re.sub(r"\.is_cuda\(\)", ".is_cpu()", text)
    text = re.sub(r"\b(\w+)\.get_device\(\)", r"::cuemu::get_device(\1)", text)
    leftover = [s for s in ("<<<", ">>>", "__shared__", "TORCH_LIBRARY_IMPL(fastgan,") if s in text]
    if leftover or (require_impl and n_impl == 0):
        raise RewriteError(f"{path}: rewrite incomplete (left: {leftover}, {n_impl} TORCH_LIBRARY_IMPL blocks)")
    if "__global__" in text and n_launch == 0:
        raise RewriteError(f"{path}: kernels but no launch found")
    return f'#line 1 "{path}"\n' + text


def rewrite_schemas(text, path):
    """csrc/ops.cpp's TORCH_LIBRARY(fastgan, m) block, as TORCH_LIBRARY(fastgan_emu, m)."""
    m = re.search(r"TORCH_LIBRARY\(\s*fastgan\s*,\s*m\s*\)\s*\{", text)
    if not m:
        raise RewriteError(f"{path}: no TORCH_LIBRARY(fastgan, m) block")
    end = _match_fwd(text, m.end() - 1, "{", "}")
    line = text.count("\n", 0, m.start()) + 1
    body = text[m.end():end + 1]
    return f'#include <torch/library.h>\n#line {line} "{path}"\nTORCH_LIBRARY({NS}, m) {{{body}\n'


def _sources():
    """[(generated name, text)] for every .cu, the schemas and the runtime."""
    # paths relative to the repository (diagnostics name csrc/cuda/x.cu): the generated text, hence
    # the cache key, is the same in every copy of the tree (tests/mutation's scratch copy shares
    # the cache through FASTGAN_EMU_CACHE and recompiles only what differs)
    rel = lambda p: p.relative_to(ROOT)  # noqa: E731
    out = [(cu.stem + ".cpp", rewrite_cu(cu.read_text(), rel(cu))) for cu in sorted((CSRC / "cuda").glob("*.cu"))]
    if not out:
        raise RewriteError("csrc/cuda has no .cu sources")
    out.append(("ops_emu.cpp", rewrite_schemas((CSRC / "ops.cpp").read_text(), rel(CSRC / "ops.cpp"))))
    out.append(("selftest.cpp", rewrite_cu((EMU / "selftest.cu").read_text(), rel(EMU / "selftest.cu"), False)))
    out.append(("runtime.cpp", f'#line 1 "{rel(EMU / "runtime.cpp")}"\n' + (EMU / "runtime.cpp").read_text()))
    return out


def _flags(sanitize):
    from torch.utils import cpp_extension
    import torch

    inc = [f"-I{EMU / 'stubs'}", f"-I{EMU}", f"-iquote{CSRC / 'cuda'}"]
    inc += [f"-I{p}" for p in cpp_extension.include_paths()]
    abi = int(torch.compiled_with_cxx11_abi())
    return (["-std=c++20", "-fPIC", "-pthread", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-Wno-unknown-pragmas",
             "-include", "cuda_emu.h"] + SANITIZE_FLAGS[sanitize] + inc)


def _hash(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _common_key(flags, cxx):
    """Everything an object depends on besides its own source: headers, flags, compiler, torch."""
    import torch

    deps = sorted(CSRC.rglob("*.h")) + sorted(CSRC.rglob("*.cuh")) + sorted(EMU.rglob("*.h"))
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    return _hash(*[b for p in deps for b in (str(p.relative_to(ROOT)), p.read_bytes())],
                 *[f.replace(str(ROOT), "<root>") for f in flags], cxx, version, torch.__version__, sys.version)


def build(sanitize=None, verbose=False):
    """Path of the emulation library for ``sanitize`` (None, "thread", "address"), built if needed.

    Objects are cached one by one (a change to one .cu recompiles only that file), the library by
    the set of its objects."""
    if sanitize not in SANITIZE_FLAGS:
        raise ValueError(f"sanitize must be one of {list(SANITIZE_FLAGS)}, got {sanitize!r}")
    from torch.utils import cpp_extension

    cxx = os.environ.get("CXX", "g++")
    sources = _sources()
    flags = _flags(sanitize)
    common = _common_key(flags, cxx)
    root = pathlib.Path(os.environ.get("FASTGAN_EMU_CACHE", ROOT / "build" / "cuda_emu")) / (sanitize or "plain")
    objs = [(name, text, root / f"{pathlib.Path(name).stem}-{_hash(common, name, text)}.o") for name, text in sources]
    lib = root / f"libfastgan_emu-{_hash(*[o.name for _, _, o in objs])}.so"
    if lib.exists():
        return lib
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel test process builds the same key: wait for it
        if lib.exists():
            return lib
        procs = []
        for name, text, obj in objs:
            if obj.exists():
                continue
            src = obj.with_suffix(".cpp")
            src.write_text(text)
            cmd = [cxx, "-c", *flags, str(src), "-o", str(obj) + ".tmp"]
            if verbose:
                print(" ".join(cmd), file=sys.stderr)
            procs.append((name, obj, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        errors = []
        for name, obj, p in procs:
            log, _ = p.communicate()
            if p.returncode:
                errors.append(f"--- {name}:\n{log[-6000:]}")
            else:
                os.replace(str(obj) + ".tmp", obj)
        if errors:
            raise RuntimeError("cuda_emu: compiling the emulated CUDA sources failed\n" + "\n".join(errors))
        libdirs = cpp_extension.library_paths()
        cmd = [cxx, "-shared", "-pthread", *[f for f in SANITIZE_FLAGS[sanitize] if f.startswith("-fsanitize")],
               *[str(o) for _, _, o in objs], "-o", str(lib) + ".tmp",
               *[f"-L{d}" for d in libdirs], *[f"-Wl,-rpath,{d}" for d in libdirs], "-lc10", "-ltorch_cpu", "-ltorch"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"cuda_emu: linking failed\n{res.stdout}{res.stderr}")
        os.replace(str(lib) + ".tmp", lib)
    return lib


_loaded = {}


def load(sanitize=None):
    """``torch.ops.fastgan_emu`` with the emulated CUDA kernels, fake kernels and autograd."""
    import torch

    if "ops" not in _loaded:
        torch.ops.load_library(str(build(sanitize)))
        from fastgan.ops import clip, penalty, spectral

        penalty.register(NS)
        spectral.register(NS)
        torch.library.register_fake(f"{NS}::clip_weights_")(clip._clip_fake)
        _loaded["ops"] = getattr(torch.ops, NS)
    return _loaded["ops"]


def sanitizer_runtime(sanitize):
    """The sanitizer runtime to LD_PRELOAD into python for a sanitized build."""
    lib = {"thread": "libtsan.so", "address": "libasan.so"}[sanitize]
    path = subprocess.run([os.environ.get("CXX", "g++"), f"-print-file-name={lib}"], capture_output=True,
                          text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else None, verbose=True))
