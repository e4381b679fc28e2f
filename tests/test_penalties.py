"""The regularizers against independent eager code (PyTorch-GAN / CTGAN / StyleGAN style):
the same loss and the same critic parameter gradients, for every backend."""
import pytest
import torch
from torch import nn

import fastgan as fg
from conftest import available_backends, device_for, rel_err

BACKENDS = available_backends(include_reference=True)
# the DRAGAN tests draw with a CPU generator: only backends that run on CPU tensors here
CPU_BACKENDS = [b for b in BACKENDS if device_for(b) == "cpu"]
TOL = 1e-10  # float64 throughout


@pytest.fixture(autouse=True)
def _tiny_triton_blocks(request):
    if "triton" in request.node.name:
        request.getfixturevalue("small_triton_blocks")


def conv_critic():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 1),
    ).double()


def mlp_critic(d=2):
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).double()


CRITICS = {"conv": (conv_critic, (6, 3, 8, 8)), "mlp": (mlp_critic, (10, 2))}


def data(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def grads_of(D, loss):
    # the last layer's bias does not change dD/dx: it gets no gradient from a penalty
    params = list(D.parameters())
    gs = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


def assert_same(D, ours, theirs):
    assert rel_err(ours, theirs) < TOL, (ours, theirs)
    for a, b in zip(grads_of(D, ours), grads_of(D, theirs)):
        assert rel_err(a, b) < TOL


# --- independent eager implementations, the way public GAN code writes them ------------------
def eager_grad(D, x):
    x = x.detach().requires_grad_(True)
    out = D(x)
    return torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True, retain_graph=True)[0]


def eager_gp(D, real, fake, alpha, one_sided=False):
    a = alpha.view(-1, *([1] * (real.dim() - 1)))
    g = eager_grad(D, a * real + (1 - a) * fake)
    n = g.view(g.size(0), -1).norm(2, dim=1)
    return 10 * ((torch.clamp(n - 1, min=0) if one_sided else (n - 1)) ** 2).mean()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("critic", CRITICS)
