"""Spectral normalization: a drop-in for ``torch.nn.utils.parametrizations.spectral_norm``.

Same parametrization layout (``parametrizations.weight.original``, ``parametrizations.weight.0._u``,
``..._v``), same registration RNG draws, same u-then-v update order, one power iteration per weight
access in training mode and none in eval mode. What changes is how the numbers are computed:

* per layer (:func:`spectral_norm`): one fused op runs the power iteration (``fastgan::sn_power``)
  and one fused op computes ``W / sigma`` and its backward (``fastgan::sn_normalize``);
* per model (:func:`apply_spectral_norm`): a forward pre-hook on the model runs the power iterations
  of all its layers in one ``sn_power`` call per (device, dtype) and, on CPU, all their ``W / sigma``
  in one ``sn_normalize_list`` call; each layer's weight access then returns its precomputed tensor.

u and v are updated in place (as torch does, so DataParallel replicas write back), while autograd
only ever keeps the fresh copies the op returns: two critic forwards before one backward, and DDP
with ``broadcast_buffers=True`` rewriting the buffers between them, are safe.
"""
import torch
import torch._prims_common
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm as _LegacySpectralNorm

from . import reference
from ._validate import check_int, check_real
from .backend import _check_name, _require_available
from .ops import spectral as _ops

try:
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # torch without distributed
    _DTensor = ()

_OP = "spectral_norm"
_SN_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d, nn.Embedding)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_REGISTRATION_ITERATIONS = 15  # torch's _SpectralNorm does 15 power iterations when registered


# ---------------------------------------------------------------------------------------------
# errors: torch's exception type, and fastgan's where its message is clearer (a class deriving from
# both, so code written against torch.nn.utils.parametrizations.spectral_norm keeps catching them)
class SpectralNormDimError(IndexError, ValueError):
    """``dim`` out of range for the weight (torch: IndexError)."""


class SpectralNormModuleError(TypeError, ValueError):
    """``module`` is not an nn.Module (torch: ValueError, "has no parameter or buffer")."""


class SpectralNormDtypeError(TypeError, NotImplementedError):
    """The weight is neither floating point nor complex (torch: NotImplementedError from normal_)."""


class SpectralNormLazyError(ValueError, RuntimeError):
    """The weight is an uninitialized (lazy) parameter (torch: RuntimeError)."""


