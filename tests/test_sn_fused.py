"""The fused CPU spectral-norm forward (``fastgan::sn_power_normalize``: power iterations with u, v
updated in place, then W / sigma, one call and one autograd node for a whole model) and the fast
weight access that fg.spectral_norm installs in place of torch's parametrization property.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import available_backends, check_isa_choice, rel_err
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_sn

import fastgan as fg
from fastgan import reference

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="needs the C++ extension")

# (shape, dim, layout): every dim, channels_last and strided weights, and sizes on both sides of
# the kernel's split between layers parallelized inside (>= 131072 elements) and small layers
# shared out whole between threads
CASES = [((7, 13), 0, "contiguous"), ((6, 5, 3, 3), 0, "channels_last"), ((5, 6, 3, 2), 1, "contiguous"),
         ((4, 9, 2), 2, "strided"), ((600, 230), 0, "contiguous"), ((64, 64, 3, 3), 0, "contiguous"),
         ((1, 64), 0, "contiguous"), ((130, 33, 31), 1, "contiguous")]


def weight(shape, dtype, layout, gen):
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    if layout == "channels_last":
        w = w.to(memory_format=torch.channels_last)
    elif layout == "strided":
        w = torch.randn(shape[::-1], generator=gen, dtype=torch.float64).permute(*range(len(shape) - 1, -1, -1))
    return w.to(dtype)


def unit(n, dtype, gen):
    return F.normalize(torch.randn(n, generator=gen, dtype=torch.float64), dim=0).to(dtype)


def inputs(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ws = [weight(s, dtype, lay, gen).requires_grad_() for s, _, lay in CASES]
    dims = [d for _, d, _ in CASES]
    mats = [reference.sn_weight_matrix(w.detach(), d) for w, d in zip(ws, dims)]
    us = [unit(m.shape[0], dtype, gen) for m in mats]
    vs = [unit(m.shape[1], dtype, gen) for m in mats]
    return ws, us, vs, dims


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_against_float64_reference(dtype, threads):
    """Outputs, the buffers written in place, the packed state and the gradient of every layer
    against the float64 reference fed the same (rounded) inputs; n_iter = 0 leaves u, v alone."""
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n_iter in (0, 1, 3):
            ws, us, vs, dims = inputs(dtype, seed=n_iter)
            u0, v0 = [u.clone() for u in us], [v.clone() for v in vs]
            s_ref, u_ref, v_ref = reference.sn_power([w.detach().double() for w in ws], [u.double() for u in us],
                                                     [v.double() for v in vs], dims, n_iter, 1e-12)
            out, state = torch.ops.fastgan.sn_power_normalize(ws, us, vs, dims, n_iter, 1e-12)
            gs = [torch.randn(w.shape, dtype=dtype) for w in ws]
            grads = torch.autograd.grad(out[1::2], ws[1::2], gs[1::2])  # layers without a gradient are skipped
            off = 0
            for k, (w, d) in enumerate(zip(ws, dims)):
                what = f"n_iter {n_iter} layer {k} {tuple(w.shape)}"
                h, cols = u_ref[k].numel(), v_ref[k].numel()
                assert out[k].dtype == dtype and out[k].shape == w.shape, what
                assert out[k].stride() == w.stride() or not w.is_non_overlapping_and_dense(), what
                wr = w.detach().double().requires_grad_()
                o_ref = reference.sn_normalize(wr, u_ref[k], v_ref[k], d)
                assert rel_err(out[k], o_ref) <= tol, what
                if n_iter:
                    assert rel_err(us[k], u_ref[k]) <= tol and rel_err(vs[k], v_ref[k]) <= tol, what
                else:
                    assert torch.equal(us[k], u0[k]) and torch.equal(vs[k], v0[k]), what
                assert rel_err(state[off], s_ref[k]) <= tol, what
                assert rel_err(state[off + 1:off + 1 + h], u_ref[k]) <= tol, what
                assert rel_err(state[off + 1 + h:off + 1 + h + cols], v_ref[k]) <= tol, what
                off += 1 + h + cols
                if k % 2 == 1:
                    (g_ref,) = torch.autograd.grad(o_ref, wr, gs[k].double())
                    assert rel_err(grads[k // 2], g_ref) <= 4 * tol, what
            assert off == state.numel()
    finally:
        torch.set_num_threads(before)


def test_results_do_not_depend_on_the_thread_count():
    """Small layers are shared out whole between threads, large ones split inside: bitwise the same."""
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            ws, us, vs, dims = inputs(torch.float32, seed=5)
            out, state = torch.ops.fastgan.sn_power_normalize(ws, us, vs, dims, 2, 1e-12)
            results.append([t.detach() for t in out] + [state] + us + vs)
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_buffers_version_bumped_and_two_calls_keep_their_own_state():
    """u, v change in place (their version counters move, as after torch's in-place copy); the
    backward of the first call still uses the u, v, sigma of the first call."""
    ws, us, vs, dims = inputs(torch.float64)
    versions = [t._version for t in us + vs]
    out1, _ = torch.ops.fastgan.sn_power_normalize(ws, us, vs, dims, 1, 1e-12)
    assert all(t._version > v for t, v in zip(us + vs, versions))
    u1, v1 = [u.clone() for u in us], [v.clone() for v in vs]
    torch.ops.fastgan.sn_power_normalize(ws, us, vs, dims, 1, 1e-12)  # rewrites the buffers
    g = torch.randn(ws[0].shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out1[0], ws[0], g)
    wr = ws[0].detach().clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(reference.sn_normalize(wr, u1[0], v1[0], dims[0]), wr, g)
    assert rel_err(grad, g_ref) <= 1e-12


def test_opcheck_and_bad_input():
    ws, us, vs, dims = inputs(torch.float64)
    # not test_aot_dispatch_*: torch 2.13 cannot functionalize a custom op mutating a Tensor[] with
    # outputs; under torch.compile fastgan uses sn_power + sn_normalize instead (tested with compile)
    torch.library.opcheck(torch.ops.fastgan.sn_power_normalize, (ws[:3], us[:3], vs[:3], dims[:3], 2, 1e-12),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    with pytest.raises(RuntimeError, match="same length"):
        torch.ops.fastgan.sn_power_normalize(ws, us[:2], vs, dims, 1, 1e-12)
    with pytest.raises(RuntimeError, match="n_iter"):
        torch.ops.fastgan.sn_power_normalize(ws, us, vs, dims, -1, 1e-12)
    with pytest.raises(RuntimeError, match="accumulation dtype"):
        torch.ops.fastgan.sn_power_normalize([ws[0], ws[1].float()], us[:2], vs[:2], dims[:2], 1, 1e-12)


# --------------------------------------------------------------------------------------------
# the fast weight access
def pair(seed=0):
    torch.manual_seed(seed)
    a = nn.Conv2d(3, 8, 3)
    b = copy.deepcopy(a)
    torch.manual_seed(seed + 1)
    torch_sn(a)
    torch.manual_seed(seed + 1)
    fg.spectral_norm(b)
    return a, b


def test_hooks_on_the_parametrization_still_run():
    """A hook on the parametrization modules sees every call torch's path makes; with one, the
    values are still torch's."""
    a, b = pair()
    seen = {"a": [], "b": []}
    for key, m in (("a", a), ("b", b)):
        m.parametrizations.weight[0].register_forward_hook(lambda mod, i, o, key=key: seen[key].append(o))
    for _ in range(3):
        wa, wb = a.weight, b.weight
        assert rel_err(wb, wa) <= 1e-5
    assert len(seen["a"]) == len(seen["b"]) == 3 and seen["b"][-1] is wb


def test_global_module_hooks_see_the_same_calls_as_with_torch():
    a, b = pair()
    calls = []
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    try:
        _ = a.weight
        n_torch = len(calls)
        calls.clear()
        _ = b.weight
    finally:
        handle.remove()
    assert n_torch == 2 and len(calls) == n_torch  # ParametrizationList and the spectral norm


def test_parametrize_cached_returns_one_tensor():
    _, b = pair()
    with parametrize.cached():
        w1, w2 = b.weight, b.weight
    assert w1 is w2
    u = b.parametrizations.weight[0]._u.clone()
    _ = b.weight  # outside the cache: iterates again
    assert not torch.equal(u, b.parametrizations.weight[0]._u)


def test_deepcopy_replica_reads_its_own_weights():
    """The property is on a class shared by the replica: it must resolve everything through self."""
    _, b = pair()
    c = copy.deepcopy(b)
    with torch.no_grad():
        c.parametrizations.weight.original.mul_(2)
    assert rel_err(c.weight, b.weight) <= 1e-5  # W / sigma is scale invariant...
    assert c.parametrizations.weight[0]._u is not b.parametrizations.weight[0]._u
    with torch.no_grad():
        c.parametrizations.weight.original.neg_()
    assert rel_err(c.weight, -b.weight) <= 1e-5  # ...its sign is not


def test_stacked_parametrization_on_top_runs_through_torch():
    """Another parametrization registered over fastgan's: its forward applies (slow path)."""

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    _, b = pair()
    b.eval()
    single = b.weight.detach().clone()
    parametrize.register_parametrization(b, "weight", Double())
    assert rel_err(b.weight, 2 * single) <= 1e-6


def test_torch_remove_parametrizations_removes_the_property():
    _, b = pair()
    cls = type(b)
    parametrize.remove_parametrizations(b, "weight")
    assert type(b) is nn.Conv2d and "weight" not in cls.__dict__
    assert isinstance(b.weight, nn.Parameter)


# --------------------------------------------------------------------------------------------
# apply_spectral_norm's cached grouping
def critic():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 1))


