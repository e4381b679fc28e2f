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

from . import _validate, reference
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
        name = _ops.resolve_backend(self.backend, weight.device.type)
        sigmas, us, vs = _ops.power(name, [weight.detach()], [self._u], [self._v], [self.dim], n_iter, self.eps)
        if n_iter:
            with torch.no_grad():
                torch._foreach_copy_([self._u, self._v], [us[0], vs[0]])
        return name, sigmas[0], us[0], vs[0]

    def forward(self, weight):
        if weight.ndim == 1:  # torch: normalized exactly, no power iteration
            return F.normalize(weight, dim=0, eps=self.eps)
        handed = self._handed
        if handed[0] is not None:
            w_sn, handed[0] = handed[0], None
            return w_sn
        name, sigma, u, v = self._iterate(weight, self.n_power_iterations if self.training else 0)
        return _ops.normalize(name, weight, u, v, sigma, self.dim)

    def right_inverse(self, value):
        return value

    def extra_repr(self):
        return f"n_power_iterations={self.n_power_iterations}, dim={self.dim}, eps={self.eps}, backend={self.backend!r}"


class _LegacyKeys:
    """load_state_dict pre-hook: reads ``weight_orig/_u/_v`` written by ``torch.nn.utils.spectral_norm``."""

    def __init__(self, name):
        self.name = name

    def __call__(self, module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        old = prefix + self.name
        if old + "_orig" not in state_dict:
            return
        new = f"{prefix}parametrizations.{self.name}."
        state_dict[new + "original"] = state_dict.pop(old + "_orig")
        for s in ("u", "v"):
            if f"{old}_{s}" in state_dict:
                state_dict[f"{new}0._{s}"] = state_dict.pop(f"{old}_{s}")
        state_dict.pop(old, None)  # checkpoints older than torch 1.x's version 1 also stored W/sigma


# ---------------------------------------------------------------------------------------------
# validation
def _is_sn(p):
    return isinstance(p, (_SpectralNorm, torch.nn.utils.parametrizations._SpectralNorm))


def _check_int(x, name, low):
    return _validate.check_int(x, name, low=low)  # the shared contract: numbers.Integral, not bool


def _check_args(module, name, n_power_iterations, eps, dim, backend):
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    _check_int(n_power_iterations, "n_power_iterations", 1)
    _validate.check_real(eps, "eps", positive=True, finite=True)
    _check_name(backend)
    if backend != "auto":
        _require_available(backend)
    if parametrize.is_parametrized(module, name) and any(_is_sn(p) for p in module.parametrizations[name]):
        raise ValueError(f"spectral norm is already registered on {type(module).__name__}.{name}")
    if hasattr(module, name + "_orig") and hasattr(module, name + "_u"):
        raise ValueError(f"{type(module).__name__}.{name} already has a spectral norm hook "
                         f"(torch.nn.utils.spectral_norm); remove it first")
    weight = getattr(module, name, None)
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"{type(module).__name__}.{name} is an uninitialized (lazy) parameter: run a dummy "
                         f"forward before applying spectral norm")
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"module {type(module).__name__} has no parameter or buffer named {name!r}")
    if not weight.is_floating_point():
        raise TypeError(f"{type(module).__name__}.{name} must be floating point, got {weight.dtype}")
    if dim is not None:
        _check_int(dim, "dim", -10**9)
        if weight.ndim and not -weight.ndim <= dim < weight.ndim:
            raise ValueError(f"dim must be in [{-weight.ndim}, {weight.ndim - 1}] for the {weight.ndim}-d "
                             f"{type(module).__name__}.{name}, got {dim}")
    return weight


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
    (``weight_orig``, ``weight_u``, ``weight_v``) load too.

    Example::

        >>> D = nn.Sequential(fg.spectral_norm(nn.Conv2d(3, 64, 4, 2, 1)), nn.LeakyReLU(0.2))
        >>> D.state_dict().keys()   # '0.parametrizations.weight.original', '0.parametrizations.weight.0._u', ...
    """
    weight = _check_args(module, name, n_power_iterations, eps, dim, backend)
    n_power_iterations, eps = int(n_power_iterations), float(eps)  # numpy scalars are accepted, not stored
    if dim is None:
        dim = 1 if isinstance(module, _TRANSPOSED) else 0
    sn = _SpectralNorm(weight, n_power_iterations, int(dim), eps, backend)
    parametrize.register_parametrization(module, name, sn)
    module.register_load_state_dict_pre_hook(_LegacyKeys(name))
    return module


def _compute_current(module, name):
    """W / sigma from the current buffers, no power iteration (what eval mode returns)."""
    plist = module.parametrizations[name]
    sn = plist[0]
    w = plist.original
    if w.ndim == 1:
        return F.normalize(w, dim=0, eps=sn.eps)
    u, v = sn._u, sn._v
    return w / torch.vdot(u, torch.mv(reference.sn_weight_matrix(w, sn.dim), v))


def remove_spectral_norm(module, name="weight"):
    """Remove the spectral norm of ``module.<name>``, leaving a plain parameter equal to the current
    ``W / sigma`` (sigma from the current u, v; no power iteration). The parameter object is kept, so
    an optimizer holding it still works.

    Example::

        >>> layer = fg.remove_spectral_norm(fg.spectral_norm(nn.Linear(20, 40)))
        >>> type(layer.weight) is nn.Parameter
        True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not (parametrize.is_parametrized(module, name) and len(module.parametrizations[name]) == 1
            and _is_sn(module.parametrizations[name][0])):
        raise ValueError(f"spectral_norm of {name!r} not found in {type(module).__name__}")
    with torch.no_grad():
        w_sn = _compute_current(module, name)
    module.parametrizations[name][0]._removed = True
    parametrize.remove_parametrizations(module, name, leave_parametrized=False)
    with torch.no_grad():
        getattr(module, name).copy_(w_sn)
    for k, hook in list(module._load_state_dict_pre_hooks.items()):
        if isinstance(getattr(hook, "hook", hook), _LegacyKeys) and getattr(hook, "hook", hook).name == name:
            del module._load_state_dict_pre_hooks[k]
    return module


