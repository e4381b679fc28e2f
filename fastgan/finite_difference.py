r"""Gradient penalties without double backward (``method="finite_difference"``).

A penalty ``P = F(g)`` of the critic's input gradient ``g = grad_x sum D(x)`` reaches the critic's
parameters through ``dP/dtheta = grad_theta <grad_x sum D(x), v>`` with ``v = stopgrad(dP/dg)``
(the chain rule; ``v`` is what ``grad_norm_penalty``'s backward computes, ``c_i * g_i``). The inner
product is a directional derivative of the critic along ``v``, so

    dP/dtheta ~= sum_i ||v_i|| / (2 h_i) * grad_theta [D(x_i + h_i v̂_i) - D(x_i - h_i v̂_i)]

with ``v̂_i = v_i / ||v_i||``: central differences of two *first-order* critic evaluations. The
penalty's value needs only the first-order gradient and is exact. The error is O(h^2) on smooth
critics (GELU/SiLU/softplus/tanh, attention, LayerNorm); a step that crosses a kink of ReLU or
LeakyReLU measures a smoothed derivative instead (a bias, not noise: see the README).

Why per-sample directions: each sample gets a step of the same length relative to its own input
scale (``h_i = C * eps^(1/3) * rms(x_i)``), so every sample's difference has the same relative
error; one step along the whole-batch ``v`` gives the samples with small ``||v_i||`` (gradient
norm near the target) steps far below their roundoff floor and their absolute roundoff error
``eps * |D| / t`` stays that of the large ones. Per-sample steps also make the result independent
of the other samples in the batch, so DDP ranks match a single-process run. When the critic is
batch-coupled (a BatchNorm using batch statistics is detected among the modules it calls) the
per-sample weights would be wrong (sample j's step moves sample i's score) and fastgan steps along
the whole-batch direction ``v`` instead, which is right for any critic. Batch coupling in
functional code or custom layers (minibatch standard deviation) is not detected: such critics
need ``method="double_backward"``.

Both evaluations (and the value pass) see the same random numbers: the default CPU generator and
the CUDA generator of ``x``'s device are restored before each, so dropout masks agree, and the
stream afterwards is where one forward leaves it (as with the exact path). Buffers the critic
updates in place during its forward (BatchNorm running statistics, spectral norm's ``u``, ``v``)
are restored likewise: every evaluation sees the value pass's state and the state afterwards is
that of one forward.
"""
import math
import warnings
import weakref

import torch

from . import distributed

METHODS = ("double_backward", "finite_difference")

# h = STEP * eps^(1/3) * rms(x_i); eps = the critic's working precision (x's dtype, or the output's
# when autocast or a half-precision critic computes in less). Measured (tests/test_finite_difference.py,
# README table): relative error of the parameter gradient ~1e-5 in float32, ~1e-10 in float64.
STEP = 4.0

try:
    from torch.nn.modules.batchnorm import _BatchNorm
except ImportError:  # pragma: no cover
    _BatchNorm = ()


_KINKED = (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.ReLU6, torch.nn.PReLU, torch.nn.RReLU,
           torch.nn.Hardtanh, torch.nn.Hardswish, torch.nn.Hardsigmoid, torch.nn.Hardshrink,
           torch.nn.Softshrink, torch.nn.Threshold)


def check_method(method):
    """``method`` as a str, or a TypeError/ValueError that names it."""
    if not isinstance(method, str):
        raise TypeError(f"method must be one of {METHODS}, got {method!r} ({type(method).__name__})")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def _compiling():
    return torch.compiler.is_compiling()


def _batch_coupled(m):
    # BatchNorm normalizes with batch statistics in training mode, and in eval mode without running stats
    return isinstance(m, _BatchNorm) and (m.training or not m.track_running_stats)