# ---------------------------------------------------------------------------------------------
# the parametrization
class _SpectralNorm(nn.Module):
    """Parametrization ``W -> W / sigma(W)``; buffers ``_u``, ``_v`` exactly as torch's ``_SpectralNorm``."""

    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12, backend="auto"):
        super().__init__()
        ndim = weight.ndim
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        self.backend = backend
        self.n_power_iterations = n_power_iterations
        # [W / sigma] from apply_spectral_norm's pre-hook, taken by the next access; a list, so the hook
        # fills it without nn.Module.__setattr__ (microseconds per layer per forward)
        self._handed = [None]
        self._removed = False
        if ndim > 1:
            # the same draws, in the same order, as torch's _SpectralNorm.__init__
            weight_mat = reference.sn_weight_matrix(weight.detach(), self.dim)
            h, w = weight_mat.size()
            u = weight_mat.new_empty(h).normal_(0, 1)
            v = weight_mat.new_empty(w).normal_(0, 1)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=self.eps))
            self._iterate(weight, _REGISTRATION_ITERATIONS)

    def _iterate(self, weight, n_iter):
        """Power iteration on the buffers (in place); returns (backend, sigma, u copy, v copy)."""
        if isinstance(weight, _DTensor):
            raise ValueError(
                "spectral norm got a sharded weight (a DTensor, e.g. from FSDP's fully_shard, which keeps "
                "parameters sharded outside the forward of the module it wraps); the power iteration needs "
                "the whole weight: access it inside that module's forward, or unshard it first (FSDP: "
                "module.unshard())")
        if weight.is_complex():
            u, v = self._power_complex(weight, n_iter)
            return "reference", None, u, v  # reference.sn_normalize computes the complex sigma itself
        name = _ops.resolve_backend(self.backend, weight.device.type)
        sigmas, us, vs = _ops.power(name, [weight.detach()], [self._u], [self._v], [self.dim], n_iter, self.eps)
        if n_iter:
            with torch.no_grad():
                torch._foreach_copy_([self._u, self._v], [us[0], vs[0]])
        return name, sigmas[0], us[0], vs[0]

    @torch.no_grad()
    def _power_complex(self, weight, n_iter):
        """torch's _power_method, line for line: the kernels are real-only, complex weights are rare."""
        w_mat = reference.sn_weight_matrix(weight.detach(), self.dim)
        for _ in range(n_iter):
            F.normalize(torch.mv(w_mat, self._v), dim=0, eps=self.eps, out=self._u)
            F.normalize(torch.mv(w_mat.H, self._u), dim=0, eps=self.eps, out=self._v)
        return (self._u.clone(memory_format=torch.contiguous_format),
                self._v.clone(memory_format=torch.contiguous_format))

    def forward(self, weight):
        if weight.ndim == 1:  # torch: normalized exactly, no power iteration
            return F.normalize(weight, dim=0, eps=self.eps)
        handed = self._handed
        if handed[0] is not None:
            w_sn, handed[0] = handed[0], None
            return w_sn
        n_iter = self.n_power_iterations if self.training else 0
        if isinstance(weight, _DTensor) or weight.is_complex():
            name, sigma, u, v = self._iterate(weight, n_iter)  # raises for a DTensor
            return _ops.normalize(name, weight, u, v, sigma, self.dim)
        # power iteration (u, v updated in place) and W / sigma in one op call on CPU
        name = _ops.resolve_backend(self.backend, weight.device.type)
        return _ops.power_normalize(name, [weight], [self._u], [self._v], [self.dim], n_iter, self.eps)[0]

    def right_inverse(self, value):
        return value

    def extra_repr(self):
        return f"n_power_iterations={self.n_power_iterations}, dim={self.dim}, eps={self.eps}, backend={self.backend!r}"


class _LegacyKeys:
    """load_state_dict pre-hook of a layer: reads the keys written by the legacy
    ``torch.nn.utils.spectral_norm``: ``weight_orig/_u/_v`` (its version 1) and the oldest layout
    (no ``weight_v``; ``weight`` holds W / sigma), whose v is solved for as torch's own hook does.
    Inert once the layer has no spectral norm on ``name`` (e.g. after torch's
    ``remove_parametrizations``)."""

    def __init__(self, name):
        self.name = name

    def __call__(self, module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        sn = _find_sn(module, self.name)
        old = prefix + self.name
        if sn is None or old + "_orig" not in state_dict:
            return
        version = local_metadata.get("spectral_norm", {}).get(self.name + ".version", None)
        if (version is None or version < 1) and old in state_dict and old + "_u" in state_dict:
            # torch.nn.utils.spectral_norm's SpectralNormLoadStateDictPreHook: W = W_orig / sigma,
            # u = normalize(W_orig v): recover sigma, then the v with u^T W_orig v = sigma
            with torch.no_grad():
                w_orig = state_dict[old + "_orig"]
                sigma = (w_orig / state_dict[old]).mean()
                w_mat = reference.sn_weight_matrix(w_orig, sn.dim)
                u = state_dict[old + "_u"]
                v = torch.linalg.multi_dot([w_mat.t().mm(w_mat).pinverse(), w_mat.t(), u.unsqueeze(1)]).squeeze(1)
                state_dict[old + "_v"] = v.mul_(sigma / torch.dot(u, torch.mv(w_mat, v)))
        new = f"{prefix}parametrizations.{self.name}."
        state_dict[new + "original"] = state_dict.pop(old + "_orig")
        for s in ("u", "v"):
            if f"{old}_{s}" in state_dict:
                state_dict[f"{new}0._{s}"] = state_dict.pop(f"{old}_{s}")
        state_dict.pop(old, None)


# ---------------------------------------------------------------------------------------------
# validation
def _is_sn(p):
    return isinstance(p, (_SpectralNorm, torch.nn.utils.parametrizations._SpectralNorm))


def _find_sn(module, name):
    """The first spectral norm parametrization of ``module.<name>``, or None."""
    if not parametrize.is_parametrized(module, name):
        return None
    return next((p for p in module.parametrizations[name] if _is_sn(p)), None)


def _has_legacy_sn(module, name):
    """Whether ``module.<name>`` carries the legacy ``torch.nn.utils.spectral_norm`` hook."""
    return any(isinstance(h, _LegacySpectralNorm) and h.name == name
               for h in module._forward_pre_hooks.values())


def _check_args(module, name, n_power_iterations, eps, dim, backend):
    """Returns (weight, n_power_iterations, eps, dim) with plain Python numbers."""
    if not isinstance(module, nn.Module):
        raise SpectralNormModuleError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    n_power_iterations = check_int(n_power_iterations, "n_power_iterations", low=1)
    eps = check_real(eps, "eps", positive=True, finite=True)
    _check_name(backend)
    if backend != "auto":
        _require_available(backend)
    if _has_legacy_sn(module, name):
        raise ValueError(f"{type(module).__name__}.{name} already has a spectral norm hook "
                         f"(torch.nn.utils.spectral_norm); remove it first")
    weight = getattr(module, name, None)
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise SpectralNormLazyError(f"{type(module).__name__}.{name} is an uninitialized (lazy) parameter: run "
                                    f"a dummy forward before applying spectral norm")
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"module {type(module).__name__} has no parameter or buffer named {name!r}")
    if not (weight.is_floating_point() or weight.is_complex()):
        raise SpectralNormDtypeError(f"{type(module).__name__}.{name} must be floating point or complex, "
                                     f"got {weight.dtype}")
    if dim is not None:
        dim = check_int(dim, "dim")
        if weight.ndim and not -weight.ndim <= dim < weight.ndim:
            raise SpectralNormDimError(f"dim must be in [{-weight.ndim}, {weight.ndim - 1}] for the "
                                       f"{weight.ndim}-d {type(module).__name__}.{name}, got {dim}")
    return weight, n_power_iterations, eps, dim


