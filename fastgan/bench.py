"""``python -m fastgan bench``: fastgan vs eager PyTorch vs torch.compile, measured in one run.

For every case (an op at a shape, or a whole critic step) it times the eager reference (the code
public GAN repositories write), ``torch.compile`` of that reference where it works, and every
available fastgan backend; checks each result against the eager one; and reports median and
20/80 percentiles, speedups, and achieved bandwidth (bytes that must move / time) as a fraction of
a copy measured in the same run. Writes ``results.json``, ``results.md`` and ``speedup.png``.
"""
import copy
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from typing import Callable

import torch

import fastgan as fg

from ._bench_models import SNGANResNetCritic, dcgan_critic, mlp_critic

# -------------------------------------------------------------------------------------------------
# timing


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _calls_per_sample(fn, device):
    """Warm up, then how many calls make one sample last >= ~0.5 ms (timer resolution)."""
    for _ in range(3):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, min(1000, int(5e-4 / one)))


def _sample(fn, device, k):
    """Seconds per call over k calls (CUDA: events around the calls)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(k):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / k
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    return (time.perf_counter() - t0) / k


def _stats(samples, k):
    samples = sorted(samples)

    def q(p):
        return samples[min(len(samples) - 1, int(p * len(samples)))]

    return {"median_s": q(0.5), "p20_s": q(0.2), "p80_s": q(0.8), "samples": len(samples), "calls_per_sample": k}


def measure_interleaved(fns, device, min_time=0.25, min_samples=15, max_samples=200):
    """Per-call seconds of each of ``fns`` ({name: fn}), sampled round-robin so that every
    contender sees the same machine state (load drifts; sequential timing would bias ratios)."""
    ks = {name: _calls_per_sample(fn, device) for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    names = list(fns)
    deadline = time.perf_counter() + min_time * len(fns)
    r = 0
    while r < min_samples or (time.perf_counter() < deadline and r < max_samples):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            samples[name].append(_sample(fns[name], device, ks[name]))
        r += 1
    return {name: _stats(samples[name], ks[name]) for name in fns}


def measure(fn, device, min_time=0.25, min_samples=15, max_samples=200):
    """Per-call seconds of one ``fn``: warm-up, then many samples (median, 20/80 percentiles)."""
    return measure_interleaved({"fn": fn}, device, min_time, min_samples, max_samples)["fn"]


def copy_bandwidth(device, nbytes):
    """Bytes/s of a device-to-device (or memcpy on CPU) copy of nbytes: read + write counted."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), device, min_time=0.3)
    return 2 * src.numel() * 4 / t["median_s"]


# -------------------------------------------------------------------------------------------------
# cases


@dataclasses.dataclass
class Case:
    op: str
    shape: str
    impls: dict  # name -> zero-arg callable returning the outputs to check
    nbytes: int = 0  # bytes that must move (0: no byte model, e.g. whole steps)
    skipped: dict = dataclasses.field(default_factory=dict)  # name -> why it did not run
    check: Callable = None  # (out, ref) -> bool
    unchecked: tuple = ()  # rows that compute something else by design (e.g. the no-SN floor)
    steps_per_call: dict = dataclasses.field(default_factory=dict)  # name -> steps one call runs (amortized rows)


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if out is None:
        return []
    return [t for o in out for t in _flat(o)]


def _close(tol):
    def check(out, ref):
        a, b = _flat(out), _flat(ref)
        if len(a) != len(b):
            return False
        for x, y in zip(a, b):
            if x is None or y is None:
                if x is not y:
                    return False
                continue
            x, y = x.detach().double(), y.detach().double()
            scale = y.abs().max().clamp_min(1e-30)
            if not bool(((x - y).abs().max() / scale) <= tol):
                return False
        return True

    return check


def _close_whole(tol):
    """Relative error of all outputs together, ``||out - ref|| / ||ref||`` over the concatenation:
    issue 15's measure for a finite-difference parameter gradient. Per tensor, small gradients
    (LayerNorm biases of the ViT) carry the difference quotient's roundoff at ~5e-3 of their own
    scale while the whole gradient is within ~2e-4 (README, "Accuracy")."""
    def check(out, ref):
        a, b = _flat(out), _flat(ref)
        if len(a) != len(b) or any((x is None) != (y is None) for x, y in zip(a, b)):
            return False
        pairs = [(x.detach().double(), y.detach().double()) for x, y in zip(a, b) if x is not None]
        num = sum(float((x - y).pow(2).sum()) for x, y in pairs)
        den = sum(float(y.pow(2).sum()) for _, y in pairs)
        return math.sqrt(num) <= tol * math.sqrt(den)   # NaN anywhere: False

    return check