def twins():
    torch.manual_seed(0)
    a = critic()
    b = copy.deepcopy(a)
    torch.manual_seed(1)
    for m in a.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            torch_sn(m)
    torch.manual_seed(1)
    fg.apply_spectral_norm(b)
    return a, b


def sn_buffers(model):
    return [t for name, t in model.named_buffers() if name.endswith(("_u", "_v"))]


@pytest.mark.parametrize("change", ["n_power_iterations", "eps", "layer_eval", "to_double", "assign_buffers"])
def test_grouping_follows_changes_between_forwards(change):
    """The batched hook regroups its layers only when what it reads changed: a setting, a layer's
    mode, the dtype, a buffer replaced; each change must reach the next forward as it does torch's."""
    a, b = twins()
    x = torch.randn(2, 3, 8, 8)
    for step in range(3):
        if step == 1:
            for model in (a, b):
                sn = model[2].parametrizations.weight[0]
                if change == "n_power_iterations":
                    sn.n_power_iterations = 4
                elif change == "eps":
                    sn.eps = 0.5  # above |W v|: changes u, v
                elif change == "layer_eval":
                    model[2].eval()
                elif change == "to_double":
                    model.double()
                elif change == "assign_buffers":
                    sd = {k: v.clone() * (2 if k.endswith("_u") else 1) for k, v in model.state_dict().items()}
                    model.load_state_dict(sd, assign=True)
            x = x.to(next(a.parameters()).dtype)
        out_a, out_b = a(x), b(x)
        tol = 1e-5  # float32 history (step 0) in every case
        assert rel_err(out_b, out_a) <= tol, (change, step)
        for ta, tb in zip(sn_buffers(a), sn_buffers(b)):
            assert rel_err(tb, ta) <= tol, (change, step)