# ---------------------------------------------------------------------------------------------
# public API
def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None, *, backend="auto"):
    r"""Spectrally normalize ``module.<name>``: a drop-in for ``torch.nn.utils.parametrizations.spectral_norm``.

    ``W_SN = W / sigma(W)`` with ``sigma = u^T W_mat v`` estimated by power iteration on
    ``W_mat`` (W with ``dim`` moved to the front, reshaped to ``(h, -1)``; dim=1 for ConvTranspose):
    ``u <- normalize(W_mat v)``, then ``v <- normalize(W_mat^T u)``, ``n_power_iterations`` times per
    weight access in training mode, none in eval mode, 15 at registration. Gradients flow through
    W only. 1-D weights are simply normalized. ``state_dict`` keys and registration RNG draws are
    torch's, so checkpoints load both ways; checkpoints of the legacy ``torch.nn.utils.spectral_norm``
    (``weight_orig``, ``weight_u``, ``weight_v``, or the oldest ``weight_orig``, ``weight_u``,
    ``weight``) load too. As in torch, registering it twice on one weight stacks a second
    parametrization (``...weight.1._u``), and complex weights work (they run the eager code).
    Errors are torch's types (a ``dim`` out of range is an IndexError, also a ValueError).

    Example::

        >>> D = nn.Sequential(fg.spectral_norm(nn.Conv2d(3, 64, 4, 2, 1)), nn.LeakyReLU(0.2))
        >>> D.state_dict().keys()   # '0.parametrizations.weight.original', '0.parametrizations.weight.0._u', ...
    """
    weight, n_power_iterations, eps, dim = _check_args(module, name, n_power_iterations, eps, dim, backend)
    if dim is None:
        dim = 1 if isinstance(module, _TRANSPOSED) else 0
    sn = _SpectralNorm(weight, n_power_iterations, int(dim), eps, backend)
    parametrize.register_parametrization(module, name, sn)
    _install_fast_access(module, name)
    if not any(isinstance(_unwrap(h), _LegacyKeys) and _unwrap(h).name == name
               for h in module._load_state_dict_pre_hooks.values()):
        module.register_load_state_dict_pre_hook(_LegacyKeys(name))
    return module