@pytest.mark.parametrize("one_sided", [False, True])
def test_gradient_penalty(backend, critic, one_sided):
    make, shape = CRITICS[critic]
    dev = device_for(backend)  # every backend on the device it runs on
    D = make().to(dev)
    real, fake = (t.to(dev) for t in data(shape))
    alpha = torch.rand(shape[0], dtype=torch.float64).to(dev)
    with fg.use_backend(backend):
        if one_sided:
            ours = fg.lipschitz_penalty(D, real, fake, alpha=alpha)
        else:
            ours = fg.gradient_penalty(D, real, fake, alpha=alpha)
    assert_same(D, ours, eager_gp(D, real, fake, alpha, one_sided))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_penalty_pac(backend):
    """CTGAN's calc_gradient_penalty: one alpha and one norm per pack of `pac` samples."""
    pac, b, d = 3, 12, 5
    dev = device_for(backend)
    D_inner = mlp_critic(pac * d).to(dev)
    D = lambda x: D_inner(x.view(-1, pac * d))  # noqa: E731  (CTGAN's critic sees packed rows)
    real, fake = (t.to(dev) for t in data((b, d)))
    alpha_g = torch.rand(b // pac, dtype=torch.float64).to(dev)
    alpha = alpha_g.view(-1, 1, 1).repeat(1, pac, d).view(-1, d)
    interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = D(interp)
    g = torch.autograd.grad(out, interp, torch.ones_like(out), create_graph=True)[0]
    theirs = ((g.view(-1, pac * d).norm(2, dim=1) - 1) ** 2).mean() * 10
    with fg.use_backend(backend):
        ours, norms = fg.gradient_penalty(D, real, fake, alpha=alpha_g, pac=pac, return_norms=True)
    assert norms.shape == (b // pac,)
    assert_same(D_inner, ours, theirs)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("critic", CRITICS)
def test_dragan_gaussian(backend, critic):
    make, shape = CRITICS[critic]
    D = make()
    real, _ = data(shape)
    gen = torch.Generator().manual_seed(5)
    with fg.use_backend(backend):
        ours = fg.dragan_penalty(D, real, generator=gen)
    # seed 000: interpolates = X + sqrt_c * randn(X.size()), c = 10
    delta = 10 ** 0.5 * torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    g = eager_grad(D, real + delta).view(shape[0], -1)
    assert_same(D, ours, 10 * ((g.norm(2, dim=1) - 1) ** 2).mean())
    with fg.use_backend(backend):  # explicit noise
        assert_same(D, fg.dragan_penalty(D, real, noise=delta), 10 * ((g.norm(2, dim=1) - 1) ** 2).mean())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_dragan_uniform(backend):
    """The DRAGAN authors' code: x_p = x + 0.5 x.std() U[0,1); x̂ = x + alpha (x_p - x)."""
    D = conv_critic()
    real, _ = data((6, 3, 8, 8))
    with fg.use_backend(backend):
        ours = fg.dragan_penalty(D, real, perturbation="uniform", generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    x_p = real + 0.5 * real.std() * torch.rand(real.shape, generator=gen, dtype=torch.float64)
    alpha = torch.rand(6, 1, 1, 1, generator=gen, dtype=torch.float64)
    g = eager_grad(D, real + alpha * (x_p - real)).view(6, -1)
    assert_same(D, ours, 10 * ((g.norm(2, dim=1) - 1) ** 2).mean())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("critic", CRITICS)
def test_wgan_div(backend, critic):
    make, shape = CRITICS[critic]
    dev = device_for(backend)
    D = make().to(dev)
    real, fake = (t.to(dev) for t in data(shape))
    with fg.use_backend(backend):
        ours, (nr, nf) = fg.wgan_div_penalty(D, real, fake, return_norms=True)
    # seed 002 / PyTorch-GAN wgan_div: k = 2, p = 6
    gr = eager_grad(D, real).view(shape[0], -1).pow(2).sum(1) ** 3
    gf = eager_grad(D, fake).view(shape[0], -1).pow(2).sum(1) ** 3
    assert_same(D, ours, torch.mean(gr + gf) * 2 / 2)
    assert rel_err(nr, eager_grad(D, real).view(shape[0], -1).norm(dim=1)) < TOL
    assert rel_err(nf, eager_grad(D, fake).view(shape[0], -1).norm(dim=1)) < TOL


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["r1", "r2"])
def test_r1_r2(backend, which):
    dev = device_for(backend)
    D = conv_critic().to(dev)
    real, fake = (t.to(dev) for t in data((6, 3, 8, 8)))
    x = real if which == "r1" else fake
    with fg.use_backend(backend):
        ours = (fg.r1_penalty if which == "r1" else fg.r2_penalty)(D, x, gamma=7.0)
    # StyleGAN2: r1_penalty = r1_grads.square().sum([1,2,3]); loss = r1_penalty * (gamma / 2)
    theirs = (eager_grad(D, x).square().sum([1, 2, 3]) * (7.0 / 2)).mean()
    assert_same(D, ours, theirs)


def test_critic_with_labels_and_generator_reproducibility():
    """D may be any callable (a lambda adding labels); a generator makes the draw reproducible."""
    D_inner = mlp_critic(3)
    labels = torch.arange(10, dtype=torch.float64).view(10, 1) / 10
    D = lambda x: D_inner(torch.cat([x, labels], 1))  # noqa: E731
    real, fake = data((10, 2))
    a = fg.gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(9))
    b = fg.gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(9))
    c = fg.gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(10))
    assert a == b and a != c
    alpha = torch.rand(10, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert_same(D_inner, a, eager_gp(D, real, fake, alpha))


def test_return_norms_and_dtype_float32():
    D = conv_critic().float()
    real, fake = (t.float() for t in data((6, 3, 8, 8)))
    loss, norms = fg.gradient_penalty(D, real, fake, return_norms=True)
    assert loss.dtype == torch.float32 and loss.dim() == 0 and norms.shape == (6,)
    assert not norms.requires_grad and loss.requires_grad


def test_penalty_ignores_generator_graph():
    """The penalty is a critic term: it does not backpropagate into G through `fake`."""
    D = mlp_critic()
    w = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    real, z = data((8, 2))
    fake = z @ w
    loss = fg.gradient_penalty(D, real, fake)
    assert torch.autograd.grad(loss, w, allow_unused=True)[0] is None


def test_whole_gp_step_compiles():
    """torch.compile(fullgraph=True) of a whole WGAN-GP critic step (loss and parameter gradients,
    i.e. double backward inside the graph)."""
    import torch._dynamo

    D = mlp_critic()
    params = list(D.parameters())
    real, fake = data((16, 2))
    alpha = torch.rand(16, dtype=torch.float64)

    def step(real, fake, alpha):
        loss = D(fake).mean() - D(real).mean() + fg.gradient_penalty(D, real, fake, alpha=alpha)
        return (loss.detach(),) + torch.autograd.grad(loss, params)

    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        loss, *grads = torch.compile(step, fullgraph=True, backend="aot_eager")(real, fake, alpha)
    theirs = D(fake).mean() - D(real).mean() + eager_gp(D, real, fake, alpha)
    assert rel_err(loss, theirs) < TOL
    for a, b in zip(grads, grads_of(D, theirs)):
        assert rel_err(a, b) < TOL


# --- bad input --------------------------------------------------------------------------------
def test_bad_inputs():
    D = mlp_critic()
    real, fake = data((6, 2))
    with pytest.raises(ValueError, match="real and fake must have the same shape"):
        fg.gradient_penalty(D, real, fake[:5])
    with pytest.raises(ValueError, match="real and fake must have the same dtype"):
        fg.gradient_penalty(D, real, fake.float())
    with pytest.raises(ValueError, match="real and fake must have the same device"):
        fg.gradient_penalty(D, real, fake.to("meta"))
    with pytest.raises(TypeError, match="real must be a floating-point"):
        fg.gradient_penalty(D, real.long(), fake.long())
    with pytest.raises(ValueError, match="real has an empty batch"):
        fg.gradient_penalty(D, real[:0], fake[:0])
    with pytest.raises(ValueError, match="pac=4 does not divide the batch size 6"):
        fg.gradient_penalty(D, real, fake, pac=4)
    with pytest.raises(ValueError, match="pac must be a positive int"):
        fg.gradient_penalty(D, real, fake, pac=0)
    with pytest.raises(ValueError, match=r"alpha must have shape \(6,\)"):
        fg.gradient_penalty(D, real, fake, alpha=torch.rand(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="noise must have the shape of real"):
        fg.dragan_penalty(D, real, noise=torch.randn(6, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="perturbation must be"):
        fg.dragan_penalty(D, real, perturbation="laplace")
    with pytest.raises(ValueError, match="c must be > 0"):
        fg.dragan_penalty(D, real, c=0.0)
    with pytest.raises(ValueError, match="p must be > 0"):
        fg.wgan_div_penalty(D, real, fake, p=-1.0)
    with pytest.raises(TypeError, match="fake must be a torch.Tensor"):
        fg.r2_penalty(D, [1.0])


def test_critic_independent_of_input():
    w = nn.Parameter(torch.ones(1, dtype=torch.float64))
    real, fake = data((4, 2))
    with pytest.raises(ValueError, match="does not depend on its input"):
        fg.gradient_penalty(lambda x: w.expand(x.shape[0]) * 2, real, fake)
    with pytest.raises(ValueError, match="does not depend on its input"):
        fg.r1_penalty(lambda x: torch.zeros(x.shape[0], dtype=torch.float64), real)
    with pytest.raises(TypeError, match="D must return a tensor"):
        fg.r1_penalty(lambda x: [x.sum()], real)


def test_nan_propagates_to_loss():
    D = mlp_critic()
    real, fake = data((4, 2))
    real[1, 0] = float("nan")
    assert torch.isnan(fg.gradient_penalty(D, real, fake))
    assert torch.isnan(fg.r1_penalty(D, real))