class _State:
    """RNG state (CPU + x's CUDA device) and in-place-updated buffers, captured and restored so that
    every critic evaluation sees what the value pass saw."""

    def __init__(self, device):
        self.cuda = device if device.type == "cuda" else None
        self.rng0 = self._rng()
        self.bufs = {}           # buffer -> (version before, clone before) for modules the critic called
        self.changed = []

    def _rng(self):
        return (torch.get_rng_state(),
                torch.cuda.get_rng_state(self.cuda) if self.cuda is not None else None)

    def _set_rng(self, st):
        torch.set_rng_state(st[0])
        if self.cuda is not None:
            torch.cuda.set_rng_state(st[1], self.cuda)

    def pre_hook(self, module, args):
        for b in module.buffers(recurse=False):
            if b not in self.bufs:
                self.bufs[b] = (b._version, b.detach().clone())

    def after_value_pass(self):
        self.rng1 = self._rng()
        # only buffers the forward wrote to are restored (batch_norm's running-stat update does not
        # move the version counter: compare the values too)
        self.changed = [(b, before, b.detach().clone()) for b, (ver, before) in self.bufs.items()
                        if b._version != ver or not torch.equal(b, before)]
        self.bufs = {}

    # .data: a graph may have saved the buffer (batch_norm saves running_mean/var, unused in training
    # mode); writing through .data does not bump the version counter autograd checks
    def before_evaluation(self):
        self._set_rng(self.rng0)
        for b, before, _ in self.changed:
            b.data.copy_(before)

    def done(self):
        self._set_rng(self.rng1)
        for b, _, after in self.changed:
            b.data.copy_(after)


class _ValueWithGradOf(torch.autograd.Function):
    """Forward: ``value`` (bit-exact, also where ``t`` is inf). Backward: the gradient goes to ``t``."""

    @staticmethod
    def forward(ctx, value, t):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return None, grad


def _scores(out, name="D"):
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a tensor of scores, got {type(out).__name__}")
    return out


def penalty(D, x, on_grad, batch=None):
    """``on_grad(g)`` -> ``(loss, extra)`` evaluated at ``g = grad_x sum D(x)``; returns ``(loss, extra)``
    where ``loss`` has the exact value and the finite-difference parameter gradient."""
    x = x.detach()
    b = x.shape[0]
    st = None if _compiling() else _State(x.device)
    seen = []
    # xr: an alias of x that requires grad, for the value pass only; x itself stays a constant, so the
    # +- evaluations' backward computes no input gradient (the first layer's) and fills no x.grad
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        hook = None
        if st is not None:
            def pre_hook(module, args):
                seen.append(module)
                st.pre_hook(module, args)
            hook = torch.nn.modules.module.register_module_forward_pre_hook(pre_hook)
        try:
            with distributed._watch_ddp(D, fsdp_ok=True):
                out = _scores(D(xr))
        finally:
            if hook is not None:
                hook.remove()
        batch = (b,) if batch is None else batch
        if out.dim() == 0 or out.shape[0] not in batch:   # the same contract as the exact path
            raise ValueError(f"D's output must have the batch as its first dimension (one score per sample, "
                             f"{' or '.join(map(str, batch))} rows), got shape {tuple(out.shape)}: a critic that "
                             f"reduces over the batch (e.g. D(x).mean()) would scale the gradient by 1/B")
        if not out.requires_grad:
            raise ValueError("the critic's output does not depend on its input (D(x) does not require grad)")
        # first order only: no create_graph, and no parameter gradients (inputs=x)
        (g,) = torch.autograd.grad(out, xr, grad_outputs=torch.ones_like(out), allow_unused=True)
        if g is None:
            raise ValueError("the critic's output does not depend on its input: autograd found no path from x to D(x)")
        if st is not None:
            st.after_value_pass()
        gl = g.detach().requires_grad_(True)
        loss, extra = on_grad(gl)
        (v,) = torch.autograd.grad(loss, gl)
    batch_first = out.dim() >= 1 and out.shape[0] == b
    del out, g

    if isinstance(D, torch.nn.Module):
        seen.extend(D.modules())   # also under torch.compile, where the hook is not installed
    kinked = sorted({type(m).__name__ for m in seen if isinstance(m, _KINKED)})
    if kinked:
        warnings.warn(f"method='finite_difference' on a critic with {', '.join(kinked)}: the central difference "
                      "crosses the activation's kinks and measures a smoothed derivative, so the parameter "
                      "gradient is biased (O(1) in float32; see the README). Use a smooth activation (GELU, "
                      "SiLU, softplus) or method='double_backward'.", UserWarning, stacklevel=4)
    # not batch-first scores (a critic returning one scalar): only the whole-batch form applies
    coupled = not batch_first or any(_batch_coupled(m) for m in seen)
    eps = torch.finfo(x.dtype).eps
    if torch.is_autocast_enabled(x.device.type):
        eps = max(eps, torch.finfo(torch.get_autocast_dtype(x.device.type)).eps)
    base = STEP * eps ** (1.0 / 3.0)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf, vf = x.reshape(b, -1).to(acc), v.detach().reshape(b, -1).to(acc)
    vn = vf.norm(dim=1)                                    # ||v_i||
    if coupled:
        # one step t along the whole-batch v: right for batch-coupled critics too
        rms = xf.pow(2).mean().sqrt()
        rms = torch.where(torch.isfinite(rms) & (rms > 0), rms, torch.ones_like(rms))
        vtot = vn.pow(2).sum().sqrt()
        t = base * rms * math.sqrt(b) / vtot
        t = torch.where(vtot > 0, t, torch.zeros_like(t))
        s = t.expand(b)                                    # x_i +- s_i v_i
        w = torch.where(vtot > 0, 0.5 / t, torch.zeros_like(t)).expand(b)
    else:
        rms = torch.linalg.vector_norm(xf, dim=1) / math.sqrt(xf.shape[1])
        rms = torch.where(torch.isfinite(rms) & (rms > 0), rms, torch.ones_like(rms))
        h = base * rms                                     # step length of sample i
        pos = vn > 0
        s = torch.where(pos, h / torch.where(pos, vn, torch.ones_like(vn)), torch.zeros_like(h))
        w = torch.where(pos, vn / (2 * h), torch.zeros_like(h))   # = 1 / (2 s_i)
    delta = (s.unsqueeze(1) * vf).to(x.dtype).view_as(x)

    diffs = []
    for shifted in (x + delta, x - delta):   # constants: the backward takes no input gradient here
        if st is not None:
            st.before_evaluation()
        with torch.enable_grad(), distributed._watch_ddp(D, fsdp_ok=True):
            diffs.append(_scores(D(shifted)))
    if st is not None:
        st.done()
    dp, dm = diffs
    if coupled:
        tsum = (dp - dm).sum().to(w.dtype) * w[0]
    else:
        tsum = ((dp - dm).reshape(b, -1).sum(dim=1).to(w.dtype) * w).sum()
    return _ValueWithGradOf.apply(loss.detach(), tsum.to(loss.dtype)), extra