def _install_fast_access(module, name):
    """Replace the ``module.<name>`` property that torch's parametrize injected (on the per-module
    class it creates) by one that skips two nn.Module calls, a ModuleList lookup and a failed
    ``hasattr`` (~10 us per weight access, more than the arithmetic of most layers) whenever the
    only parametrization is fastgan's spectral norm and nothing could observe the difference: no
    hooks on the parametrization modules or global module hooks, no parametrize caching, no JIT
    tracing, no torch.compile tracing. Otherwise torch's getter runs, unchanged. torch's
    ``remove_parametrizations`` deletes this property exactly as it deletes its own."""
    cls = type(module)
    prop = cls.__dict__.get(name)
    if not isinstance(prop, property) or getattr(prop.fget, "_fastgan_sn", False):
        return
    slow = prop.fget

    def get(self):
        plist = self._modules["parametrizations"]._modules[name]
        mods = plist._modules
        if len(mods) == 1:
            sn = mods["0"]
            if type(sn) is _SpectralNorm and _plain_call(plist, sn):
                handed = sn._handed
                w_sn = handed[0]
                if w_sn is not None:  # from apply_spectral_norm's pre-hook
                    handed[0] = None
                    return w_sn
                original = plist._parameters.get("original")
                return sn.forward(plist._buffers["original"] if original is None else original)
        return slow(self)

    get._fastgan_sn = True
    setattr(cls, name, property(get, prop.fset, prop.fdel, prop.__doc__))


_g = nn.modules.module
_tracing_state = torch._C._get_tracing_state


def _plain_call(plist, sn):
    """Whether torch's getter would do exactly ``sn.forward(original)``: nn.Module._call_impl's own
    fast-path test for both modules (no hooks of theirs, no global ones), no parametrize caching,
    no JIT tracing (Module.__call__ records scopes). Under torch.compile the op layer picks its
    compile-friendly ops itself."""
    return not (plist._forward_hooks or plist._forward_pre_hooks or plist._backward_hooks
                or plist._backward_pre_hooks or sn._forward_hooks or sn._forward_pre_hooks or sn._backward_hooks
                or sn._backward_pre_hooks or _g._global_forward_hooks or _g._global_forward_pre_hooks
                or _g._global_backward_hooks or _g._global_backward_pre_hooks or parametrize._cache_enabled
                or _tracing_state() is not None or plist._compiled_call_impl is not None
                or sn._compiled_call_impl is not None)


def _unwrap(hook):
    return getattr(hook, "hook", hook)


def _value_below(plist, k):
    """The input of ``plist[k]``: the originals through ``plist[0..k-1]``, no power iteration
    anywhere (every parametrization is evaluated in eval mode, its mode restored after)."""
    if plist.is_tensor:
        args = [plist.original]
    else:
        args = [getattr(plist, f"original{i}") for i in range(plist.ntensors)]
    below = list(plist)[:k]
    modes = [m.training for m in below]
    try:
        x = args[0]
        for i, m in enumerate(below):
            m.eval()
            x = m(*args) if i == 0 else m(x)
        return x
    finally:
        for m, t in zip(below, modes):
            m.train(t)


def _compute_current(sn, w):
    """W / sigma from the current buffers, no power iteration (what eval mode returns)."""
    if w.ndim == 1:
        return F.normalize(w, dim=0, eps=sn.eps)
    u, v = sn._u, sn._v
    return w / torch.vdot(u, torch.mv(reference.sn_weight_matrix(w, sn.dim), v))


