"""The mutants: one plausible, single-point bug each, of the kind a kernel author writes.

``M(id, file, find, replace, tests, why)``: ``find`` must occur exactly ``count`` times (default
1) in ``file``; the mutant replaces it with ``replace``; ``tests`` are the pytest node ids or
files that should catch it (the runner runs them with ``-x``, and ``-k k`` when ``k`` is given).
``equivalent="reason"`` marks a mutant that cannot change any observable result; it is listed,
justified and not counted. ``tests/test_mutation_smoke.py`` (in CI) checks that every mutant
still applies to the tree.

Coverage: every CPU kernel (csrc/cpu, csrc/gnp_math.h, csrc/rows.h, csrc/clip.h), the C++ autograd
glue (csrc/*_autograd.cpp), the Triton kernels (fastgan/_triton, through the interpreter) and the
public functions (fastgan/*.py, fastgan/ops) and the CUDA kernels (csrc/cuda/*.cu) through the
emulated CUDA tier (tests/cuda_emu: the real .cu compiled for the CPU; the runner rebuilds the
emulation library for each of those mutants).

Bugs that only break memory safety (an out-of-bounds read of padding, a write past the end that
the next write overwrites) are not listed: no value assertion can see them reliably; they need a
sanitizer build.
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
    k: str = ""  # pytest -k expression, to run only the relevant parametrizations


KE = "tests/test_kernel_edges.py"
SE = "tests/test_sn_edges.py"
T_GNP = ("tests/test_grad_norm.py",)
T_PEN = ("tests/test_penalties.py",)
T_CLIP = ("tests/test_clip.py",)
T_SN = ("tests/test_spectral_norm.py",)
T_LOSS = ("tests/test_losses.py",)
GNP_CPU = dict(tests=(KE,), k="gnp and cpu")
GNP_TRI = dict(tests=(KE,), k="gnp and triton")
CLIP_CPU = dict(tests=(KE,), k="clip and (cpu or threads or counter)")
CLIP_TRI = dict(tests=(KE,), k="clip and triton")
SN_CPU = dict(tests=(SE,), k="cpu")
SN_TRI = dict(tests=(SE,), k="triton")

GN = "csrc/cpu/grad_norm.cpp"
MATH = "csrc/gnp_math.h"
CLK = "csrc/cpu/clip_kernel.h"  # the clamp loop of clip.cpp, compiled once per ISA
CL = "csrc/cpu/clip.cpp"
SNC = "csrc/cpu/spectral_norm.cpp"
SNK = "csrc/cpu/sn_kernel.h"
CGN = "csrc/cuda/grad_norm.cu"
CCL = "csrc/cuda/clip.cu"
CSN = "csrc/cuda/spectral_norm.cu"
EGN = "tests/cuda_emu/test_emu_grad_norm.py"
ECL = "tests/cuda_emu/test_emu_clip.py"
ESN = "tests/cuda_emu/test_emu_spectral_norm.py"
EED = "tests/cuda_emu/test_emu_edges.py"
EGN_ALL = dict(tests=(EGN,), k="matches_float64")

MUTANTS = [
    # ================================================================ C++ CPU kernels
    # ---- csrc/cpu/grad_norm.cpp: sum of squares
    M("gnp-tail-squares-in-half", GN,
      "acc_t x = static_cast<acc_t>(p[i]);\n    s += x * x;",
      "scalar_t x = p[i];\n    s += static_cast<acc_t>(x * x);",
      why="scalar tail squares in the input dtype (float16: 1e-4^2 underflows, 300^2 overflows)", **GNP_CPU),
    M("gnp-tail-drops-last", GN, "  for (; i < n; ++i) {\n    acc_t x", "  for (; i + 1 < n; ++i) {\n    acc_t x",
      why="scalar tail of the sum of squares stops one element early", **GNP_CPU),
    M("gnp-half-second-vector-reloads-first", GN,
      "auto [x2, x3] = at::vec::convert_to_float<scalar_t>(Vec::loadu(p + i + W));",
      "auto [x2, x3] = at::vec::convert_to_float<scalar_t>(Vec::loadu(p + i));",
      why="half/bfloat16 unrolled loop loads its first vector twice", **GNP_CPU),
    M("gnp-accumulators-drop-one", GN, "aVec a = (a0 + a1) + (a2 + a3);", "aVec a = (a0 + a1) + a2;",
      why="one of the four unrolled accumulators is not added", **GNP_CPU),
    M("gnp-chunks-floor", GN, "std::max<int64_t>(1, (N + kChunk - 1) / kChunk);", "std::max<int64_t>(1, N / kChunk);",
      why="forward drops the last partial chunk of rows longer than kChunk", **GNP_CPU),
    M("gnp-forward-ignores-row-stride", GN, "finish_row(r, sum_squares(g + r * row_stride, N));",
      "finish_row(r, sum_squares(g + r * N, N));",
      why="forward reads rows packed (batch-sliced gradients read the wrong rows)", **GNP_CPU),
    M("gnp-backward-writes-with-input-stride", GN,
      "scale_into(o + r * N + start, g + r * row_stride + start, len, coef[r]);",
      "scale_into(o + r * row_stride + start, g + r * row_stride + start, len, coef[r]);",
      why="backward writes its packed output with the input's row stride", **GNP_CPU),
    M("gnp-backward-tail-unscaled", GN,
      "for (; i < n; ++i) out[i] = static_cast<scalar_t>(static_cast<acc_t>(in[i]) * c);",
      "for (; i < n; ++i) out[i] = in[i];", why="scalar tail of c * g forgets c", **GNP_CPU),
    M("gnp-backward-chunks-floor", GN, "const int64_t chunks = (N + kChunk - 1) / kChunk;",
      "const int64_t chunks = std::max<int64_t>(1, N / kChunk);",
      why="backward leaves the last partial chunk of long rows unwritten", **GNP_CPU),
    M("gnp-loss-scale-dropped", GN, "static_cast<scalar_t>(static_cast<acc_t>(s * scale));", "static_cast<scalar_t>(static_cast<acc_t>(s));",
      why="fused loss ignores scale (mean becomes sum, weight ignored)", **GNP_CPU),
    M("gnp-backward-first-row-gphi", GN, "[&](int64_t r) { return gphi_p[r]; }", "[&](int64_t r) { return gphi_p[0]; }",
      why="per-sample backward uses row 0's upstream gradient for every row", **GNP_CPU),
    # ---- csrc/gnp_math.h
    M("gnp-math-onesided-coef", MATH, "if (d < acc_t(0)) return acc_t(0);", "if (d <= acc_t(-1)) return acc_t(0);",
      why="one-sided derivative not zeroed below the target", **GNP_CPU),
    M("gnp-math-onesided-nan-to-zero", MATH, "if (one_sided) d = d < acc_t(0) ? acc_t(0) : d;",
      "if (one_sided) d = d > acc_t(0) ? d : acc_t(0);", why="one-sided max(0, d) turns NaN into 0", **GNP_CPU),
    M("gnp-math-zero-row", MATH, "if (norm == acc_t(0)) return acc_t(0);", "",
      why="zero row: coefficient divides by the zero norm (NaN instead of 0)", **GNP_CPU),
    M("gnp-math-sign-dropped", MATH, "p * ::pow(a, p - acc_t(1)) * sign;", "p * ::pow(a, p - acc_t(1));",
      why="two-sided derivative for power != 2 loses the sign below the target", **GNP_CPU),
    M("gnp-math-sumsq-ignores-onesided", MATH, "if (t == acc_t(0) && p == acc_t(2) && !one_sided) return sumsq;",
      "if (t == acc_t(0) && p == acc_t(2)) return sumsq;", tests=(KE,), k="gnp and cpu",
      why="R1 fast path taken for one-sided too",
      equivalent="with target 0 the one-sided phi max(0, n)^2 = n^2 = sumsq, and its gradient 2g equals "
                 "gphi * 2n / n * g (zero rows: 0 both ways); only the gnp_coef fast path is guarded, "
                 "and it gives the same 2g"),
    # ---- csrc/grad_norm_autograd.cpp
    M("gnp-autograd-onesided-not-saved", "csrc/grad_norm_autograd.cpp", 'ctx->saved_data["one_sided"] = one_sided;',
      'ctx->saved_data["one_sided"] = false;', why="the one-sided flag does not reach the backward", **GNP_CPU),
    M("gnp-autograd-scale-not-saved", "csrc/grad_norm_autograd.cpp", 'ctx->saved_data["scale"] = scale;',
      'ctx->saved_data["scale"] = 1.0;', why="fused loss backward forgets the scale", **GNP_CPU),
    # ---- csrc/rows.h
    M("rows-dense-accepts-gaps", "csrc/rows.h", "if (stride != expect) return false;",
      "if (stride < expect) return false;", why="rows with gaps (inner slices) taken as dense", **GNP_CPU),
    M("rows-packed-keeps-input-stride", "csrc/rows.h", "strides[0] = std::max<int64_t>(n, 1);", "",
      why="gradient output allocated with the input's batch stride while written packed", **GNP_CPU),
    # ---- csrc/cpu/clip.cpp, csrc/clip.h
    M("clip-tail-nan-to-hi", CLK, "if (x > hi) x = hi;", "if (!(x <= hi)) x = hi;",
      why="NaN in the scalar tail becomes hi", **CLIP_CPU),
    M("clip-tail-nan-to-lo", CLK, "if (x < lo) x = lo;", "if (!(x >= lo)) x = lo;",
      why="NaN in the scalar tail becomes lo", **CLIP_CPU),
    M("clip-second-vector-from-first", CLK, "at::vec::clamp(x1, lv, hv).store(p + i + W);",
      "at::vec::clamp(x0, lv, hv).store(p + i + W);", why="unrolled float loop stores its first vector twice",
      **CLIP_CPU),
    M("clip-threads-search-from-zero", CL,
      "    auto it = std::upper_bound(spans.begin(), spans.end(), r1 - 1,\n"
      "                               [](int64_t v, const ClipSpan& s) { return v < s.begin; }) - 1;\n"
      "    int64_t visited = 0;\n    for (int64_t r = r1; r > r0; --it) {",
      "    auto it = spans.end() - 1;\n    int64_t visited = 0;\n    for (int64_t r = total; r > r0; --it) {",
      why="every thread starts its backward span walk at the list's last element (double work, benign "
          "race: values identical)",
      **CLIP_CPU),
    M("clip-span-offset-absolute", CL, "piece(*it, start - it->begin, r - start, b);",
      "piece(*it, start - r0, r - start, b);",
      why="piece offset relative to the thread's start, not to the span", **CLIP_CPU),
    M("clip-loop-split-timed", CL, "} else if (mode == kParallel || loop_splits) {", "} else if (mode == kParallel) {",
      why="a list holding a tensor clamp_ would split is timed against one thread (and often runs on one)",
      tests=T_CLIP, k="splits_wherever"),
    M("clip-strided-not-clamped", CL, "at::clamp_(const_cast<at::Tensor&>(t), lo, hi);  // strided views",
      "// strided views", why="non-dense tensors silently skipped", **CLIP_CPU),
    M("clip-no-version-bump", CL, "  clip_bump_versions(tensors);\n  if (total == 0) return;", "  if (total == 0) return;",
      why="autograd cannot see the in-place clip", tests=("tests/test_clip.py::test_no_history_and_version_bump",)),
    M("clip-check-strict-bounds", "csrc/clip.h", "&& lo <= hi,", "&& lo < hi,",
      why="lo == hi (a constant) rejected", **CLIP_CPU),
    M("clip-span-contiguous-only", "csrc/clip.h", "return t.is_non_overlapping_and_dense();", "return t.is_contiguous();",
      why="channels_last / transposed tensors go through at::clamp_", tests=T_CLIP,
      equivalent="performance only: at::clamp_ gives the same values for the tensors no longer taken as spans"),
    # ---- csrc/cpu/spectral_norm.cpp
    M("sn-v-normalize-without-eps", SNK, "const T d = std::max(std::sqrt(ss), static_cast<T>(eps));",
      "const T d = std::sqrt(ss);", why="eps dropped from the normalization of v", **SN_CPU),
    M("sn-u-normalize-without-eps", SNK, "const T d = std::max(std::sqrt(dot(u, u, m.h)), static_cast<T>(eps));",
      "const T d = std::sqrt(dot(u, u, m.h));", why="eps dropped from the normalization of u", **SN_CPU),
    M("sn-sigma-as-norm", SNK, "sigma = ss / d;", "sigma = std::sqrt(ss);",
      why="sigma = |s| instead of |s|^2 / max(|s|, eps) (wrong below eps)", **SN_CPU),
    M("sn-dot-tail-drops-last", SNK, "for (; i < n; ++i) s += a[i] * b[i];", "for (; i + 1 < n; ++i) s += a[i] * b[i];",
      why="dot product's scalar tail stops one early", **SN_CPU),
    M("sn-axpy4-tail-drops-row", SNK, "x2[j] * c2 + x3[j] * c3;", "x2[j] * c2;",
      why="4-row axpy tail forgets the fourth row", **SN_CPU),
    M("sn-sweep-remainder-rows", SNK, "for (; i < i1; ++i) axpy(out, base + i * m.K, u[i], len);",
      "for (; i + 1 < i1; ++i) axpy(out, base + i * m.K, u[i], len);",
      why="rows left over after the 4-row unroll: the last one is dropped", **SN_CPU),
    M("sn-sweep-chunks-floor", SNK, "const int64_t chunks = (m.h + rows - 1) / rows;",
      "const int64_t chunks = std::max<int64_t>(1, m.h / rows);", why="last row chunk of big weights dropped", **SN_CPU),
    M("sn-matvec-ignores-block", SNK,
      "acc += dot(W + (a * m.h + i) * m.K, v + a * m.K, m.K);\n      t[i] = acc;",
      "acc += dot(W + (a * m.h + i) * m.K, v, m.K);\n      t[i] = acc;",
      why="n_iter = 0 (eval) W v reads v's first block for every leading index (dim > 0)", **SN_CPU),
    M("sn-normalize-tail-unscaled", SNK, "for (; i < i1; ++i) dst[i] = src[i] * r;", "for (; i < i1; ++i) dst[i] = src[i];",
      why="W / sigma: scalar tail not divided", **SN_CPU),
    M("sn-backward-sigma-once", SNK, "const T c = gw / (s * s);", "const T c = gw / s;",
      why="backward: <g, W> / sigma instead of / sigma^2", **SN_CPU),
    M("sn-backward-tail-no-projection", SNK, "for (; k < m.K; ++k) o[k] = gr[k] * rs - cu * vr[k];",
      "for (; k < m.K; ++k) o[k] = gr[k] / s;", why="backward scalar tail forgets the u v^T term", **SN_CPU),
    M("sn-normalize-list-first-sigma", SNC, "sn_normalize_cpu(weights[l], us[l], vs[l], sigmas[l], dims[l])",
      "sn_normalize_cpu(weights[l], us[l], vs[l], sigmas[0], dims[l])",
      why="batched W / sigma divides every layer by the first layer's sigma",
      tests=(SE,), k="mix and cpu and batched"),
    # ---- csrc/spectral_norm_autograd.cpp
    M("sn-autograd-list-first-sigma", "csrc/spectral_norm_autograd.cpp", "s[2 * n + l], s[3 * n + l], dims[l])",
      "s[2 * n + l], s[3 * n], dims[l])", why="batched backward uses layer 0's sigma for every layer",
      tests=("tests/test_spectral_norm.py::test_apply_spectral_norm_matches_torch",), k="cpu"),
    # ---- csrc/cpu/block_cache.cpp
    M("cache-unbounded", "csrc/cpu/block_cache.cpp", "if (c.cached_ + b->bytes <= c.limit_) {", "if (true) {",
      why="freed blocks cached beyond the limit", tests=("tests/test_block_cache.py",)),

    # ================================================================ Triton kernels (interpreter)
    M("tri-gnp-onesided-nan-to-zero", "fastgan/_triton/grad_norm.py", "a = tl.where(d < 0, 0.0, d)",
      "a = tl.where(d > 0, d, 0.0)", why="one-sided max(0, d) turns NaN into 0", **GNP_TRI),
    M("tri-gnp-zero-row", "fastgan/_triton/grad_norm.py", "c = tl.where(n == 0, 0.0, gphi * dphi / n)",
      "c = gphi * dphi / n", why="zero row: NaN gradient", **GNP_TRI),
    M("tri-gnp-out-with-input-stride", "fastgan/_triton/grad_norm.py", "dst = out_ptr + row.to(tl.int64) * N",
      "dst = out_ptr + row.to(tl.int64) * row_stride", why="backward writes with the input's row stride",
      **GNP_TRI),
    M("tri-gnp-read-packed", "fastgan/_triton/grad_norm.py", "base = g_ptr + row.to(tl.int64) * row_stride",
      "base = g_ptr + row.to(tl.int64) * N", why="forward ignores the input's row stride", **GNP_TRI),
    M("tri-gnp-plan-drops-tail", "fastgan/_triton/grad_norm.py", "return triton.cdiv(max(n, 1), chunk), chunk",
      "return max(1, max(n, 1) // chunk), chunk", why="last partial split of a row never launched", **GNP_TRI),
    M("tri-gnp-sign-dropped", "fastgan/_triton/grad_norm.py", "dphi = power * _pow_m1(a, power, KIND) * sign",
      "dphi = power * _pow_m1(a, power, KIND)", why="two-sided derivative loses its sign below the target",
      **GNP_TRI),
    M("tri-gnp-split-mask-chunk", "fastgan/_triton/grad_norm.py",
      "x = tl.load(base + idx, mask=(idx < N) & (off + tl.arange(0, BLOCK) < chunk), other=0.0).to(ACC)",
      "x = tl.load(base + idx, mask=(idx < N), other=0.0).to(ACC)", why="split mask forgets the chunk end",
      tests=(KE,), k="gnp and triton",
      equivalent="_plan rounds chunk up to a multiple of BLOCK and the loop steps by BLOCK from 0, so "
                 "off + arange(BLOCK) < chunk always holds: the dropped term is always true"),
    M("tri-clip-nan-to-hi", "fastgan/_triton/clip.py", "x = tl.where(xc > hi_c, hi, x)", "x = tl.where(xc <= hi_c, x, hi)",
      why="NaN becomes hi", **CLIP_TRI),
    M("tri-clip-offset-dropped", "fastgan/_triton/clip.py", "first = (addr - addr0) // size", "first = 0",
      why="every tensor of a group clamps the group's first tensor", **CLIP_TRI),
    M("tri-clip-last-chunk-short", "fastgan/_triton/clip.py", "table += (first + s, min(CHUNK, n - s))",
      "table += (first + s, min(CHUNK, n - s - 1))", why="every chunk stops one element early", **CLIP_TRI),
    M("tri-sn-v-without-eps", "fastgan/_triton/spectral_norm.py", "d2 = tl.maximum(tl.sqrt(sq), eps)",
      "d2 = tl.sqrt(sq)", why="eps dropped from the normalization of v", **SN_TRI),
    M("tri-sn-u-without-eps", "fastgan/_triton/spectral_norm.py", "d = tl.maximum(tl.sqrt(tl.sum(ss, axis=0)), eps)",
      "d = tl.sqrt(tl.sum(ss, axis=0))", why="eps dropped from the normalization of u", **SN_TRI),
    M("tri-sn-sigma-as-norm", "fastgan/_triton/spectral_norm.py", "tl.store(sigma_ptr, sq / d2)",
      "tl.store(sigma_ptr, tl.sqrt(sq))", why="sigma = |s| (wrong below eps)", **SN_TRI),
    M("tri-sn-tile-ignores-block", "fastgan/_triton/spectral_norm.py", "* K + (cols - a * K)[None, :]",
      "* K + cols[None, :]", why="W_mat tile address forgets the leading-block offset (dim > 0)", **SN_TRI),
    M("tri-sn-bwd-sigma-once", "fastgan/_triton/spectral_norm.py", "c = gw / (s * s)", "c = gw / s",
      why="backward: <g, W> / sigma instead of / sigma^2", **SN_TRI),
    M("tri-sn-bwd-v-index", "fastgan/_triton/spectral_norm.py", "v = tl.load(v_ptr + a * K + k, mask=m, other=0.0)",
      "v = tl.load(v_ptr + k, mask=m, other=0.0)", why="backward reads v's first block only (dim > 0)", **SN_TRI),

    # ================================================================ CUDA kernels (emulated CUDA tier)
    # csrc/cuda/*.cu compiled for the CPU against tests/cuda_emu/emu (the runner rebuilds the
    # emulation library for each mutant; objects are cached by content, so only the mutated .cu).
    # ---- csrc/cuda/grad_norm.cu
    M("cu-gnp-shfl-from-8", CGN,
      "for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);\n  const int lane",
      "for (int o = 8; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);\n  const int lane",
      why="block_sum's warp tree starts at offset 8: lanes 16..31 never reach lane 0", **EGN_ALL),
    M("cu-gnp-no-syncthreads", CGN, "  if (lane == 0) warp_sums[warp] = x;\n  __syncthreads();\n",
      "  if (lane == 0) warp_sums[warp] = x;\n",
      why="block_sum: warp 0 reads the warp sums before the other warps wrote them", **EGN_ALL),
    M("cu-gnp-partial-stride-threads", CGN, "i < end; i += int64_t(kThreads) * VEC) {\n    Pack<scalar_t, VEC> p",
      "i < end; i += kThreads) {\n    Pack<scalar_t, VEC> p",
      why="vector loop strides by the thread count, not threads * VEC: packs overlap", **EGN_ALL),
    M("cu-gnp-partial-ignores-row-stride", CGN, "const scalar_t* base = g + row * row_stride;",
      "const scalar_t* base = g + row * N;", why="forward reads rows packed (batch slices read the wrong rows)",
      tests=(EED,), k="strided_views"),
    M("cu-gnp-square-in-input-dtype", CGN, "acc_t x = static_cast<acc_t>(p.v[k]);\n      s += x * x;",
      "scalar_t x = p.v[k];\n      s += static_cast<acc_t>(x * x);",
      why="squares in half precision (1e-4^2 underflows, 300^2 overflows float16)", tests=(EED,),
      k="half_squares"),
    M("cu-gnp-finalize-drops-last-split", CGN, "for (int64_t k = 0; k < splits; ++k)",
      "for (int64_t k = 0; k + 1 < splits; ++k)", why="finalize adds all partials of a row but the last",
      **EGN_ALL),
    M("cu-gnp-plan-splits-floor", CGN, "splits = std::max<int64_t>(1, (N + chunk - 1) / chunk);",
      "splits = std::max<int64_t>(1, N / chunk);", why="last partial chunk of a split row never launched",
      **EGN_ALL),
    M("cu-gnp-forward-onesided-dropped", CGN, "acc_t(power), one_sided);\n    C10", "acc_t(power), false);\n    C10",
      why="the one-sided flag does not reach gnp_finalize (phi of rows below the target)", tests=(EED,),
      k="every_side"),
    M("cu-gnp-backward-onesided-dropped", CGN, "pl.splits, pl.chunk, acc_t(target), acc_t(power), one_sided);",
      "pl.splits, pl.chunk, acc_t(target), acc_t(power), false);",
      why="the one-sided flag does not reach gnp_scale (gradient of rows below the target)", tests=(EED,),
      k="every_side"),
    M("cu-gnp-scale-first-row-gphi", CGN, "gnp_coef<acc_t>(gphi[row], norms[row]", "gnp_coef<acc_t>(gphi[0], norms[row]",
      why="backward uses row 0's upstream gradient for every row", tests=(EED,), k="every_side"),
    M("cu-gnp-backward-writes-with-input-stride", CGN, "scalar_t* dst = out + row * N;",
      "scalar_t* dst = out + row * row_stride;", why="packed gradient written with the input's row stride",
      tests=(EED,), k="strided_views"),
    # ---- csrc/cuda/clip.cu
    M("cu-clip-nan-to-hi", CCL, "if (v > hi) return", "if (!(v <= hi)) return", why="NaN becomes hi",
      tests=(ECL,), k="bounds_nan_inf"),
    M("cu-clip-tail-drops-last", CCL, "for (int64_t i = vec_end + threadIdx.x; i < n; i += kThreads)",
      "for (int64_t i = vec_end + threadIdx.x; i + 1 < n; i += kThreads)",
      why="scalar tail stops one element early", tests=(ECL,), k="sizes_around_chunks"),
    M("cu-clip-continuation-keeps-numel", CCL, "table.numel[0] = table.numel[nt - 1];", "",
      why="a tensor continued in the next launch keeps entry 0's old numel", tests=(ECL,), k="table_full"),
    M("cu-clip-chunk-from-block-index", CCL,
      "const int64_t start = int64_t(table.block_chunk[blockIdx.x]) * kChunk;",
      "const int64_t start = int64_t(blockIdx.x) * kChunk;",
      why="chunk start from the block index instead of the table (lists of several tensors)", tests=(ECL,),
      k="lists_match"),
    # ---- csrc/cuda/spectral_norm.cu
    M("cu-sn-v-without-eps", CSN, "const T d2 = max(sqrt(sq), eps);", "const T d2 = sqrt(sq);",
      why="eps dropped from the normalization of v", tests=(ESN,), k="zero_and_nan"),
    M("cu-sn-u-without-eps", CSN, "const T d = max(sqrt(block_sum(ss)), eps);", "const T d = sqrt(block_sum(ss));",
      why="eps dropped from the normalization of u", tests=(ESN,), k="zero_and_nan"),
    M("cu-sn-sigma-as-norm", CSN, "*L.sigma = sq / d2;", "*L.sigma = d2;",
      why="sigma = max(|s|, eps) instead of |s|^2 / max(|s|, eps) (wrong below eps)", tests=(ESN,),
      k="zero_and_nan"),
    M("cu-sn-block-sum-fixed-warps", CSN, "x = lane < int(blockDim.x / 32) ? warp_sums[lane] : T(0);",
      "x = lane < kThreads / 32 ? warp_sums[lane] : T(0);",
      why="block_sum assumes 512 threads: 256-thread kernels read warp sums nobody wrote", tests=(ESN,),
      k="many_partials"),
    M("cu-sn-warp-sum-stops-early", CSN,
      "T warp_sum(T x) {\n  for (int o = 16; o > 0; o >>= 1)", "T warp_sum(T x) {\n  for (int o = 16; o > 1; o >>= 1)",
      why="warp shuffle tree stops before offset 1", tests=(ESN,), k="power_and_normalize"),
    M("cu-sn-mat-index-ignores-block", CSN, "return (a * L.h + i) * L.K + (j - a * L.K);",
      "return (a * L.h + i) * L.K + j;", why="W_mat address forgets the leading block (dim > 0)", tests=(ESN,),
      k="power_and_normalize or long_rows"),
    M("cu-sn-rows-every-warp", CSN,
      "for (int64_t i = warp; i < L.h; i += warps) {\n      const T t = row_dot(L, i, L.v);\n      if (lane == 0) {",
      "for (int64_t i = warp; i < L.h; i += 1) {\n      const T t = row_dot(L, i, L.v);\n      if (lane == 0) {",
      why="row loop strides by 1 instead of the warp count: rows counted by several warps", tests=(ESN,),
      k="power_and_normalize"),
    M("cu-sn-bwd-sigma-once", CSN, "const acc_t c = gw / (s * s);", "const acc_t c = gw / s;",
      why="backward: <g, W> / sigma instead of / sigma^2", tests=(ESN,), k="gradcheck or many_partials"),
    M("cu-sn-bwd-v-first-block", CSN, "v[a * K + k]", "v[k]", why="backward reads v's first block only (dim > 0)",
      tests=(ESN,), k="gradcheck"),
    M("cu-sn-bwd-parts-floor", CSN, "const int64_t parts = (n + chunk - 1) / chunk;",
      "const int64_t parts = n / chunk;", why="the last partial chunk of <g, W> is dropped", tests=(ESN,),
      k="many_partials"),
    M("cu-sn-dot-in-input-dtype", CSN, "x += static_cast<acc_t>(g[i]) * static_cast<acc_t>(w[i]);",
      "x += static_cast<acc_t>(g[i] * w[i]);", why="<g, W> products rounded to half (1e-8 underflows float16)",
      tests=(EED,), k="sn_backward_half"),

    # ================================================================ public Python API
    # ---- fastgan/penalty.py
    M("pen-gp-alpha-swap", "fastgan/penalty.py",
      "interp = a * real.detach() + (1 - a) * fake.detach()",
      "interp = a * fake.detach() + (1 - a) * real.detach()", T_PEN,
      "WGAN-GP interpolates with alpha on the wrong side"),
    M("pen-r1-gamma-not-halved", "fastgan/penalty.py",
      '(res,) = _at_samples(D, {"real": real}, scores, scaler, method, gamma / 2,',
      '(res,) = _at_samples(D, {"real": real}, scores, scaler, method, gamma,',
      ("tests/test_penalties.py::test_r1_r2",), "R1 weight gamma instead of gamma/2"),
    M("pen-r2-gamma-not-halved", "fastgan/penalty.py",
      '(res,) = _at_samples(D, {"fake": fake}, scores, scaler, method, gamma / 2,',
      '(res,) = _at_samples(D, {"fake": fake}, scores, scaler, method, gamma,',
      ("tests/test_penalties.py::test_r1_r2",), "R2 weight gamma instead of gamma/2"),
    M("pen-dragan-std-not-sqrt", "fastgan/penalty.py",
      "delta = math.sqrt(c) * torch.randn(", "delta = c * torch.randn(", ("tests/test_penalties.py::test_dragan_gaussian",),
      "DRAGAN noise std c instead of sqrt(c)"),
    M("pen-dragan-uniform-half", "fastgan/penalty.py", "(0.5 * real.std() * u)", "(real.std() * u)",
      ("tests/test_penalties.py::test_dragan_uniform",), "DRAGAN uniform perturbation without the 0.5"),
    M("pen-pac-alpha-tiled", "fastgan/penalty.py", "alpha = alpha.repeat_interleave(pac)", "alpha = alpha.repeat(pac)",
      ("tests/test_penalties.py::test_gradient_penalty_pac",), "packed alpha tiled instead of repeated per sample"),
    M("pen-lipschitz-two-sided", "fastgan/penalty.py", "return gradient_penalty(D, real, fake, one_sided=True, **kw)",
      "return gradient_penalty(D, real, fake, one_sided=False, **kw)",
      (KE,), "WGAN-LP two-sided", k="lipschitz"),
    M("pen-wgan-div-k-not-halved", "fastgan/penalty.py", "scores, scaler, method, k / 2, p, True)",
      "scores, scaler, method, k, p, True)", ("tests/test_penalties.py::test_wgan_div",), "WGAN-div real term weight k"),
    M("pen-wgan-div-fake-at-real", "fastgan/penalty.py", "lr, lf = _at_samples(D, {\"real\": real, \"fake\": fake},",
      "lr, lf = _at_samples(D, {\"real\": real, \"fake\": real},", ("tests/test_penalties.py::test_wgan_div",),
      "WGAN-div fake term taken at the real samples"),
    M("pen-no-create-graph", "fastgan/_input_grad.py", "grad_outputs=grad_outputs, create_graph=True,",
      "grad_outputs=grad_outputs, create_graph=False,",
      ("tests/test_penalties.py::test_gradient_penalty",), "penalty does not reach the critic's parameters"),
    M("pen-target-negative-accepted", "fastgan/penalty.py", '_check_real(target, "target", nonnegative=True)',
      '_check_real(target, "target")', ("tests/test_grad_norm.py::test_bad_options",), "negative target accepted",
      count=3),
    M("pen-norms-dtype", "fastgan/penalty.py", "return (loss, norms.to(g.dtype)) if return_norms else loss",
      "return (loss, norms) if return_norms else loss",
      (KE,), "returned norms stay in the accumulation dtype", k="norms_in_the_input_dtype"),
    # ---- fastgan/ops/penalty.py
    M("ops-autograd-onesided-not-saved", "fastgan/ops/penalty.py", "ctx.args = (target, power, one_sided)",
      "ctx.args = (target, power, False)", tests=(EED,), k="every_side",
      why="the Python autograd of the CUDA/Triton ops forgets the one-sided flag (backward of rows below the target)"),
    M("ops-mean-scale", "fastgan/ops/penalty.py", 'scale = weight / grads.shape[0] if reduction == "mean" else weight',
      "scale = weight", why="fused CPU mean forgets 1/B", **GNP_CPU),
    M("ops-weight-dropped", "fastgan/ops/penalty.py", "return (loss if weight == 1 else weight * loss).to(grads.dtype), norms",
      "return loss.to(grads.dtype), norms", tests=(KE,), k="weighted_penalties_scale and not cpu",
      why="non-CPU backends drop the regularizer weight"),
    # ---- fastgan/reference.py (the ground truth of the other tests)
    M("ref-two-sided-no-abs", "fastgan/reference.py", "else d.abs().pow(power)", "else d.pow(power)",
      tests=(KE,), k="gnp and reference", why="two-sided phi without |.| (wrong for odd powers below the target)"),
    M("ref-mean-is-sum", "fastgan/reference.py", "return phi.mean()", "return phi.sum()",
      tests=(KE,), k="gnp and reference", why="mean reduction sums"),
    M("ref-clip-max-from-lo", "fastgan/reference.py", "torch._foreach_clamp_max_(tensors, hi)",
      "torch._foreach_clamp_max_(tensors, -lo)", tests=(KE,), k="clip and reference",
      why="upper bound taken as -lo (only right for symmetric bounds)"),
    # ---- fastgan/losses.py
    M("loss-wasserstein-sign", "fastgan/losses.py", "return f.mean() - r.mean()", "return r.mean() - f.mean()",
      T_LOSS, "WGAN critic loss with the wrong sign"),
    M("loss-hinge-fake-sign", "fastgan/losses.py", "F.relu(1 + f).mean()", "F.relu(1 - f).mean()", T_LOSS,
      "hinge fake term with the real term's sign"),
    M("loss-g-minimax-sign", "fastgan/losses.py", "return -F.softplus(fake_scores).mean()",
      "return F.softplus(fake_scores).mean()", T_LOSS, "saturating generator loss with the wrong sign"),
    M("loss-nonsat-sign", "fastgan/losses.py", "return F.softplus(-fake_scores).mean()",
      "return F.softplus(fake_scores).mean()", T_LOSS, "non-saturating loss on -f"),
    M("loss-lsgan-g-target", "fastgan/losses.py", "return 0.5 * (fake_scores - 1).square().mean()",
      "return 0.5 * fake_scores.square().mean()", T_LOSS, "LSGAN generator target 0 instead of 1"),
    # ---- fastgan/noise.py
    M("noise-variance-not-std", "fastgan/noise.py", "return x + std * eps", "return x + std * std * eps",
      ("tests/test_losses.py::test_instance_noise_statistics",), "noise scaled by the variance"),
    M("noise-anneal-no-clamp", "fastgan/noise.py", "t = min(step / total_steps, 1.0)", "t = step / total_steps",
      ("tests/test_losses.py::test_anneal_std",), "annealing overshoots past total_steps"),
    M("noise-cosine-sin", "fastgan/noise.py", "(1 + math.cos(math.pi * t))", "(1 + math.sin(math.pi * t))",
      ("tests/test_losses.py::test_anneal_std",), "cosine schedule uses sin"),
    # ---- fastgan/clip.py
    M("clip-py-equal-bounds-rejected", "fastgan/clip.py", "if lo > hi:", "if lo >= hi:",
      tests=(KE,), k="clip_bounds_inclusive", why="(c, c) rejected"),
    M("clip-py-skip-1d-always", "fastgan/clip.py", "if not (skip_1d and p.dim() == 1)", "if not (skip_1d or p.dim() == 1)",
      ("tests/test_clip.py::test_weight_clipper_on_wgan_critic",), "1-D parameters never clipped"),
    M("clip-py-pre-step", "fastgan/clip.py", "optimizer.register_step_post_hook(", "optimizer.register_step_pre_hook(",
      ("tests/test_clip.py::test_weight_clipper_on_wgan_critic",), "clips before the step instead of after"),
    # ---- fastgan/spectral.py
    M("sn-batched-model-train-flag", "fastgan/spectral.py", "n = sn.n_power_iterations if sn.training else 0",
      "n = sn.n_power_iterations if model.training else 0", tests=(SE,), k="mix and batched",
      why="the batched hook reads the model's train flag instead of each layer's"),
    M("sn-layer-iterates-in-eval", "fastgan/spectral.py", "self.n_power_iterations if self.training else 0",
      "self.n_power_iterations", tests=(SE,), k="mix and per_layer", why="eval-mode layer still iterates"),
    M("sn-registration-iterations", "fastgan/spectral.py", "_REGISTRATION_ITERATIONS = 15", "_REGISTRATION_ITERATIONS = 1",
      tests=(SE,), k="mix and reference", why="registration runs fewer power iterations than torch"),
    M("sn-transposed-dim", "fastgan/spectral.py", "dim = 1 if isinstance(module, _TRANSPOSED) else 0", "dim = 0",
      ("tests/test_spectral_norm.py::test_training_sequence_matches_torch",), "ConvTranspose normalized along dim 0",
      k="convT2d and not triton"),
    M("sn-v-not-copied-back", "fastgan/spectral.py", "torch._foreach_copy_([self._u, self._v], [us[0], vs[0]])",
      "torch._foreach_copy_([self._u], [us[0]])", tests=(SE,), k="mix and per_layer",
      why="per-layer power iteration never stores the new v"),
    M("sn-batched-v-not-copied-back", "fastgan/ops/spectral.py",
      "torch._foreach_copy_(list(us) + list(vs), u_new + v_new)", "torch._foreach_copy_(list(us), u_new)",
      tests=(SE,), k="mix and triton and batched",
      why="batched hook on a non-CPU backend (and under compile) never stores the new v"),
    M("sn-fused-v-not-stored", SNC, "      store_vec(u + mats[l].h, vl);", "      (void)vl;",
      tests=(SE,), k="mix and cpu and batched", why="fused CPU forward never writes the new v into the buffer"),
    M("sn-fused-thread-skips-first-part", SNC, "if (part >= p0 && part < p1) layer(l);",
      "if (part > p0 && part < p1) layer(l);", tests=("tests/test_sn_fused.py",), k="float64_reference",
      why="small layers of the first thread's share are never computed (2 threads)"),
    M("sn-fast-access-ignores-stacked", "fastgan/spectral.py", "        if len(mods) == 1:\n",
      "        if True:\n", tests=("tests/test_sn_fused.py",), k="stacked",
      why="the fast weight access skips parametrizations registered over the spectral norm"),
    M("sn-fast-access-ignores-global-hooks", "fastgan/spectral.py",
      "or sn._backward_pre_hooks or _g._global_forward_hooks or _g._global_forward_pre_hooks",
      "or sn._backward_pre_hooks", tests=("tests/test_sn_fused.py",), k="global",
      why="global module hooks no longer see the parametrization calls"),
    M("sn-plan-ignores-mode", "fastgan/spectral.py",
      'reads += (plist._parameters.get("original"), b.get("_u"), b.get("_v"), sn.training,',
      'reads += (plist._parameters.get("original"), b.get("_u"), b.get("_v"),',
      tests=("tests/test_sn_fused.py",), k="grouping", why="cached grouping misses a train/eval switch"),
    # ---- fastgan/backend.py
    M("backend-cpu-on-any-device", "fastgan/backend.py", 'if name in ("cpu", "cuda") and device.type != name:',
      'if name == "cuda" and device.type != name:', (KE,), "the cpu backend accepts tensors of other devices",
      k="refuses_other_devices"),
]
