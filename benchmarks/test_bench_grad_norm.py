"""Speed of the gradient-norm penalty: eager code vs every available fastgan backend.

    pytest benchmarks/test_bench_grad_norm.py --benchmark-only --benchmark-group-by=group

Forward+backward of the primitive on (B, N) gradients, and a whole WGAN-GP critic step
(forward, penalty with double backward, parameter gradients) for a DCGAN-style 3x32x32 critic
and a 2-D MLP critic. The Triton interpreter is far too slow to time on CPU; it is skipped there.
"""
import pytest
import torch

import fastgan as fg
from fastgan._bench_models import dcgan_critic, mlp_critic
from conftest import THREADS

SHAPES = [(64, 3 * 64 * 64), (256, 3 * 32 * 32), (2, 3 * 512 * 512)]


def timed_backends():
    st = fg.backends()
    out = ["cpu"] if st["cpu"]["available"] else []
    if torch.cuda.is_available():
        out += [b for b in ("cuda", "triton") if st[b]["available"]]
    return out


def device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def eager_penalty(g):
    """What public WGAN-GP code writes."""
    return ((g.view(g.size(0), -1).norm(2, dim=1) - 1) ** 2).mean()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("impl", ["eager"] + timed_backends())
def test_primitive_fwd_bwd(benchmark, shape, impl):
    g = torch.randn(shape, device=device(), requires_grad=True)
    fn = eager_penalty if impl == "eager" else (lambda x: fg.grad_norm_penalty(x, backend=impl))

    def run():
        out = torch.autograd.grad(fn(g), g)[0]
        if g.is_cuda:
            torch.cuda.synchronize()
        return out

    benchmark.group = f"grad_norm_penalty fwd+bwd {shape[0]}x{shape[1]}"
    benchmark.extra_info.update(threads=THREADS, bytes=3 * g.numel() * g.element_size())
    benchmark.pedantic(run, rounds=30, iterations=3, warmup_rounds=3)


CRITICS = {"dcgan32": (dcgan_critic, (64, 3, 32, 32)), "mlp2d": (lambda: mlp_critic(2), (256, 2))}


def eager_gp_step(D, real, fake, alpha):
    a = alpha.view(-1, *([1] * (real.dim() - 1)))
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    out = D(x)
    g = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)[0]
    return D(fake).mean() - D(real).mean() + 10 * eager_penalty(g)


@pytest.mark.parametrize("critic", CRITICS)
@pytest.mark.parametrize("impl", ["eager"] + timed_backends())
def test_wgan_gp_critic_step(benchmark, critic, impl):
    torch.manual_seed(0)
    make, shape = CRITICS[critic]
    D = make().to(device())
    real, fake = torch.randn(shape, device=device()), torch.randn(shape, device=device())
    alpha = torch.rand(shape[0], device=device())

    def step():
        if impl == "eager":
            loss = eager_gp_step(D, real, fake, alpha)
        else:
            with fg.use_backend(impl):
                loss = D(fake).mean() - D(real).mean() + fg.gradient_penalty(D, real, fake, alpha=alpha)
        grads = torch.autograd.grad(loss, list(D.parameters()), allow_unused=True)
        if real.is_cuda:
            torch.cuda.synchronize()
        return grads

    benchmark.group = f"WGAN-GP critic step {critic} batch {shape[0]}"
    benchmark.extra_info.update(threads=THREADS)
    benchmark.pedantic(step, rounds=15, iterations=1, warmup_rounds=2)