def remove_spectral_norm(module, name="weight"):
    """Remove the spectral norm of ``module.<name>``, leaving a plain parameter equal to the current
    ``W / sigma`` (sigma from the current u, v; no power iteration). The parameter object is kept, so
    an optimizer holding it still works. Where other parametrizations share the weight (spectral
    norm stacked over ``weight_norm``, or twice), only the last spectral norm goes: the value it
    produced is written back through those below it (their ``right_inverse``), the rest stay. The
    weight is then unchanged where those inverses are exact (weight_norm's); a spectral norm's
    right_inverse is the identity (torch's), so below one the value becomes its original.

    Example::

        >>> layer = fg.remove_spectral_norm(fg.spectral_norm(nn.Linear(20, 40)))
        >>> type(layer.weight) is nn.Parameter
        True
    """
    if not isinstance(module, nn.Module):
        raise SpectralNormModuleError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    ks = ([k for k, p in enumerate(module.parametrizations[name]) if _is_sn(p)]
          if parametrize.is_parametrized(module, name) else [])
    if not ks:
        raise ValueError(f"spectral_norm of {name!r} not found in {type(module).__name__}")
    plist, k = module.parametrizations[name], ks[-1]
    sn = plist[k]
    with torch.no_grad():
        w_sn = _compute_current(sn, _value_below(plist, k))
    if isinstance(sn, _SpectralNorm):
        sn._removed = True
    if len(plist) == 1:
        parametrize.remove_parametrizations(module, name, leave_parametrized=False)
        with torch.no_grad():
            getattr(module, name).copy_(w_sn)
    else:
        with torch.no_grad():  # write W / sigma back through the parametrizations below
            value = w_sn
            for m in reversed(list(plist)[:k]):
                value = m.right_inverse(value)
            if plist.is_tensor:
                plist.original.copy_(value)
            else:
                for i, t in enumerate(value):
                    getattr(plist, f"original{i}").copy_(t)
        del plist[k]
    if _find_sn(module, name) is None:
        for key, hook in list(module._load_state_dict_pre_hooks.items()):
            if isinstance(_unwrap(hook), _LegacyKeys) and _unwrap(hook).name == name:
                del module._load_state_dict_pre_hooks[key]
    return module


class _BatchedPowerIteration:
    """Forward pre-hook of a model: one ``sn_power`` call per (device, dtype, settings) for all its
    spectrally normalized layers, then every ``W / sigma`` (with autograd); each layer's weight access
    returns its tensor. Parameters and buffers are read from the module dicts: ``.to()`` and
    ``load_state_dict`` may replace them, and attribute access costs microseconds per layer."""

    def __init__(self, layers):
        self.layers = layers  # [(module, ParametrizationList, _SpectralNorm)]
        self.handles = []  # of this hook and of clear(), removed once no layer is left
        self._plan, self._last = None, []  # the grouping of the last forward and what it read

    def prune(self):
        """Forget the layers whose spectral norm is gone (fg.remove_spectral_norm, torch's
        remove_parametrizations, a re-registration); with none left, unregister from the model.
        Returns whether any layer is left."""
        def alive(m, plist, sn):
            pd = m._modules.get("parametrizations")
            return (not sn._removed and pd is not None and pd._modules.get("weight") is plist
                    and sn in plist._modules.values())
        live = [layer for layer in self.layers if alive(*layer)]
        if len(live) != len(self.layers):
            for m, _, sn in self.layers:
                sn._handed[0] = None
            self.layers = live
        if not live:
            for h in self.handles:
                h.remove()
            self.handles.clear()
        return bool(live)

    def _reads(self):
        """What this forward reads, layer by layer (tensors and settings, compared by identity), or
        None when some layer lost its spectral norm."""
        reads = []
        for m, plist, sn in self.layers:
            pd = m._modules.get("parametrizations")
            if sn._removed or pd is None or pd._modules.get("weight") is not plist or plist._modules.get("0") is not sn:
                return None
            b = sn._buffers
            reads += (plist._parameters.get("original"), b.get("_u"), b.get("_v"), sn.training,
                      sn.n_power_iterations, sn.eps, sn.backend)
        return reads

    def _group(self):
        """[(backend, weights, us, vs, dims, n_iter, eps, handed slots)], one entry per call."""
        groups = {}
        for _, plist, sn in self.layers:
            w = plist._parameters["original"]
            if isinstance(w, _DTensor) or w.is_complex():
                # FSDP unshards a DTensor only when its own module runs, and complex weights run
                # torch's eager code: such layers iterate themselves when accessed
                continue
            n = sn.n_power_iterations if sn.training else 0
            groups.setdefault((w.device, w.dtype, n, sn.eps, sn.backend), []).append((w, sn))
        plan = []
        for (device, _, n, eps, backend), items in groups.items():
            sns = [sn for _, sn in items]
            plan.append((_ops.resolve_backend(backend, device.type), [w for w, _ in items],
                         [sn._buffers["_u"] for sn in sns], [sn._buffers["_v"] for sn in sns],
                         [sn.dim for sn in sns], n, eps, [sn._handed for sn in sns]))
        return plan

    def __call__(self, model, args):
        reads = self._reads()
        if reads is None:  # a layer lost its spectral norm, or sits elsewhere in its list
            if not self.prune():
                return
            self._plan = None
            reads = [id(layer) for layer in self.layers]  # never equal to a list of tensors
        # the grouping is per-layer Python: redone only when a tensor or setting changed (.to(),
        # load_state_dict(assign=True), train/eval, ...), compared by identity
        if self._plan is None or len(reads) != len(self._last) or any(a is not b for a, b in zip(reads, self._last)):
            self._plan, self._last = self._group(), reads
        for name, ws, us, vs, dims, n, eps, handed in self._plan:
            for slot, w_sn in zip(handed, _ops.power_normalize(name, ws, us, vs, dims, n, eps)):
                slot[0] = w_sn

    def clear(self, model, args, output):
        # a layer that the forward did not use must not pick up a stale W / sigma later
        for _, _, sn in self.layers:
            sn._handed[0] = None