def _fastgan_backends(device):
    """fastgan backends timed on this device (why the others are not is printed once, up front)."""
    st = fg.backends()
    names = [b for b in ("cpu", "cuda") if st[b]["available"] and b == device.type]
    if device.type == "cuda" and st["triton"]["available"]:
        names.append("triton")  # on CPU Triton runs only through the interpreter: a test vehicle
    return names, {}


def _works(fn, what):
    """(fn, None) if fn runs (e.g. a torch.compile'd reference), else (None, why): reported, not hidden."""
    try:
        fn()
        return fn, None
    except Exception as e:  # noqa: BLE001  (any compile failure is reported in the table)
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        return None, f"torch.compile of {what} failed: {type(e).__name__}: {msg}"


def eager_penalty(g):
    """WGAN-GP penalty the way public code writes it."""
    return ((g.view(g.size(0), -1).norm(2, dim=1) - 1) ** 2).mean()


def primitive_cases(device, quick):
    if quick:
        shapes = [(8, 3 * 16 * 16)]
    else:
        shapes = [(64, 3 * 64 * 64), (256, 3 * 32 * 32), (2, 3 * 512 * 512), (1024, 4096)]
        if device.type == "cuda":  # B * N = 2^24 at every B from 1 to 4096
            shapes += [(1, 1 << 24), (16, 1 << 20), (256, 1 << 16), (4096, 1 << 12)]
    backends, skipped = _fastgan_backends(device)
    for b, n in shapes:
        g = torch.randn(b, n, device=device, requires_grad=True)

        def eager(g=g):
            return torch.autograd.grad(eager_penalty(g), g)[0]

        impls = {"eager": eager}
        cf = torch.compile(eager_penalty)
        fn, why = _works(lambda g=g, cf=cf: torch.autograd.grad(cf(g), g)[0], "the eager penalty")
        if fn:
            impls["compile"] = fn
        for be in backends:
            impls[f"fastgan:{be}"] = lambda g=g, be=be: torch.autograd.grad(fg.grad_norm_penalty(g, backend=be), g)[0]
        # forward reads g, backward reads g and writes dL/dg
        yield Case("grad_norm_penalty fwd+bwd", f"{b}x{n}", impls, 3 * g.numel() * g.element_size(),
                   dict(skipped, **({"compile": why} if why else {})), _close(2e-5))


def _eager_grad(D, x):
    x = x.requires_grad_(True)
    out = D(x)
    return torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)[0]


def _step_case(op, shape, D, loss_eager, loss_fastgan, device, backends, skipped):
    params = list(D.parameters())

    def grads(loss):
        return torch.autograd.grad(loss, params, allow_unused=True)

    impls = {"eager": lambda: grads(loss_eager())}

    import torch._dynamo

    # a whole GP step has double backward inside: dynamo needs trace_autograd_ops for it
    compiled_step = torch.compile(lambda: grads(loss_eager()))

    def run_compiled():
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            return compiled_step()

    fn, why = _works(run_compiled, "the eager step (trace_autograd_ops=True)")
    if fn:
        impls["compile"] = fn
    else:
        skipped = dict(skipped, compile=why)
    for be in backends:
        def run(be=be):
            with fg.use_backend(be):
                return grads(loss_fastgan())
        impls[f"fastgan:{be}"] = run
    return Case(op, shape, impls, 0, dict(skipped), _close(1e-4))


