"""Issue 16: no silent wrong answers (higher-order autograd, precision, grad modes, critic shape,
functorch) and clear, consistent errors. Each test compares a fastgan backend with the eager
reference (or torch) in float64 by relative error."""
import math
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

import fastgan as fg
from conftest import available_backends, rel_err

FAST = [b for b in available_backends() if b != "cuda"]  # the non-reference backends that run on CPU
F64 = torch.float64


def nan_rel_err(a, b):
    """rel_err where NaN must sit at the same places in both (eager's second derivative is NaN at a
    zero row: the norm's curvature is unbounded there)."""
    a, b = a.detach().double(), b.detach().double()
    assert torch.equal(a.isnan(), b.isnan())
    keep = ~b.isnan()
    return rel_err(a[keep], b[keep]) if keep.any() else 0.0


def mlp(d=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def data(shape=(4, 3)):
    g = torch.Generator().manual_seed(1)
    return torch.randn(shape, generator=g, dtype=F64), torch.randn(shape, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------
# item 1: higher-order autograd through every backend equals the reference's
GNP_CONFIGS = [
    dict(), dict(one_sided=True), dict(target=0.0), dict(power=3.0), dict(target=0.5, power=1.5),
    dict(reduction="none"), dict(reduction="sum"), dict(one_sided=True, target=0.3, power=2.5),
]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("cfg", GNP_CONFIGS, ids=str)
def test_gradgradcheck_grad_norm_penalty(backend, cfg):
    torch.manual_seed(2)
    shape = (3, 4) if backend == "triton" else (5, 2, 3)  # the interpreter is slow
    g = torch.randn(shape, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: fg.grad_norm_penalty(x, backend=backend, **cfg), (g,))


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("cfg", GNP_CONFIGS, ids=str)
def test_second_derivative_matches_reference(backend, cfg):
    """d/dg of ||d gnp/dg||^2 (create_graph), zero rows and strided input included."""
    torch.manual_seed(3)
    base = torch.randn(6, 10, dtype=F64)[:, ::2]  # strided rows: the copy path
    base[2] = 0
    out = {}
    for be in ("reference", backend):
        g = base.clone().requires_grad_()
        loss = fg.grad_norm_penalty(g, backend=be, **cfg)
        w = torch.linspace(0.5, 1.5, loss.numel(), dtype=F64).reshape(loss.shape)
        (d1,) = torch.autograd.grad(loss, g, w, create_graph=True)
        (d2,) = torch.autograd.grad((d1 * d1).sum() + d1.sum(), g)
        out[be] = (d1.detach(), d2)
    assert rel_err(out[backend][0], out["reference"][0]) < 1e-12
    assert nan_rel_err(out[backend][1], out["reference"][1]) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_second_derivative_low_precision(dtype):
    torch.manual_seed(4)
    base = torch.randn(8, 33, dtype=F64)
    out = {}
    for be in ("reference", "cpu"):
        g = base.to(dtype).requires_grad_()
        (d1,) = torch.autograd.grad(fg.grad_norm_penalty(g, backend=be), g, create_graph=True)
        (d2,) = torch.autograd.grad((d1.float() ** 2).sum(), g)
        out[be] = d2
    assert rel_err(out["cpu"], out["reference"]) < (1e-5 if dtype == torch.float32 else 4e-3)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("how", ["grad", "backward"])
def test_penalty_parameter_double_grad_matches_reference(backend, how):
    """Unrolled GANs / consensus optimization: grad(gp, params, create_graph=True), then backward."""
    D = mlp()
    params = list(D.parameters())
    r, f = data()
    alpha = torch.tensor([0.1, 0.4, 0.7, 0.9], dtype=F64)
    out = {}
    for be in ("reference", backend):
        with fg.use_backend(be):
            gp = fg.gradient_penalty(D, r, f, alpha=alpha) + fg.r1_penalty(D, r, gamma=3.0)
        if how == "grad":
            gs = torch.autograd.grad(gp, params, create_graph=True, materialize_grads=True)
        else:
            gp.backward(create_graph=True)
            gs = [p.grad for p in params if p.grad is not None]
            for p in params:
                p.grad = None
        out[be] = torch.autograd.grad(sum((x * x).sum() for x in gs), params, materialize_grads=True)
    assert sum(float(a.abs().sum()) for a in out[backend]) > 0
    for a, b in zip(out[backend], out["reference"]):
        assert rel_err(a, b) < 1e-10


def _sn_double_grad(layer, weight_of, x):
    w = weight_of(layer)
    loss = layer(x).pow(2).sum()
    (gw,) = torch.autograd.grad(loss, w, create_graph=True)
    (gg,) = torch.autograd.grad((gw * gw).sum() + gw.sum(), w)
    return gw.detach(), gg


def _orig(m):
    return m.parametrizations.weight.original


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("make, xshape", [
    (lambda: nn.Linear(5, 4), (3, 5)),
    (lambda: nn.Conv2d(2, 3, 3), (2, 2, 5, 5)),
    (lambda: nn.ConvTranspose2d(3, 2, 3), (2, 3, 4, 4)),  # dim=1: the permuted layout
])
def test_spectral_norm_double_grad_matches_torch(backend, make, xshape):
    torch.manual_seed(5)
    x = torch.randn(xshape, dtype=F64)
    base = make().double()
    ours, theirs = make().double(), make().double()
    ours.load_state_dict(base.state_dict())
    theirs.load_state_dict(base.state_dict())
    torch.manual_seed(6)
    fg.spectral_norm(ours, backend=backend)
    torch.manual_seed(6)
    torch.nn.utils.parametrizations.spectral_norm(theirs)
    a, b = _sn_double_grad(ours, _orig, x), _sn_double_grad(theirs, _orig, x)
    assert rel_err(a[0], b[0]) < 1e-10
    assert rel_err(a[1], b[1]) < 1e-10


@pytest.mark.parametrize("backend", FAST)
def test_batched_spectral_norm_double_grad_matches_torch(backend):
    torch.manual_seed(7)
    x = torch.randn(3, 2, 6, 6, dtype=F64)

    def model():
        return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Conv2d(4, 2, 3), nn.Flatten(),
                             nn.Linear(8, 1)).double()

    torch.manual_seed(8)
    ours = model()
    theirs = model()
    theirs.load_state_dict(ours.state_dict())
    torch.manual_seed(9)
    fg.apply_spectral_norm(ours, backend=backend)
    torch.manual_seed(9)
    for m in theirs.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            torch.nn.utils.parametrizations.spectral_norm(m)
    res = []
    for net in (ours, theirs):
        ws = [_orig(m) for m in net.modules() if parametrize.is_parametrized(m, "weight")]
        gw = torch.autograd.grad(net(x).pow(2).sum(), ws, create_graph=True)
        res.append(torch.autograd.grad(sum((g * g).sum() for g in gw), ws))
    assert len(res[0]) == 3
    for a, b in zip(*res):
        assert rel_err(a, b) < 1e-10


def test_first_order_backward_stays_on_the_kernel():
    """The double-backward path is taken only with create_graph: plain backward calls the fused op."""
    g = torch.randn(4, 5, requires_grad=True)
    with torch.profiler.profile() as prof:
        fg.grad_norm_penalty(g, backend="cpu").backward()
    names = {e.name for e in prof.events()}
    assert "fastgan::gnp_loss_backward" in names
    assert "aten::linalg_vector_norm" not in names


# ---------------------------------------------------------------------------------------------
# item 3: grad modes
PENALTIES = {
    "gradient_penalty": lambda D, r, f: fg.gradient_penalty(D, r, f),
    "lipschitz_penalty": lambda D, r, f: fg.lipschitz_penalty(D, r, f),
    "dragan_penalty": lambda D, r, f: fg.dragan_penalty(D, r),
    "wgan_div_penalty": lambda D, r, f: fg.wgan_div_penalty(D, r, f),
    "r1_penalty": lambda D, r, f: fg.r1_penalty(D, r),
    "r2_penalty": lambda D, r, f: fg.r2_penalty(D, f),
}


@pytest.mark.parametrize("name", PENALTIES)
@pytest.mark.parametrize("mode, words", [
    (torch.no_grad, "gradient computation disabled"),
    (torch.inference_mode, "inference_mode"),
    (lambda: torch.set_grad_enabled(False), "gradient computation disabled"),
])
def test_penalty_without_autograd_raises(name, mode, words):
    D, (r, f) = mlp(), data()
    rng = torch.get_rng_state()
    with mode():
        with pytest.raises(RuntimeError, match=f"{name}.*{words}"):
            PENALTIES[name](D, r, f)
    assert torch.equal(torch.get_rng_state(), rng)  # nothing drawn before the error


@pytest.mark.parametrize("name", PENALTIES)
def test_inference_tensor_inputs_work_everywhere(name):
    """Inputs created under inference_mode: every regularizer works like gradient_penalty does."""
    D, (r, f) = mlp(), data()
    with torch.inference_mode():
        ri, fi = r.clone(), f.clone()
    torch.manual_seed(10)
    ours = PENALTIES[name](D, ri, fi)
    torch.manual_seed(10)
    theirs = PENALTIES[name](D, r, f)
    assert ours.requires_grad and rel_err(ours, theirs) == 0


# ---------------------------------------------------------------------------------------------
# items 4, 10: the critic's output
@pytest.mark.parametrize("name", PENALTIES)
def test_critic_reducing_over_the_batch_is_rejected(name):
    D, (r, f) = mlp(), data()
    with pytest.raises(ValueError, match="batch as its first dimension.*got shape \\(\\)"):
        PENALTIES[name](lambda x: D(x).mean(), r, f)
    with pytest.raises(ValueError, match="batch as its first dimension.*got shape \\(1, 1\\)"):
        PENALTIES[name](lambda x: D(x).mean(0, keepdim=True), r, f)


def test_critic_output_shapes_accepted():
    D, (r, f) = mlp(), data()
    alpha = torch.rand(4, dtype=F64)
    ref = fg.gradient_penalty(D, r, f, alpha=alpha)
    assert rel_err(fg.gradient_penalty(lambda x: D(x).squeeze(1), r, f, alpha=alpha), ref) < 1e-14
    assert rel_err(fg.gradient_penalty(lambda x: D(x).expand(4, 3) / 3, r, f, alpha=alpha), ref) < 1e-14


@pytest.mark.parametrize("name", PENALTIES)
def test_integer_critic_output_names_the_dtype(name):
    D, (r, f) = mlp(), data()
    with pytest.raises(TypeError, match="floating-point scores.*torch.int64"):
        PENALTIES[name](lambda x: (D(x) > 0).long(), r, f)


# ---------------------------------------------------------------------------------------------
# item 5: precision of the reduction at millions of rows
def test_loss_reduction_precision_millions_of_rows():
    B = 4 * 1024 * 1024
    g = torch.Generator().manual_seed(11)
    grads = torch.rand(B, 2, generator=g) + 0.5  # float32
    want = reference_gnp64(grads)
    for reduction in ("mean", "sum"):
        ours = fg.grad_norm_penalty(grads, backend="cpu", reduction=reduction)
        ref = want if reduction == "mean" else want * B
        assert abs(ours.double().item() - ref) / abs(ref) < 1e-6, reduction


def reference_gnp64(grads):
    n = grads.double().norm(dim=1)
    return float(((n - 1) ** 2).mean())


def test_huge_row_precision():
    """Few rows of millions of elements: the per-chunk partial sums are combined in float64."""
    g = torch.Generator().manual_seed(12)
    grads = torch.rand(2, 3 * 1024 * 1024, generator=g)
    ours = fg.grad_norm_penalty(grads, backend="cpu", target=0.0, reduction="none")
    want = (grads.double() ** 2).sum(1)
    assert rel_err(ours, want) < 1e-6


# ---------------------------------------------------------------------------------------------
# items 9, 11, 12: consistent argument checks
ALL_GNP_BACKENDS = available_backends(include_reference=True)


@pytest.mark.parametrize("backend", [b for b in ALL_GNP_BACKENDS if b != "cuda"])
@pytest.mark.parametrize("kw, exc, words", [
    (dict(target="1"), TypeError, "target must be a real number, got '1' \\(str\\)"),
    (dict(target=None), TypeError, "target must be a real number, got None"),
    (dict(target=-1.0), ValueError, "target must be >= 0, got -1.0"),
    (dict(one_sided="False"), TypeError, "one_sided must be a bool, got 'False'"),
    (dict(one_sided=1), TypeError, "one_sided must be a bool, got 1"),
    (dict(one_sided=None), TypeError, "one_sided must be a bool"),
])
def test_same_error_everywhere(backend, kw, exc, words):
    D, (r, f) = mlp(), data()
    g = torch.randn(4, 3)
    calls = [lambda: fg.grad_norm_penalty(g, backend=backend, **kw), lambda: fg.gradient_penalty(D, r, f, **kw)]
    if "target" in kw:
        calls += [lambda: fg.dragan_penalty(D, r, **kw), lambda: fg.lipschitz_penalty(D, r, f, **kw)]
    rng = torch.get_rng_state()
    with fg.use_backend(backend):
        for call in calls:
            with pytest.raises(exc, match=words):
                call()
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("alpha_shape", [(4,), (4, 1), (4, 1, 1, 1)])
def test_alpha_eager_shapes(alpha_shape):
    D = nn.Sequential(nn.Flatten(), nn.Linear(12, 1)).double()
    r, f = data((4, 3, 2, 2))
    a = torch.rand(4, dtype=F64)
    ours = fg.gradient_penalty(D, r, f, alpha=a.reshape(alpha_shape))
    x = (a.view(4, 1, 1, 1) * r + (1 - a.view(4, 1, 1, 1)) * f).requires_grad_()
    (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    theirs = 10 * ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert rel_err(ours, theirs) < 1e-14


@pytest.mark.parametrize("alpha, exc, words", [
    (torch.rand(4, 2, dtype=F64), ValueError, "alpha must have shape \\(4,\\)"),
    (torch.rand(4, 1, 1, 1, 1, dtype=F64), ValueError, "alpha must have shape \\(4,\\)"),
    (torch.rand(3, dtype=F64), ValueError, "alpha must have shape \\(4,\\)"),
    (torch.ones(4, dtype=torch.long), TypeError, "alpha must be a floating-point tensor"),
    ([0.5] * 4, TypeError, "alpha must be a tensor"),
])
def test_bad_alpha(alpha, exc, words):
    D, (r, f) = mlp(), data()
    with pytest.raises(exc, match=words):
        fg.gradient_penalty(D, r, f, alpha=alpha)


def test_alpha_requiring_grad_is_a_constant():
    D, (r, f) = mlp(), data()
    a = torch.rand(4, dtype=F64, requires_grad=True)
    gp = fg.gradient_penalty(D, r, f, alpha=a)
    assert rel_err(gp, fg.gradient_penalty(D, r, f, alpha=a.detach())) == 0
    gp.backward()
    assert a.grad is None  # documented: alpha, real and fake are constants


def test_integer_types():
    D, (r, f) = mlp(), data()
    a = torch.rand(4, dtype=F64)
    assert rel_err(fg.gradient_penalty(D, r, f, alpha=a[:2], pac=np.int64(2)),
                   fg.gradient_penalty(D, r, f, alpha=a[:2], pac=2)) == 0
    with pytest.raises(TypeError, match="pac must be an int, got 2.0"):
        fg.gradient_penalty(D, r, f, pac=2.0)
    with pytest.raises(TypeError, match="pac must be an int, got True"):
        fg.gradient_penalty(D, r, f, pac=True)
    torch.manual_seed(0)
    m = fg.spectral_norm(nn.Linear(3, 4), n_power_iterations=np.int64(2), dim=np.int64(0))
    assert type(m.parametrizations.weight[0].n_power_iterations) is int
    torch.manual_seed(0)
    t = torch.nn.utils.parametrizations.spectral_norm(nn.Linear(3, 4), n_power_iterations=2)
    m.load_state_dict(t.state_dict())
    x = torch.randn(2, 3)
    assert rel_err(m(x), t(x)) < 1e-5
    fg.apply_spectral_norm(nn.Sequential(nn.Linear(2, 2)), n_power_iterations=np.int32(3))
    assert fg.anneal_std(np.int64(1), np.int64(2), 1.0) == 0.5
    assert fg.grad_norm_penalty(torch.ones(2, 2), one_sided=np.bool_(True)).item() == pytest.approx(
        (math.sqrt(2) - 1) ** 2)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: fg.set_backend(3), TypeError, "backend must be one of"),
    (lambda: fg.use_backend(None).__enter__(), TypeError, "backend must be one of"),
    (lambda: fg.grad_norm_penalty(torch.ones(2, 2), backend=3), TypeError, "backend must be one of"),
    (lambda: fg.grad_norm_penalty(torch.ones(2, 2), reduction=None), TypeError, "reduction must be one of"),
    (lambda: fg.dragan_penalty(mlp(), data()[0], perturbation=1), TypeError, "perturbation must be one of"),
    (lambda: fg.gradient_penalty(mlp(), *data(), generator=1), TypeError, "generator"),
    (lambda: fg.r1_penalty(mlp(), data()[0], return_norms="yes"), TypeError, "return_norms must be a bool"),
    (lambda: fg.r1_penalty("D", data()[0]), TypeError, "D must be callable"),
    (lambda: fg.grad_norm_penalty(torch.ones(2, 2).to_sparse()), TypeError, "grads must be a dense"),
    (lambda: fg.spectral_norm(nn.Linear(2, 2), eps="1e-12"), TypeError, "eps must be a real number"),
    (lambda: fg.spectral_norm(nn.Linear(2, 2), eps=math.inf), ValueError, "eps must be finite"),
    (lambda: fg.spectral_norm(nn.Linear(2, 2), dim=0.0), TypeError, "dim must be an int"),
    (lambda: fg.anneal_std(0, 3, 1.0, kind=None), TypeError, "kind must be one of"),
])
def test_type_first_then_range(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


# ---------------------------------------------------------------------------------------------
# item 13: torch.func transforms
@pytest.mark.parametrize("backend", [b for b in ALL_GNP_BACKENDS if b != "cuda"])
@pytest.mark.parametrize("cfg", GNP_CONFIGS[:5], ids=str)
def test_torch_func_grad(backend, cfg):
    torch.manual_seed(13)
    g = torch.randn(5, 4, dtype=F64)
    f = (lambda x: fg.grad_norm_penalty(x, backend=backend, **cfg).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = torch.func.grad(f)(g)
        hess = torch.func.hessian(f)(g[:2])
        batched = torch.vmap(lambda x: fg.grad_norm_penalty(x, backend=backend, **cfg))(g.view(5, 2, 2))
    theirs = torch.func.grad(lambda x: fg.reference.grad_norm_penalty(x, **cfg).sum())(g)
    assert rel_err(ours, theirs) < 1e-14
    h_ref = torch.func.hessian(lambda x: fg.reference.grad_norm_penalty(x, **cfg).sum())(g[:2])
    assert rel_err(hess, h_ref) < 1e-14
    b_ref = torch.stack([fg.reference.grad_norm_penalty(x, **cfg) for x in g.view(5, 2, 2)])
    assert rel_err(batched, b_ref) < 1e-14


def test_torch_func_fallback_warns_once():
    import fastgan.ops.penalty as op

    op._warned_functorch.clear()
    g = torch.randn(3, 4)
    with pytest.warns(UserWarning, match="reference implementation inside torch.func"):
        torch.func.grad(lambda x: fg.grad_norm_penalty(x, backend="cpu"))(g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.func.grad(lambda x: fg.grad_norm_penalty(x, backend="cpu"))(g)


def test_torch_func_over_spectral_norm():
    torch.manual_seed(14)
    layer = fg.spectral_norm(nn.Linear(4, 3).double(), backend="cpu").eval()
    ref = torch.nn.utils.parametrizations.spectral_norm(nn.Linear(4, 3).double()).eval()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, dtype=F64)
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss(p, m):
        return torch.func.functional_call(m, p, (x,)).pow(2).sum()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = torch.func.grad(loss)(params, layer)
    theirs = torch.func.grad(loss)(params, ref)
    for k in params:
        assert rel_err(ours[k], theirs[k]) < 1e-12


def _timing_ratio():  # not a test: used by the report (python -c ...)
    g = torch.randn(64, 12288, requires_grad=True)
    ts = []
    for _ in range(50):
        t = time.perf_counter()
        fg.grad_norm_penalty(g).backward()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]