def apply_spectral_norm(model, *, n_power_iterations=1, eps=1e-12, backend="auto"):
    r"""Spectrally normalize every Linear/Conv*/ConvTranspose*/Embedding weight of ``model`` and batch
    their power iterations: one fused ``sn_power`` call per model forward (per dtype and device)
    updates every u, v and sigma, instead of a chain of small ops per layer.

    Per layer the semantics are :func:`spectral_norm`'s (layers registered in ``model.modules()``
    order, so the RNG draws match applying torch's spectral_norm in that order). Each forward of
    ``model`` advances every layer by ``n_power_iterations`` in training mode (a layer used twice
    in one forward gets one more iteration at its second use, as in torch; a layer not used in a
    forward still advances). Layers already parametrized on ``weight``, or carrying the legacy
    ``torch.nn.utils.spectral_norm`` hook, are left as they are. Once no layer is left normalized
    (``fg.remove_spectral_norm`` or torch's ``remove_parametrizations`` on each), the model's hooks
    go at its next forward or ``apply_spectral_norm`` call, which then applies afresh.

    Example::

        >>> D = fg.apply_spectral_norm(DCGANCritic())
        >>> loss = D(real).mean() - D(fake).mean()   # two forwards, one backward: fine
        >>> loss.backward()
    """
    if not isinstance(model, nn.Module):
        raise SpectralNormModuleError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for h in list(model._forward_pre_hooks.values()):
        if isinstance(h, _BatchedPowerIteration) and h.prune():
            raise ValueError(f"apply_spectral_norm was already applied to this {type(model).__name__} "
                             f"({len(h.layers)} layers still normalized)")
    n_power_iterations = check_int(n_power_iterations, "n_power_iterations", low=1)
    # layers with a spectral norm (or any parametrization) on their weight, fastgan's or torch's,
    # new or legacy, are left as they are
    targets = [m for m in model.modules() if isinstance(m, _SN_TYPES)
               and not parametrize.is_parametrized(m, "weight") and not _has_legacy_sn(m, "weight")]
    eps = check_real(eps, "eps", positive=True, finite=True)
    _check_name(backend)
    for m in targets:  # validate all before modifying any
        _check_args(m, "weight", n_power_iterations, eps, None, backend)
    layers = []
    for m in targets:
        spectral_norm(m, "weight", n_power_iterations, eps, backend=backend)
        layers.append((m, m.parametrizations.weight, m.parametrizations.weight[0]))
    hook = _BatchedPowerIteration(layers)
    hook.handles = [model.register_forward_pre_hook(hook),
                    model.register_forward_hook(hook.clear, always_call=True)]
    return model
