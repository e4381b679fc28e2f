"""Weight clipping on critic parameter lists: per-tensor loop vs foreach vs fastgan.

    python -m pytest benchmarks/test_bench_clip.py --benchmark-only --benchmark-columns=median,iqr,rounds

Groups (one per parameter list, float32): a DCGAN critic (64x64, ndf=64: 11 tensors, 2.8M
weights), the DCGAN-64 critic of issue 13 (Conv 3->64->128->256 with bias, Linear 4096->1: 8
tensors, 663k weights), an SNGAN-ResNet critic (128 channels, 10 residual blocks: 62 tensors, 3.1M weights),
1000 small tensors (16..512 elements), 5000 tiny ones (1..32) and one huge tensor (4096x4096). Each group times the two eager baselines (the public
`p.data.clamp_` loop and two torch._foreach passes) and every fastgan backend available for the
tensors' device, through the public fg.clip_weights_ (validation included).
"""
import pytest
import torch

import fastgan as fg
from fastgan import reference


def dcgan_critic():
    shapes = [(64, 3, 4, 4)]  # conv, no bias
    for c_in, c_out in [(64, 128), (128, 256), (256, 512)]:
        shapes += [(c_out, c_in, 4, 4), (c_out,), (c_out,)]  # conv + BatchNorm weight, bias
    return shapes + [(1, 512, 4, 4)]


def dcgan64_critic():
    """The issue 13 list: Conv 3->64->128->256 (4x4, stride 2, with bias) and Linear 4096->1."""
    shapes = []
    for c_in, c_out in [(3, 64), (64, 128), (128, 256)]:
        shapes += [(c_out, c_in, 4, 4), (c_out,)]
    return shapes + [(1, 4096), (1,)]


def sngan_resnet_critic(blocks=10, ch=128):
    shapes = []
    for b in range(blocks):
        c_in = 3 if b == 0 else ch
        shapes += [(ch, c_in, 3, 3), (ch,), (ch, ch, 3, 3), (ch,), (ch, c_in, 1, 1), (ch,)]
    return shapes + [(1, ch), (1,)]


def small_tensors(n=1000):
    g = torch.Generator().manual_seed(0)
    return [(int(s),) for s in torch.randint(16, 513, (n,), generator=g)]


def tiny_tensors(n=5000):
    """Many tiny tensors (1..32 elements): per-tensor overhead is everything."""
    g = torch.Generator().manual_seed(2)
    return [(int(s),) for s in torch.randint(1, 33, (n,), generator=g)]


LISTS = {"dcgan": dcgan_critic(), "dcgan64_bias": dcgan64_critic(), "sngan_resnet": sngan_resnet_critic(),
         "small_x1000": small_tensors(), "tiny_x5000": tiny_tensors(),
         "huge_1x16M": [(4096, 4096)]}  # one Linear 4096 -> 4096: 64 MiB, beyond L2
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def impls(device):
    out = {"loop": reference.clip_weights_loop_, "foreach": reference.clip_weights_foreach_}
    for name, info in fg.backends().items():
        if name == "reference" or not info["available"] or (name in ("cpu", "cuda") and name != device):
            continue
        if name == "triton" and device == "cpu":
            continue  # the interpreter is a test vehicle, not a contender
        out[f"fastgan-{name}"] = lambda ts, lo, hi, name=name: fg.clip_weights_(ts, (lo, hi), backend=name)
    return out


CASES = [(lst, dev, impl) for lst in LISTS for dev in DEVICES for impl in impls(dev)]


@pytest.mark.parametrize("lst,device,impl", CASES, ids=[f"{a}-{b}-{c}" for a, b, c in CASES])
def test_clip(benchmark, lst, device, impl):
    g = torch.Generator().manual_seed(1)
    params = [(torch.randn(s, generator=g) * 0.02).to(device) for s in LISTS[lst]]
    fn = impls(device)[impl]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        fn(params, -0.01, 0.01)
        sync()

    benchmark.group = f"clip {lst} ({len(params)} tensors, {sum(p.numel() for p in params)} weights) {device}"
    benchmark.pedantic(run, warmup_rounds=20, rounds=300, iterations=1)
    assert all(float(p.abs().max()) <= 0.01 for p in params)
