"""Speed of spectral normalization: torch's parametrization vs fastgan per layer vs batched.

    python -m pytest benchmarks/test_bench_spectral_norm.py --benchmark-only \
        --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

Critics (batch 64, training mode, float32): a DCGAN critic on 3x32x32 (4 SN layers) and an
SNGAN-ResNet-style critic on 3x32x32 (optimized block + 3 residual blocks + linear: 11 SN layers,
64 channels). Variants: ``none`` (no spectral norm), ``torch``
(torch.nn.utils.parametrizations.spectral_norm on every layer), ``fg_layer`` (fg.spectral_norm on
every layer), ``fg_batched`` (fg.apply_spectral_norm).

Groups per critic:
* ``sn only``: exactly the work spectral norm adds to a training forward (every layer's weight
  computed: power iteration + W / sigma, with autograd recording), without the convolutions;
* ``forward``: critic forward; SN overhead = forward(variant) - forward(none);
* ``step``: forward + backward of D(x).mean() (parameter gradients).
"""
import pytest
import torch
from conftest import THREADS
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_sn

import fastgan as fg
from fastgan._bench_models import SNGANResNetCritic
from fastgan import spectral

VARIANTS = ["none", "torch", "fg_layer", "fg_batched"]
BATCH = 64


def dcgan_critic():
    return nn.Sequential(
        nn.Conv2d(3, 64, 4, 2, 1), nn.LeakyReLU(0.1),
        nn.Conv2d(64, 128, 4, 2, 1), nn.LeakyReLU(0.1),
        nn.Conv2d(128, 256, 4, 2, 1), nn.LeakyReLU(0.1),
        nn.Conv2d(256, 1, 4, 1, 0), nn.Flatten())


CRITICS = {"dcgan": dcgan_critic, "sngan_resnet": SNGANResNetCritic}
SN_TYPES = (nn.Linear, nn.Conv2d)


def build(critic, variant):
    torch.manual_seed(0)
    D = CRITICS[critic]()
    if variant == "torch":
        for m in list(D.modules()):
            if isinstance(m, SN_TYPES):
                torch_sn(m)
    elif variant == "fg_layer":
        for m in list(D.modules()):
            if isinstance(m, SN_TYPES):
                fg.spectral_norm(m)
    elif variant == "fg_batched":
        fg.apply_spectral_norm(D)
    return D.train()


def sn_layers(D):
    return [m for m in D.modules() if isinstance(m, SN_TYPES)]


def sn_only(D, variant):
    """The spectral-norm part of one training forward: every layer's weight, with autograd."""
    layers = sn_layers(D)
    hook = next((h for h in D._forward_pre_hooks.values() if isinstance(h, spectral._BatchedPowerIteration)), None)

    def run():
        if hook is not None:
            hook(D, ())
        ws = [m.weight for m in layers]
        if hook is not None:
            hook.clear(D, (), None)
        return ws

    return run


def _bench(benchmark, group, fn, D, critic, variant):
    benchmark.group = f"spectral_norm {group} {critic}"
    benchmark.extra_info.update(threads=THREADS, sn_layers=len(sn_layers(D)) if variant != "none" else 0,
                                batch=BATCH)
    benchmark.pedantic(fn, rounds=40, iterations=1, warmup_rounds=5)


@pytest.mark.parametrize("critic", list(CRITICS))
@pytest.mark.parametrize("variant", VARIANTS[1:])
def test_sn_only(benchmark, critic, variant):
    D = build(critic, variant)
    _bench(benchmark, "sn only", sn_only(D, variant), D, critic, variant)


@pytest.mark.parametrize("critic", list(CRITICS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward(benchmark, critic, variant):
    D = build(critic, variant)
    x = torch.randn(BATCH, 3, 32, 32)
    _bench(benchmark, "forward", lambda: D(x), D, critic, variant)


@pytest.mark.parametrize("critic", list(CRITICS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_step(benchmark, critic, variant):
    D = build(critic, variant)
    x = torch.randn(BATCH, 3, 32, 32)

    def step():
        D.zero_grad(set_to_none=True)
        D(x).mean().backward()

    _bench(benchmark, "step", step, D, critic, variant)