def step_cases(device, quick):
    backends, skipped = _fastgan_backends(device)
    torch.manual_seed(0)
    b_img, b_mlp = (8, 32) if quick else (64, 256)

    # WGAN-GP, DCGAN critic on 3x32x32
    D = dcgan_critic(16 if quick else 64).to(device)
    real, fake = torch.randn(b_img, 3, 32, 32, device=device), torch.randn(b_img, 3, 32, 32, device=device)
    alpha = torch.rand(b_img, device=device)

    def gp_eager(D=D, real=real, fake=fake, alpha=alpha):
        a = alpha.view(-1, 1, 1, 1)
        g = _eager_grad(D, a * real + (1 - a) * fake)
        return D(fake).mean() - D(real).mean() + 10 * eager_penalty(g)

    def gp_fast(D=D, real=real, fake=fake, alpha=alpha):
        return D(fake).mean() - D(real).mean() + fg.gradient_penalty(D, real, fake, alpha=alpha)

    yield _step_case("WGAN-GP critic step", f"DCGAN 3x32x32 B={b_img}", D, gp_eager, gp_fast, device, backends, skipped)

    # WGAN-GP, MLP critic on 2-D toy data
    D2 = mlp_critic(2).to(device)
    r2, f2 = torch.randn(b_mlp, 2, device=device), torch.randn(b_mlp, 2, device=device)
    a2 = torch.rand(b_mlp, device=device)

    def gp2_eager():
        a = a2.view(-1, 1)
        g = _eager_grad(D2, a * r2 + (1 - a) * f2)
        return D2(f2).mean() - D2(r2).mean() + 10 * eager_penalty(g)

    def gp2_fast():
        return D2(f2).mean() - D2(r2).mean() + fg.gradient_penalty(D2, r2, f2, alpha=a2)

    yield _step_case("WGAN-GP critic step", f"MLP 2-D B={b_mlp}", D2, gp2_eager, gp2_fast, device, backends, skipped)

    # R1 (StyleGAN-style non-saturating loss + R1 on reals)
    F = torch.nn.functional

    def r1_eager():
        g = _eager_grad(D, real.clone())
        return F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean() + 5 * g.square().sum([1, 2, 3]).mean()

    def r1_fast():
        return F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean() + fg.r1_penalty(D, real, gamma=10.0)

    yield _step_case("R1 critic step", f"DCGAN 3x32x32 B={b_img}", D, r1_eager, r1_fast, device, backends, skipped)

    # CTGAN-style packed MLP critic on tabular data (pac=10)
    pac, feats, b_tab = 10, 32 if quick else 128, 50 if quick else 500
    D3 = mlp_critic(pac * feats, width=256, depth=2).to(device)

    def D3p(x):
        return D3(x.view(-1, pac * feats))

    rt, ft = torch.randn(b_tab, feats, device=device), torch.randn(b_tab, feats, device=device)
    at = torch.rand(b_tab // pac, device=device)

    def ct_eager():
        a = at.repeat_interleave(pac).view(-1, 1)
        g = _eager_grad(D3p, a * rt + (1 - a) * ft)
        pen = ((g.view(-1, pac * feats).norm(2, dim=1) - 1) ** 2).mean() * 10
        return D3p(ft).mean() - D3p(rt).mean() + pen

    def ct_fast():
        return D3p(ft).mean() - D3p(rt).mean() + fg.gradient_penalty(D3p, rt, ft, alpha=at, pac=pac)

    yield _step_case("CTGAN packed GP critic step", f"pac={pac} {feats} features B={b_tab}", D3, ct_eager, ct_fast,
                     device, backends, skipped)


def _param_lists(quick):
    """Parameter shapes of a DCGAN critic, an SNGAN-ResNet critic and 1000 small tensors."""
    dcgan = [(64, 3, 4, 4)]
    for c_in, c_out in [(64, 128), (128, 256), (256, 512)]:
        dcgan += [(c_out, c_in, 4, 4), (c_out,), (c_out,)]
    dcgan += [(1, 512, 4, 4)]
    sngan = []
    for b in range(10):
        c_in = 3 if b == 0 else 128
        sngan += [(128, c_in, 3, 3), (128,), (128, 128, 3, 3), (128,), (128, c_in, 1, 1), (128,)]
    sngan += [(1, 128), (1,)]
    # issue 13's list: DCGAN-64 critic, Conv 3->64->128->256 (4x4, stride 2, with bias), Linear 4096->1
    dcgan64 = []
    for c_in, c_out in [(3, 64), (64, 128), (128, 256)]:
        dcgan64 += [(c_out, c_in, 4, 4), (c_out,)]
    dcgan64 += [(1, 4096), (1,)]
    gen = torch.Generator().manual_seed(0)
    small = [(int(s),) for s in torch.randint(16, 513, (1000,), generator=gen)]
    if quick:
        return {"DCGAN critic": dcgan[:4], "1000 small tensors": small[:50]}
    return {"DCGAN critic": dcgan, "DCGAN-64 critic (bias)": dcgan64, "SNGAN-ResNet critic": sngan,
            "1000 small tensors": small}


_WGAN_CLIP = 0.01  # the original WGAN's clip value


def _wgan_clip_loop(ps):
    """What the original WGAN code does: one clamp_ per parameter."""
    for p in ps:
        p.data.clamp_(-_WGAN_CLIP, _WGAN_CLIP)


def clip_cases(device, quick):
    from . import reference

    backends, skipped = _fastgan_backends(device)
    c = _WGAN_CLIP
    for label, shapes in _param_lists(quick).items():
        gen = torch.Generator().manual_seed(1)
        init = [torch.randn(s, generator=gen).mul_(0.02).to(device) for s in shapes]

        def fresh(init=init):
            return [t.clone() for t in init]

        def impl(fn, params):
            def run():
                fn(params)
                return params
            return run

        impls = {"eager": impl(_wgan_clip_loop, fresh()),
                 "foreach": impl(lambda ps: reference.clip_weights_foreach_(ps, -c, c), fresh())}
        cf = torch.compile(_wgan_clip_loop)
        fn, why = _works(impl(cf, fresh()), "the clamp_ loop")
        sk = dict(skipped)
        if fn:
            impls["compile"] = fn
        else:
            sk["compile"] = why
        for be in backends:
            impls[f"fastgan:{be}"] = impl(lambda ps, be=be: fg.clip_weights_(ps, c, backend=be), fresh())
        n = sum(t.numel() * t.element_size() for t in init)
        yield Case("clip_weights_", f"{label}: {len(shapes)} tensors, {n // 4} floats", impls, 2 * n, sk,
                   _close(0.0))


def wgan_clip_step_cases(device, quick):
    """Original WGAN critic step: Wasserstein loss, RMSprop(lr=5e-5), clip every parameter to 0.01."""
    backends, skipped = _fastgan_backends(device)
    b = 8 if quick else 64
    torch.manual_seed(0)
    D0 = dcgan_critic(16 if quick else 64).to(device)
    real, fake = torch.randn(b, 3, 32, 32, device=device), torch.randn(b, 3, 32, 32, device=device)

    def make(clip):
        D = copy.deepcopy(D0)
        opt = torch.optim.RMSprop(D.parameters(), lr=5e-5, foreach=True)

        def step():
            opt.zero_grad(set_to_none=True)
            (D(fake).mean() - D(real).mean()).backward()
            opt.step()
            clip(list(D.parameters()))
            return [p.detach() for p in D.parameters()]
        return step

    impls = {"eager": make(_wgan_clip_loop)}
    for be in backends:
        impls[f"fastgan:{be}"] = make(lambda ps, be=be: fg.clip_weights_(ps, _WGAN_CLIP, backend=be))
    yield Case("WGAN critic step (RMSprop + clip)", f"DCGAN 3x32x32 B={b}", impls, 0,
               dict(skipped, compile="not measured: the step mutates optimizer state and parameters"), _close(1e-5))


def _sn_variants(make, backends):
    """The same critic (same initial weights and u, v) with torch's spectral norm, fastgan's per
    layer, fastgan's batched, and none. u, v come from torch's registration and are loaded into
    the fastgan variants (the state_dict layouts are identical)."""
    from torch.nn.utils.parametrizations import spectral_norm as torch_sn

    torch.manual_seed(0)
    plain = make()
    ref = copy.deepcopy(plain)
    for m in list(ref.modules()):
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            torch_sn(m)
    out = {"no SN": plain, "eager": ref}
    for be in backends:
        per_layer = copy.deepcopy(plain)
        for m in list(per_layer.modules()):
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                fg.spectral_norm(m, backend=be)
        batched = fg.apply_spectral_norm(copy.deepcopy(plain), backend=be)
        for name, model in ((f"fastgan:{be} per layer", per_layer), (f"fastgan:{be} batched", batched)):
            model.load_state_dict(ref.state_dict())
            out[name] = model
    return out


def sn_cases(device, quick):
    backends, skipped = _fastgan_backends(device)
    b = 8 if quick else 64
    critics = {"DCGAN 3x32x32": lambda: dcgan_critic(16 if quick else 64),
               "SNGAN-ResNet 3x32x32": lambda: SNGANResNetCritic(16 if quick else 64)}
    if quick:
        critics.pop("SNGAN-ResNet 3x32x32")
    for label, make in critics.items():
        models = {k: m.to(device).train() for k, m in _sn_variants(make, backends).items()}
        n_sn = sum(1 for m in models["eager"].modules() if hasattr(m, "parametrizations"))
        x = torch.randn(b, 3, 32, 32, device=device)
        y = torch.randn(b, 3, 32, 32, device=device)
        # forward only, training mode: SN overhead = time(variant) - time("no SN")
        impls = {name: (lambda m=m, x=x: m(x)) for name, m in models.items()}
        # the rows of a case are checked against "eager" on their first call: "no SN" differs by design
        yield Case("SN critic forward (training)", f"{label}, {n_sn} SN layers, B={b}", impls, 0,
                   dict(skipped, compile="not measured for this case (see the SNGAN step)"),
                   _close(1e-4), unchecked=("no SN",))

        # SNGAN critic step: hinge loss on D(real) and D(fake) (two forwards, one backward)
        models = {k: m.to(device).train() for k, m in _sn_variants(make, backends).items()}
        F = torch.nn.functional

        # x, y and step itself bound now: the bench builds every case (the next critic's step
        # rebinds `step`) before it runs any
        def step(m, x=x, y=y):
            loss = F.relu(1 - m(x)).mean() + F.relu(1 + m(y)).mean()
            return torch.autograd.grad(loss, list(m.parameters()))

        impls = {name: (lambda m=m, step=step: step(m)) for name, m in models.items()}
        cm = copy.deepcopy(models["eager"])
        cf = torch.compile(cm)
        state = copy.deepcopy(cm.state_dict())
        fn, why = _works(lambda cf=cf, cm=cm, x=x, y=y: torch.autograd.grad(
            F.relu(1 - cf(x)).mean() + F.relu(1 + cf(y)).mean(), list(cm.parameters())), "the torch-SN critic")
        cm.load_state_dict(state)  # undo the trial's power iterations (in place: cf stays valid)
        if fn:
            impls["compile"] = fn
        yield Case("SNGAN critic step (hinge + SN)", f"{label}, {n_sn} SN layers, B={b}", impls, 0,
                   dict(skipped, **({"compile": why} if why else {})), _close(1e-4), unchecked=("no SN",))


# -------------------------------------------------------------------------------------------------
# training loops: penalties from the loss's own forward (scores=) and lazy regularization (fg.Lazy)

LAZY_EVERY = 16  # StyleGAN2's k; --quick uses 4 (a smoke test: 16 steps per sample is too slow for CI)


def _loop_step(D, loss_fn):
    """One critic step as a training loop runs it: zero_grad, loss.backward() (input .grad included)."""
    params = list(D.parameters())

    def run():
        for p in params:
            p.grad = None
        loss_fn().backward()
        return [p.grad for p in params]
    return run


def _lazy_rows(D, loss_fn, k):
    """k steps per call (one of them regularized): reported per step by run_case."""
    one = _loop_step(D, loss_fn)

    def run():
        for _ in range(k):
            out = one()
        return out
    return run


def _fastgan_loop_impls(impls, D, backends, k, penalty, today, scores):
    """Adds fastgan's rows of a training-loop case to ``impls`` for every backend: ``today(be)`` (the
    penalty's own forward), ``scores(be)`` (from the loss's forward) and ``scores(be, lazy=...)`` with
    ``fg.Lazy(penalty, every=k)``, k steps per call; returns {row: steps per call} of the lazy rows."""
    steps = {}
    for be in backends:
        lazy = fg.Lazy(penalty, every=k)
        impls[f"fastgan:{be}"] = _loop_step(D, lambda be=be: today(be))
        impls[f"fastgan:{be} scores="] = _loop_step(D, lambda be=be: scores(be))
        impls[f"fastgan:{be} lazy k={k} scores="] = _lazy_rows(D, lambda be=be, lazy=lazy: scores(be, lazy=lazy), k)
        steps[f"fastgan:{be} lazy k={k} scores="] = k
    return steps


def training_loop_cases(device, quick):
    """R1 and WGAN-div DCGAN critic steps: eager (separate forward, as PyTorch-GAN-style code; and
    from the same forward, as StyleGAN2 / seed 002), fastgan today (``fg.r1_penalty(D, real)``),
    fastgan from the loss's forward (``scores=``), and lazy with k=16 (amortized per step)."""
    backends, skipped = _fastgan_backends(device)
    torch.manual_seed(0)
    b = 8 if quick else 64
    k = 4 if quick else LAZY_EVERY
    D = dcgan_critic(16 if quick else 64).to(device)
    real, fake = torch.randn(b, 3, 32, 32, device=device), torch.randn(b, 3, 32, 32, device=device)
    F = torch.nn.functional
    skipped = dict(skipped, compile="not measured for this case (see the R1 critic step)")

    # R1 with the non-saturating loss (gamma = 10)
    def r1_eager():
        g = _eager_grad(D, real.clone())
        return F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean() + 5 * g.square().sum([1, 2, 3]).mean()

    def r1_eager_same():
        x = real.detach().requires_grad_()
        out = D(x)
        g = torch.autograd.grad(out.sum(), x, create_graph=True)[0]
        return F.softplus(D(fake)).mean() + F.softplus(-out).mean() + 5 * g.square().sum([1, 2, 3]).mean()

    impls = {"eager": _loop_step(D, r1_eager)}
    if not quick:
        impls["eager same forward"] = _loop_step(D, r1_eager_same)

    def today(be):
        with fg.use_backend(be):
            return F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean() + fg.r1_penalty(D, real, gamma=10.0)

    def scores(be, lazy=None):
        with fg.use_backend(be):
            x = real.detach().requires_grad_(lazy is None or lazy.due)
            d_real = D(x)
            pen = (lazy or fg.r1_penalty)(real=x, scores=d_real, gamma=10.0)
            return F.softplus(D(fake)).mean() + F.softplus(-d_real).mean() + pen

    steps = _fastgan_loop_impls(impls, D, backends, k, fg.r1_penalty, today, scores)
    yield Case("R1 critic step (training loop)", f"DCGAN 3x32x32 B={b}", impls, 0, dict(skipped), _close(1e-4),
               unchecked=tuple(steps), steps_per_call=steps)

    # WGAN-div (k = 2, p = 6) with the Wasserstein loss
    def div_eager():
        xr, xf = real.detach().requires_grad_(), fake.detach().requires_grad_()
        gr = torch.autograd.grad(D(xr).sum(), xr, create_graph=True)[0]
        gf = torch.autograd.grad(D(xf).sum(), xf, create_graph=True)[0]
        pen = (gr.flatten(1).norm(dim=1) ** 6).mean() + (gf.flatten(1).norm(dim=1) ** 6).mean()
        return D(fake).mean() - D(real).mean() + pen

    def div_eager_same():  # seed 002
        xr, xf = real.detach().requires_grad_(), fake.detach().requires_grad_()
        d_real, d_fake = D(xr), D(xf)
        gr = torch.autograd.grad(d_real.sum(), xr, create_graph=True)[0]
        gf = torch.autograd.grad(d_fake.sum(), xf, create_graph=True)[0]
        pen = (gr.flatten(1).norm(dim=1) ** 6).mean() + (gf.flatten(1).norm(dim=1) ** 6).mean()
        return d_fake.mean() - d_real.mean() + pen

    impls = {"eager": _loop_step(D, div_eager)}
    if not quick:
        impls["eager same forward"] = _loop_step(D, div_eager_same)

    def today(be):
        with fg.use_backend(be):
            return D(fake).mean() - D(real).mean() + fg.wgan_div_penalty(D, real, fake)

    def scores(be, lazy=None):
        with fg.use_backend(be):
            due = lazy is None or lazy.due
            xr, xf = real.detach().requires_grad_(due), fake.detach().requires_grad_(due)
            d_real, d_fake = D(xr), D(xf)
            pen = (lazy or fg.wgan_div_penalty)(real=xr, fake=xf, scores=(d_real, d_fake))
            return d_fake.mean() - d_real.mean() + pen

    steps = _fastgan_loop_impls(impls, D, backends, k, fg.wgan_div_penalty, today, scores)
    yield Case("WGAN-div critic step (training loop)", f"DCGAN 3x32x32 B={b}", impls, 0, dict(skipped),
               _close(1e-4), unchecked=tuple(steps), steps_per_call=steps)


CASE_FAMILIES = {"grad_norm_penalty": primitive_cases, "clip_weights": clip_cases, "spectral_norm": sn_cases,
                 "critic_steps": step_cases, "wgan_clip_step": wgan_clip_step_cases,
                 "training_loop": training_loop_cases}


# --- penalty methods (issue 15): exact double backward vs finite differences vs approximated R1 ---
def penalty_method_cases(device, quick):
    """Critic-loss parameter gradients with each penalty method; "eager" is the exact path (the ViT
    critic under the math attention kernel). Peak memory: ``python -m fastgan.bench_fd``."""
    from . import bench_fd

    for critic, penalty in bench_fd.ROWS:
        D, real, fake, alpha, label = bench_fd.make(critic, quick)
        D, real, fake, alpha = D.to(device), real.to(device), fake.to(device), alpha.to(device)
        params = list(D.parameters())

        def grads(method, D=D, real=real, fake=fake, alpha=alpha, critic=critic, penalty=penalty, params=params):
            with bench_fd._context(critic, method):
                loss = bench_fd.loss_fn(D, real, fake, alpha, penalty, method)
            return torch.autograd.grad(loss, params, allow_unused=True)

        impls = {"eager": lambda g=grads: g("exact"), "fastgan:finite_difference": lambda g=grads: g("fd")}
        unchecked = ("fastgan:finite_difference",) if critic == "dcgan" else ()   # kinks: biased by design
        if penalty == "r1":
            impls["fastgan:approx_r1"] = lambda g=grads: g("approx")
            unchecked += ("fastgan:approx_r1",)                                    # another penalty
        name = {"gp": "WGAN-GP critic step", "r1": "R1 critic step"}[penalty]
        yield Case(f"{name} (exact vs finite difference)", label, impls, 0, {}, _close_whole(2e-3),
                   unchecked=unchecked)


CASE_FAMILIES["penalty_methods"] = penalty_method_cases

# -------------------------------------------------------------------------------------------------
# running and reporting


def _progress(i, n, label):
    width = 30
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {label[:60]:<60}")
    sys.stderr.flush()
    if i == n:
        sys.stderr.write("\n")


def run_case(case, device, copy_bw, quick):
    rows = []
    # outputs may be views of live state (parameters): keep a copy of the reference's
    ref = [None if t is None else t.detach().clone() for t in _flat(case.impls["eager"]())]
    ok, rows, runnable = {}, [], {}
    for name, fn in case.impls.items():
        try:
            out = fn()
            ok[name] = None if name in case.unchecked else (name == "eager" or bool(case.check(out, ref)))
            runnable[name] = fn
        except Exception as e:  # noqa: BLE001  (a failing implementation is reported, not fatal)
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]
            if name.startswith("fastgan:"):
                rows.append({"op": case.op, "shape": case.shape, "impl": name, "error": msg})
            else:  # a baseline that breaks (torch.compile of torch's own code) is a finding, not a failure
                rows.append({"op": case.op, "shape": case.shape, "impl": name, "skipped": f"failed: {msg}"})
    stats = measure_interleaved(runnable, device, min_time=0.05 if quick else 0.3, min_samples=7 if quick else 15)
    for name, n in case.steps_per_call.items():  # amortized rows report time per step
        if name in stats:
            stats[name] = dict(stats[name], **{k: stats[name][k] / n for k in ("median_s", "p20_s", "p80_s")},
                               steps_per_call=n)
    timings = {name: t["median_s"] for name, t in stats.items()}
    for name, t in stats.items():
        row = {"op": case.op, "shape": case.shape, "impl": name, "matched": ok[name], **t}
        if case.nbytes:
            row["bytes"] = case.nbytes
            row["GBps"] = case.nbytes / t["median_s"] / 1e9
            row["frac_of_copy"] = case.nbytes / t["median_s"] / copy_bw
        rows.append(row)
    for row in rows:
        if "median_s" in row:
            row["speedup_vs_eager"] = timings["eager"] / row["median_s"]
            if "compile" in timings:
                row["speedup_vs_compile"] = timings["compile"] / row["median_s"]
    for name, why in case.skipped.items():
        rows.append({"op": case.op, "shape": case.shape, "impl": name, "skipped": why})
    return rows