# --------------------------------------------------------------------------------------------
# the per-ISA copies of the loops
_ISA_CHECK = """
import torch, fastgan
from fastgan import reference
torch.manual_seed(0)
ws = [torch.randn(s, dtype=dt).requires_grad_() for s in [(7, 13), (64, 64, 3, 3), (600, 230)] for dt in (torch.float32, torch.float64)]
worst = 0.0
for dt in (torch.float32, torch.float64):
    w = [x for x in ws if x.dtype == dt]
    dims = [0] * len(w)
    us = [torch.nn.functional.normalize(torch.randn(x.shape[0], dtype=dt), dim=0) for x in w]
    vs = [torch.nn.functional.normalize(torch.randn(x[0].numel(), dtype=dt), dim=0) for x in w]
    s_ref, u_ref, v_ref = reference.sn_power([x.detach().double() for x in w], [u.double() for u in us],
                                             [v.double() for v in vs], dims, 2, 1e-12)
    out, _ = torch.ops.fastgan.sn_power_normalize(w, us, vs, dims, 2, 1e-12)
    g = [torch.randn(x.shape, dtype=dt) for x in w]
    grads = torch.autograd.grad(out, w, g)
    tol = 1e-5 if dt == torch.float32 else 1e-12
    for k in range(len(w)):
        wr = w[k].detach().double().requires_grad_()
        o = reference.sn_normalize(wr, u_ref[k], v_ref[k], 0)
        (gr,) = torch.autograd.grad(o, wr, g[k].double())
        for a, b in ((out[k], o), (grads[k], gr), (us[k], u_ref[k]), (vs[k], v_ref[k])):
            worst = max(worst, float((a.double() - b).norm() / b.norm()) / tol)
print(torch.backends.cpu.get_cpu_capability(), torch.ops.fastgan.sn_cpu_isa(), worst)
"""


@pytest.mark.parametrize("cap", [None, "avx2", "default"])
def test_each_isa_copy_against_reference(cap):
    """The loops run the ISA torch's kernels run (ATEN_CPU_CAPABILITY included) where the build has
    it, and every copy matches the float64 reference (worst error / tolerance < 1)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if cap:
        env["ATEN_CPU_CAPABILITY"] = cap
    torch_isa, ours, worst = subprocess.run([sys.executable, "-c", _ISA_CHECK], env=env, capture_output=True,
                                            text=True, check=True).stdout.split()
    assert float(worst) < 1.0, (cap, ours, worst)
    check_isa_choice(torch_isa, ours)