# --------------------------------------------------------------------------------------------
def no_double_backward_hint(g):
    """If ``g``'s graph holds a node whose backward is not implemented (fused attention's backward,
    ...), the names of its neighbours; None otherwise. Walks the graph once (cheap next to a step)."""
    seen, stack = set(), [g.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn.name() == "torch::autograd::NotImplemented":
            return sorted({n.name() for n, _ in fn.next_functions if n is not None})
        stack.extend(n for n, _ in fn.next_functions)
    return None


_CHECKED = weakref.WeakKeyDictionary()   # critics whose first exact call had double backward throughout


def raise_if_no_double_backward(g, D):
    """Raise early, naming method="finite_difference", when ``g``'s graph cannot be differentiated.
    The walk costs up to milliseconds on a transformer's graph (0.6 ms for a 3-layer MLP, 4.7 ms for
    a 2-block ViT on the loaded 2-core machine), so it runs on a critic's first exact call only."""
    if _compiling():   # dynamo cannot read grad_fn; the step then fails in its own words
        return
    try:
        if D in _CHECKED:
            return
    except TypeError:   # not hashable / not weak-referenceable: check every call
        pass
    names = no_double_backward_hint(g)
    if names is None:
        try:
            _CHECKED[D] = True
        except TypeError:
            pass
        return
    raise NotImplementedError(
        "the critic uses an op with no double backward (its backward has no derivative; next to "
        f"{', '.join(names) or 'an unnamed node'}), so the exact gradient penalty cannot reach the "
        "critic's parameters. Pass method=\"finite_difference\" (first-order passes only), or, for "
        "F.scaled_dot_product_attention, run the critic under "
        "torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH).")