def _git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except OSError:
        return None


def _machine(device):
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "fastgan": fg.__version__, "device": str(device), "threads": torch.get_num_threads()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        try:
            with open("/proc/cpuinfo") as f:
                info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
        except OSError:
            info["cpu"] = platform.processor()
    return info


def _fmt_t(s):
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def markdown(results):
    m = results["machine"]
    lines = [
        f"# fastgan benchmark: {m.get('gpu') or m.get('cpu') or m['device']}",
        "",
        f"{results['date']}, commit `{results['commit']}`, torch {m['torch']}, triton {m['triton']}, "
        f"python {m['python']}, device {m['device']}, {m['threads']} CPU threads"
        f"{', quick run' if results['quick'] else ''}.",
        f"Copy bandwidth measured in this run: {results['copy_GBps']:.1f} GB/s (read + write).",
        "",
        "| op | shape | impl | median | p20 | p80 | vs eager | vs compile | GB/s | of copy | matched |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        if "median_s" in r:
            lines.append(
                f"| {r['op']} | {r['shape']} | {r['impl']} | {_fmt_t(r['median_s'])} | {_fmt_t(r['p20_s'])} | "
                f"{_fmt_t(r['p80_s'])} | {r['speedup_vs_eager']:.2f}x | "
                f"{'%.2fx' % r['speedup_vs_compile'] if 'speedup_vs_compile' in r else '-'} | "
                f"{'%.1f' % r['GBps'] if 'GBps' in r else '-'} | "
                f"{'%.0f%%' % (100 * r['frac_of_copy']) if 'frac_of_copy' in r else '-'} | "
                f"{'-' if r['matched'] is None else 'yes' if r['matched'] else '**NO**'} |")
        else:
            why = r.get("skipped") or ("error: " + r["error"])
            lines.append(f"| {r['op']} | {r['shape']} | {r['impl']} | - | - | - | - | - | - | - | {why} |")
    return "\n".join(lines) + "\n"


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in results["rows"] if "median_s" in r and r["impl"] != "eager"]
    cases = list(dict.fromkeys(f"{r['op']}\n{r['shape']}" for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(cases)), 4.5))
    w = 0.8 / max(len(impls), 1)
    for i, impl in enumerate(impls):
        xs, ys = [], []
        for j, c in enumerate(cases):
            for r in rows:
                if r["impl"] == impl and f"{r['op']}\n{r['shape']}" == c:
                    xs.append(j + i * w)
                    ys.append(r["speedup_vs_eager"])
        ax.bar(xs, ys, w, label=impl)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + w * (len(impls) - 1) / 2 for j in range(len(cases))])
    ax.set_xticklabels(cases, fontsize=7, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("speedup vs eager (higher is better)")
    m = results["machine"]
    ax.set_title(f"fastgan on {m.get('gpu') or m.get('cpu') or m['device']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def print_table(results):
    print(f"\ncopy bandwidth: {results['copy_GBps']:.1f} GB/s")
    hdr = f"{'op':<30} {'shape':<28} {'impl':<16} {'median':>10} {'vs eager':>9} {'vs comp':>8} {'of copy':>8}  ok"
    print(hdr)
    print("-" * len(hdr))
    for r in results["rows"]:
        if "median_s" in r:
            vc = f"{r['speedup_vs_compile']:.2f}x" if "speedup_vs_compile" in r else "-"
            fc = f"{100 * r['frac_of_copy']:.0f}%" if "frac_of_copy" in r else "-"
            print(f"{r['op'][:30]:<30} {r['shape'][:28]:<28} {r['impl']:<16} {_fmt_t(r['median_s']):>10} "
                  f"{r['speedup_vs_eager']:>8.2f}x {vc:>8} {fc:>8}  {'-' if r['matched'] is None else 'yes' if r['matched'] else 'NO'}")
        else:
            print(f"{r['op'][:30]:<30} {r['shape'][:28]:<28} {r['impl']:<16} "
                  f"{(r.get('skipped') or 'error: ' + r['error'])[:90]}")


# bench op -> (backend.AUTO op key, rows that stand for the "reference" backend)
AUTO_OPS = {"grad_norm_penalty fwd+bwd": ("grad_norm_penalty", ("eager",)),
            "clip_weights_": ("clip_weights", ("foreach",)),
            "SN critic forward (training)": ("spectral_norm", ("eager",))}


def suggest_auto(rows, device):
    """The fastest backend per AUTO op on every measured case; one choice where it never changes."""
    from .backend import AUTO

    out = {}
    for op, (key, ref_impls) in AUTO_OPS.items():
        best = {}
        for r in rows:
            if r["op"] != op or "median_s" not in r:
                continue
            if r["impl"] in ref_impls:
                backend = "reference"
            elif r["impl"].startswith("fastgan:"):
                backend = r["impl"].split(":")[1].split()[0]
            else:
                continue
            cur = best.get(r["shape"])
            if cur is None or r["median_s"] < cur[1]:
                best[r["shape"]] = (backend, r["median_s"])
        if best:
            winners = {shape: b for shape, (b, _) in best.items()}
            choices = set(winners.values())
            out[key] = {"winners": winners, "choice": choices.pop() if len(choices) == 1 else None,
                        "current": AUTO.get((key, device.type))}
    return out


def main(args):
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    families = args.ops or list(CASE_FAMILIES)
    print(f"fastgan bench on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    for name, st in fg.backends().items():
        print(f"  backend {name:<10} {'yes' if st['available'] else 'no '} {st['reason']}")
    if device.type == "cpu":
        print("  (triton is not timed on CPU: the interpreter is a test vehicle, ~1000x slower than eager)")
    copy_bw = copy_bandwidth(device, (64 << 20) if device.type == "cuda" else (32 << 20))
    cases = [c for fam in families for c in CASE_FAMILIES[fam](device, args.quick)]
    rows = []
    for i, case in enumerate(cases):
        _progress(i, len(cases), f"{case.op} {case.shape}")
        rows += run_case(case, device, copy_bw, args.quick)
    _progress(len(cases), len(cases), "done")
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "commit": _git_commit(), "quick": args.quick, "machine": _machine(device),
               "backends": fg.backends(), "copy_GBps": copy_bw / 1e9, "rows": rows}
    results["auto_suggestion"] = suggest_auto(rows, device)
    print_table(results)
    print("\n\"auto\" (fastgan/backend.py AUTO) against this run's fastest backend per case:")
    for key, sug in results["auto_suggestion"].items():
        verdict = (f"one choice, {sug['choice']!r}" if sug["choice"] else "depends on size: " + ", ".join(
            f"{k}: {v}" for k, v in sug["winners"].items()))
        print(f"  ({key!r}, {device.type!r}): AUTO has {sug['current']!r}; fastest here: {verdict}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(markdown(results))
    png = plot(results, os.path.join(args.out, "speedup.png"))
    print(f"\nwrote {args.out}/results.json, results.md" + (", speedup.png" if png else " (no matplotlib: no plot)"))
    bad = [r for r in rows if r.get("matched") is False or "error" in r]
    if bad:
        print(f"{len(bad)} result(s) did not match the eager reference or failed; see the table", file=sys.stderr)
        return 1
    return 0


def add_parser(sub):
    p = sub.add_parser("bench", help="benchmark fastgan against eager PyTorch and torch.compile")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="one tiny shape per op (smoke test, < 2 min on CPU)")
    p.add_argument("--out", default="bench-results", help="folder for results.json/.md and speedup.png")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's default)")
    p.add_argument("--ops", nargs="+", choices=list(CASE_FAMILIES), help="case families to run (default: all)")
    p.set_defaults(func=main)
    return p

