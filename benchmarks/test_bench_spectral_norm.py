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
import torch.nn.functional as F
from conftest import THREADS
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_sn

import fastgan as fg
from fastgan import spectral

VARIANTS = ["none", "torch", "fg_layer", "fg_batched"]
BATCH = 64


def dcgan_critic():
    return nn.Sequential(
        nn.Conv2d(3, 64, 4, 2, 1), nn.LeakyReLU(0.1),
        nn.Conv2d(64, 128, 4, 2, 1), nn.LeakyReLU(0.1),
        nn.Conv2d(128, 256, 4, 2, 1), nn.LeakyReLU(0.1),
        nn.Conv2d(256, 1, 4, 1, 0), nn.Flatten())


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, down, first=False):
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.sc = nn.Conv2d(c_in, c_out, 1) if (down or c_in != c_out) else None
        self.down, self.first = down, first

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = self.c2(F.relu(self.c1(h)))
        s = x
        if self.first:
            s = self.sc(F.avg_pool2d(s, 2))
        elif self.sc is not None:
            s = self.sc(s)
        if self.down:
            h = F.avg_pool2d(h, 2)
            if not self.first:
                s = F.avg_pool2d(s, 2)
        return h + s


class SNGANResNetCritic(nn.Module):
    def __init__(self, ch=64):
        super().__init__()
        self.blocks = nn.Sequential(ResBlock(3, ch, True, first=True), ResBlock(ch, ch, True),
                                    ResBlock(ch, ch, False), ResBlock(ch, ch, False))
        self.fc = nn.Linear(ch, 1)

    def forward(self, x):
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.fc(h)


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