class _BatchedPowerIteration:
    """Forward pre-hook of a model: one ``sn_power`` call per (device, dtype, settings) for all its
    spectrally normalized layers, then every ``W / sigma`` (with autograd); each layer's weight access
    returns its tensor. Parameters and buffers are read from the module dicts: ``.to()`` and
    ``load_state_dict`` may replace them, and attribute access costs microseconds per layer."""

    def __init__(self, layers):
        self.layers = layers  # [(ParametrizationList, _SpectralNorm)]

    def __call__(self, model, args):
        groups = {}
        for plist, sn in self.layers:
            if sn._removed:
                continue
            w = plist._parameters["original"]
            if isinstance(w, _DTensor):
                continue  # FSDP unshards it only when its own module runs; the layer iterates itself then
            n = sn.n_power_iterations if sn.training else 0
            key = (w.device, w.dtype, n, sn.eps, sn.backend)
            groups.setdefault(key, []).append((w, sn))
        for (device, _, n, eps, backend), items in groups.items():
            name = _ops.resolve_backend(backend, device.type)
            ws = [w for w, _ in items]
            sns = [sn for _, sn in items]
            us, vs = [sn._buffers["_u"] for sn in sns], [sn._buffers["_v"] for sn in sns]
            dims = [sn.dim for sn in sns]
            sigmas, u_new, v_new = _ops.power(name, [w.detach() for w in ws], us, vs, dims, n, eps)
            if n:
                with torch.no_grad():
                    torch._foreach_copy_(us + vs, u_new + v_new)
            for sn, w_sn in zip(sns, _ops.normalize_all(name, ws, u_new, v_new, sigmas, dims)):
                sn._handed[0] = w_sn

    def clear(self, model, args, output):
        # a layer that the forward did not use must not pick up a stale W / sigma later
        for _, sn in self.layers:
            sn._handed[0] = None


def apply_spectral_norm(model, *, n_power_iterations=1, eps=1e-12, backend="auto"):
    r"""Spectrally normalize every Linear/Conv*/ConvTranspose*/Embedding weight of ``model`` and batch
    their power iterations: one fused ``sn_power`` call per model forward (per dtype and device)
    updates every u, v and sigma, instead of a chain of small ops per layer.

    Per layer the semantics are :func:`spectral_norm`'s (layers registered in ``model.modules()``
    order, so the RNG draws match applying torch's spectral_norm in that order). Each forward of
    ``model`` advances every layer by ``n_power_iterations`` in training mode (a layer used twice
    in one forward gets one more iteration at its second use, as in torch; a layer not used in a
    forward still advances). Layers already parametrized on ``weight`` are left as they are.

    Example::

        >>> D = fg.apply_spectral_norm(DCGANCritic())
        >>> loss = D(real).mean() - D(fake).mean()   # two forwards, one backward: fine
        >>> loss.backward()
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if any(isinstance(h, _BatchedPowerIteration) for h in model._forward_pre_hooks.values()):
        raise ValueError(f"apply_spectral_norm was already applied to this {type(model).__name__}")
    n_power_iterations = _check_int(n_power_iterations, "n_power_iterations", 1)
    _validate.check_real(eps, "eps", positive=True, finite=True)
    _check_name(backend)
    targets = [m for m in model.modules() if isinstance(m, _SN_TYPES) and not parametrize.is_parametrized(m, "weight")]
    for m in targets:  # validate all before modifying any
        _check_args(m, "weight", n_power_iterations, eps, None, backend)
    layers = []
    for m in targets:
        spectral_norm(m, "weight", n_power_iterations, eps, backend=backend)
        layers.append((m.parametrizations.weight, m.parametrizations.weight[0]))
    hook = _BatchedPowerIteration(layers)
    model.register_forward_pre_hook(hook)
    model.register_forward_hook(hook.clear, always_call=True)
    return model
