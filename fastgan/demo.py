r"""``python -m fastgan demo``: small GANs trained on CPU with every regularizer fastgan offers.

The toy mixtures are those of the WGAN-GP paper (8 Gaussians on a circle, 25 Gaussians on a
grid, a Swiss roll), generated in code; ``digits`` is scikit-learn's bundled 8x8 digits set.
:func:`train` is the training loop a user would write; the fastgan calls in it are marked and it
is the README's worked example ("Training a GAN with fastgan").

Metrics (2,500 generated samples). Mixtures: a generated sample is *high quality* when it lies
within 3σ (Euclidean distance) of some mode's center; a mode is *covered* when at least
``MIN_MODE_SAMPLES`` = 20 high-quality samples belong to it (the 3σ rule of the mode-collapse
literature: Unrolled GAN, VEEGAN, PacGAN; the count of 20 is ours). All 2-D sets also get
nearest-neighbour distances generated->data (quality) and data->generated (coverage) against
2,500 fresh data samples. Digits (classifier-free proxy): the same two distances between 1,500
generated digits and the 297 held-out digits, divided by those of the 1,500 training digits
(1.0 is as good as real data, higher is worse). Every run also reports the median seconds per
critic step, so the cost of each regularizer is visible.
"""
import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from typing import Callable, Optional

import torch
from torch import nn

import fastgan as fg

DATASETS = ("8gaussians", "25gaussians", "swissroll", "digits")
N_EVAL = 2500
MIN_MODE_SAMPLES = 20
# Default training budget in critic updates, the same for every method: a method with n_critic
# critic steps per generator step gets CRITIC_STEPS // n_critic generator steps (default_steps).
# With a budget in generator steps instead, the 1-critic methods (R1, DRAGAN, instance noise)
# trained their critic 5x less than WGAN-GP's and stopped halfway: R1 on seed 1 covered 6 of 8
# modes at 1,000 generator steps, 8 at 2,000 and later (benchmarks/results/demo_sweep/exploration.md).
CRITIC_STEPS = {"8gaussians": 5000, "25gaussians": 2500, "swissroll": 2500, "digits": 1500}
MODE_STD = 0.05  # σ of each mixture component; radius-2 circle, grid spacing 2
Z_DIM_2D = 8  # latent size for the 2-D sets (2 in the WGAN-GP paper: slower to learn in short runs)


# --------------------------------------------------------------------------------------------
# the methods: loss family + regularizer + optimizer, each from its paper or the paper's reference
# code (``source``). Common to all, for a CPU budget: 3-hidden-layer ReLU MLPs 64 wide (the WGAN-GP
# toy code: 512), 8-D latent (there: 2), batch 256 (as there), CRITIC_STEPS critic updates (there:
# 100,000 generator steps) and Adam/RMSprop learning rates raised to 1e-3 / 5e-4 (there: 1e-4 /
# 5e-5) so that short runs get somewhere (not for the non-saturating GAN: see there). Everything else (loss, penalty and its constants, critic steps, optimizer and
# its betas) is the paper's.
@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    loss: str                                   # key of fastgan.losses.LOSSES
    penalty: Optional[Callable] = None          # penalty(D, real, fake, d_real, d_fake) -> scalar, added
                                                # to the critic loss (d_real, d_fake: the loss's own scores)
    from_scores: bool = False                   # the penalty uses the loss's forward (inputs require grad)
    n_critic: int = 1                           # critic steps per generator step
    clip: Optional[float] = None                # WGAN weight clipping bound c
    spectral_norm: bool = False                 # spectral norm on every critic layer (SNGAN)
    noise: float = 0.0                          # initial instance-noise std, annealed linearly to 0
    optimizer: str = "adam"                     # "adam" | "rmsprop"
    lr: float = 1e-3
    betas: tuple = (0.5, 0.9)
    source: str = ""                            # where the setup comes from, and what we changed

    def optimizers(self, D, G):
        if self.optimizer == "rmsprop":
            return torch.optim.RMSprop(D.parameters(), lr=self.lr), torch.optim.RMSprop(G.parameters(), lr=self.lr)
        return (torch.optim.Adam(D.parameters(), lr=self.lr, betas=self.betas),
                torch.optim.Adam(G.parameters(), lr=self.lr, betas=self.betas))


# penalties are looked up on fastgan at call time
METHODS = {m.name: m for m in (
    Method("vanilla", "minimax", betas=(0.5, 0.999),
           source="Goodfellow et al. 2014, Alg. 1 (minimax loss, k=1 critic step); Adam betas (0.5, 0.999) "
                  "of DCGAN (Radford et al. 2016; lr 2e-4 there)"),
    # The non-saturating GAN keeps DCGAN's published learning rate (not raised like the others): at
    # 1e-3 it hopped between covering the ring and losing modes (seed 3: 8, 6, 5 modes at 1,000,
    # 1,500, 2,000 steps), an outcome left to chance; at 2e-4 it covers at most one mode (EXPECT below).
    Method("nonsaturating", "nonsaturating", lr=2e-4, betas=(0.5, 0.999),
           source="Goodfellow et al. 2014, sec. 3 (G maximizes log D(G(z))), k=1; Adam lr 2e-4, betas "
                  "(0.5, 0.999) of DCGAN (Radford et al. 2016), the standard reference implementation"),
    Method("wgan-clip", "wasserstein", n_critic=5, clip=0.01, optimizer="rmsprop", lr=5e-4,
           source="Arjovsky et al. 2017, Alg. 1: c=0.01, n_critic=5, RMSProp (lr 5e-5 there)"),
    Method("wgan-gp", "wasserstein", lambda D, r, f, dr, df: fg.gradient_penalty(D, r, f, weight=0.1), n_critic=5,
           source="Gulrajani et al. 2017, reference code gan_toy.py: lambda=0.1 on the toy sets ('smaller "
                  "lambda seems to help for toy tasks'; 10 for images), n_critic=5, Adam betas (0.5, 0.9) "
                  "(lr 1e-4 there)"),
    Method("lp", "wasserstein", lambda D, r, f, dr, df: fg.lipschitz_penalty(D, r, f, weight=10.0), n_critic=5,
           source="Petzka et al. 2018: one-sided penalty, lambda=10, otherwise WGAN-GP's training setup"),
    Method("dragan", "nonsaturating", lambda D, r, f, dr, df: fg.dragan_penalty(D, r, weight=1.0, perturbation="uniform"),
           betas=(0.5, 0.999),
           source="Kodali et al. 2017 and the authors' reference code: k=1, perturbation x + 0.5 std(x) U[0,1) "
                  "(the paper's N(0, 10 I) is far wider than this data), non-saturating loss, 1 critic step, "
                  "Adam beta1 0.5; lambda=1 instead of the paper's 10 (with 10 the generator collapsed to "
                  "0-1 modes on seeds 0 and 1: on toy sets a small lambda helps, as WGAN-GP's toy code says)"),
    # WGAN-div and R1 take the input gradient at the samples the loss scores: from that same forward
    Method("wgan-div", "wasserstein", lambda D, r, f, dr, df: fg.wgan_div_penalty(
        real=r, fake=f, scores=(dr, df), k=2.0, p=6.0), n_critic=5, from_scores=True,
           betas=(0.5, 0.999),
           source="Wu et al. 2018: k=2, p=6, n_critic=5, Adam betas (0.5, 0.999) (lr 2e-4 there)"),
    Method("r1", "nonsaturating", lambda D, r, f, dr, df: fg.r1_penalty(real=r, scores=dr, gamma=1.0),
           betas=(0.5, 0.999), from_scores=True,
           source="Mescheder et al. 2018: R1 on real data with the non-saturating loss, 1 critic step; "
                  "gamma=1 (10 for their images; the penalty scales with the data's scale)"),
    Method("sngan", "hinge", spectral_norm=True, n_critic=5, betas=(0.5, 0.9),
           source="Miyato et al. 2018: spectral norm on every critic layer, hinge loss, Table 1 setting D "
                  "(n_dis=5, Adam lr 1e-3, betas (0.5, 0.9)); setting C (n_dis=1) collapsed on seed 0"),
    # The minimax loss, the objective instance noise was proposed for: Arjovsky & Bottou 2017 (sec. 4)
    # add noise to the discriminator's inputs so that the original GAN's divergence is continuous and
    # its generator gradient does not vanish. With the non-saturating loss instead (this demo's setup
    # until session 5) the end of training, where the annealed noise is near 0, was a plain
    # non-saturating GAN at lr 1e-3, which hops between modes: 4-6 modes on 2 of 5 seeds under avx2
    # (benchmarks/results/demo_sweep/exploration.md).
    Method("instance-noise", "minimax", noise=0.5, betas=(0.5, 0.999),
           source="Arjovsky & Bottou 2017, sec. 4 (noise on the discriminator's inputs for the original "
                  "minimax GAN) / Sonderby et al. 2016 (instance noise, std annealed to 0): Gaussian "
                  "noise on the critic's real and fake inputs, std annealed linearly from 0.5 to 0; "
                  "minimax loss, 1 critic step, Adam betas (0.5, 0.999) of DCGAN"),
)}

# Outcome each method must show on 8 Gaussians at the default steps, over 5 seeds and on every CPU
# kernel set (benchmarks/demo_sweep.py checks it, tests/test_demo.py asserts it on a few seeds):
# "learns" = >= MIN_MODES_LEARNED of 8 modes covered in >= MIN_SEEDS of 5 seeds, "fails" = fewer
# modes in >= MIN_SEEDS seeds. A failure is expected only where a paper reports it.
MIN_MODES_LEARNED = 7
MIN_SEEDS = 4
EXPECT = {name: "learns" for name in METHODS}
# WGAN-GP paper, sec. 3 and Fig. 1: critics under weight clipping learn overly simple functions and
# miss the data's modes; here the generator never settles on a mode (high-quality share ~0.03).
EXPECT["wgan-clip"] = "fails"
# Unregularized GANs miss the ring's modes: Metz et al. 2016 (Unrolled GAN), Fig. 1 (the GAN sits on
# one mode at a time and rotates between them) and Srivastava et al. 2017 (VEEGAN), Table 1 (GAN:
# 1 of 8 ring modes). The non-saturating GAN with DCGAN's setup covers 0-1 modes here, mostly with
# samples spread between the modes (not converged) rather than gathered on one.
EXPECT["nonsaturating"] = "fails"


# ---8<--- README: Training a GAN with fastgan ---8<---
def train(G, D, sample_real, method, *, steps, batch_size, z_dim, log=None):
    """Train generator G against critic D on batches ``sample_real(batch_size)`` with one method."""
    d_loss_fn, g_loss_fn = fg.losses.LOSSES[method.loss]            # fastgan: stable GAN losses
    if method.spectral_norm:
        for layer in D.modules():
            if isinstance(layer, torch.nn.Linear):
                fg.spectral_norm(layer)                             # fastgan: SNGAN
    opt_d, opt_g = method.optimizers(D, G)
    for step in range(steps):
        t0 = time.perf_counter()
        D.requires_grad_(True)
        for _ in range(method.n_critic):
            real = sample_real(batch_size)
            fake = G(torch.randn(batch_size, z_dim)).detach()
            if method.noise:
                std = fg.anneal_std(step, steps, start=method.noise)  # fastgan: instance noise
                real, fake = fg.instance_noise(real, std), fg.instance_noise(fake, std)
            if method.from_scores:  # the penalty reuses these forwards: no extra critic call
                real, fake = real.requires_grad_(), fake.requires_grad_()
            d_real, d_fake = D(real), D(fake)
            d_loss = d_loss_fn(d_real, d_fake)
            if method.penalty:                                      # fastgan: gradient penalty
                d_loss = d_loss + method.penalty(D, real, fake, d_real, d_fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            if method.clip:
                fg.clip_weights_(D.parameters(), method.clip)       # fastgan: WGAN weight clipping
        t1 = time.perf_counter()
        D.requires_grad_(False)  # the generator step needs no gradients for D's weights
        g_loss = g_loss_fn(D(G(torch.randn(batch_size, z_dim))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if log:
            log(step, d_loss=d_loss.item(), g_loss=g_loss.item(), critic_s=(t1 - t0) / method.n_critic)
# ---8<--- end of README example ---8<---


# --------------------------------------------------------------------------------------------
# data
def mixture_centers(dataset):
    """(K, 2) centers of a toy mixture: 8 on a radius-2 circle, or the 5x5 grid {-4,-2,0,2,4}^2."""
    if dataset == "8gaussians":
        a = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return torch.stack([2 * a.cos(), 2 * a.sin()], 1).float()
    if dataset == "25gaussians":
        g = torch.arange(-4.0, 5.0, 2.0)
        return torch.cartesian_prod(g, g)
    return None


def make_sampler(dataset, generator=None):
    """``sample(n) -> (n, dim)`` float32 tensor of real data (random batches for digits)."""
    centers = mixture_centers(dataset)
    if centers is not None:
        def sample(n):
            idx = torch.randint(len(centers), (n,), generator=generator)
            return centers[idx] + MODE_STD * torch.randn(n, 2, generator=generator)
        return sample
    if dataset == "swissroll":
        def sample(n):  # the WGAN-GP paper's Swiss roll (sklearn's make_swiss_roll, noise 0.25) / 7.5
            t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
            xy = torch.stack([t * t.cos(), t * t.sin()], 1) + 0.25 * torch.randn(n, 2, generator=generator)
            return xy / 7.5 * 2
        return sample
    train_x, _ = digits_split()

    def sample(n):
        return train_x[torch.randint(len(train_x), (n,), generator=generator)]
    return sample


def digits_split():
    """scikit-learn's 1,797 8x8 digits scaled to [-1, 1]: (train, held-out 297), fixed split."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data, dtype=torch.float32) / 8 - 1
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[297:]], x[perm[:297]]


def make_models(dataset, width=None):
    """(G, D, z_dim): ReLU MLPs as in the WGAN-GP toy experiments (narrower, for CPU)."""
    dim, z_dim = (64, 32) if dataset == "digits" else (2, Z_DIM_2D)
    width = width or (128 if dataset == "digits" else 64)

    def mlp(d_in, d_out):
        return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                             nn.Linear(width, width), nn.ReLU(), nn.Linear(width, d_out))
    G = mlp(z_dim, dim)
    if dataset == "digits":
        G.append(nn.Tanh())
    return G, mlp(dim, 1), z_dim


# --------------------------------------------------------------------------------------------
# metrics
def mode_metrics(samples, centers, std=MODE_STD, min_count=MIN_MODE_SAMPLES):
    """Modes covered and share of high-quality samples (within 3 std of the nearest center)."""
    d = torch.cdist(samples.double(), centers.double())
    dist, nearest = d.min(1)
    good = dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=len(centers))
    return {"modes_covered": int((counts >= min_count).sum()), "n_modes": len(centers),
            "high_quality": float(good.double().mean())}


def nn_distance(a, b):
    """Mean Euclidean distance from each row of a to its nearest row of b."""
    return float(torch.cdist(a.double(), b.double()).min(1).values.mean())


def sample_metrics(dataset, samples, generator=None):
    """All metrics of 2,500 generated samples for one dataset."""
    if dataset == "digits":
        train_x, test_x = digits_split()
        n = min(len(samples), len(train_x))  # as many generated as real digits: a fair ratio
        ref = train_x[torch.randperm(len(train_x), generator=generator)[:n]]
        samples = samples[:n]
        return {"nn_gen_to_test": nn_distance(samples, test_x) / nn_distance(ref, test_x),
                "nn_test_to_gen": nn_distance(test_x, samples) / nn_distance(test_x, ref)}
    real = make_sampler(dataset, generator)(len(samples))
    out = {"nn_gen_to_data": nn_distance(samples, real), "nn_data_to_gen": nn_distance(real, samples)}
    centers = mixture_centers(dataset)
    if centers is not None:
        out.update(mode_metrics(samples, centers))
    return out


# --------------------------------------------------------------------------------------------
# figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lim(dataset):
    return 5.5 if dataset == "25gaussians" else 3.0


def critic_surface(dataset, D, n=120):
    """(xx, yy, zz) numpy grids of the critic's value over the plotted square."""
    lim = plot_lim(dataset)
    g = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    with torch.no_grad():
        zz = D(torch.stack([xx.flatten(), yy.flatten()], 1)).view(xx.shape)
    return xx.numpy(), yy.numpy(), zz.numpy()


def plot_2d(ax, dataset, surface, samples, title):
    """Critic value surface (filled contours) with data (orange) and generated samples (green)."""
    real = make_sampler(dataset, torch.Generator().manual_seed(1))(1000)
    lim = plot_lim(dataset)
    cs = ax.contourf(*surface, levels=20, cmap="viridis")
    ax.figure.colorbar(cs, ax=ax, fraction=0.046, pad=0.02)
    ax.scatter(real[:, 0], real[:, 1], s=2, c="orange", label="data")
    ax.scatter(samples[:500, 0], samples[:500, 1], s=2, c="lime", label="generated")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def plot_digits(ax, samples, title):
    n = 10
    tiles = torch.nn.functional.pad(samples[:n * n].view(n, n, 8, 8), (0, 1, 0, 1), value=0.0)  # grey gaps
    grid = tiles.permute(0, 2, 1, 3).reshape(9 * n, 9 * n)[:-1, :-1]
    ax.imshow(grid.numpy(), cmap="gray", vmin=-1, vmax=1)
    ax.axis("off")
    ax.set_title(title, fontsize=9)


def write_figures(out, dataset, name, surface, samples, history):
    """<name>.png (samples over data + critic surface, or a digit grid) and <name>_losses.png."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    if dataset == "digits":
        plot_digits(ax, samples, f"{name}: generated digits")
    else:
        plot_2d(ax, dataset, surface, samples, f"{name} on {dataset}: critic value, data, samples")
    fig.savefig(os.path.join(out, f"{name}.png"), dpi=90, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(history["d_loss"], lw=0.7, label="critic loss")
    ax.plot(history["g_loss"], lw=0.7, label="generator loss")
    ax.set_xlabel("generator step")
    ax.legend()
    ax.set_title(f"{name} on {dataset}", fontsize=9)
    fig.savefig(os.path.join(out, f"{name}_losses.png"), dpi=90, bbox_inches="tight")
    plt.close(fig)


def write_overview(out, dataset, runs):
    """overview.png: one panel per method, like the WGAN-GP paper's toy figure."""
    plt = _plt()
    n = len(runs)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, (surface, samples, metrics)) in zip(axes.flat, runs.items()):
        title = f"{name}\n{_headline(metrics)}"
        if dataset == "digits":
            plot_digits(ax, samples, title)
        else:
            plot_2d(ax, dataset, surface, samples, title)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overview.png"), dpi=80)
    plt.close(fig)


def _headline(m):
    if "modes_covered" in m:
        return f"modes {m['modes_covered']}/{m['n_modes']}, hq {m['high_quality']:.0%}"
    if "nn_gen_to_test" in m:
        return f"gen→test {m['nn_gen_to_test']:.2f}, test→gen {m['nn_test_to_gen']:.2f}"
    return f"gen→data {m['nn_gen_to_data']:.3f}, data→gen {m['nn_data_to_gen']:.3f}"


# --------------------------------------------------------------------------------------------
# runs
class Progress:
    """One-line progress bar on stderr, redrawn at most ~20 times a second."""

    def __init__(self, label, total, stream=None):
        self.label, self.total, self.stream = label, total, stream or sys.stderr
        self.t0 = self.last = time.perf_counter()

    def __call__(self, step, **vals):
        now = time.perf_counter()
        done = step + 1
        if done < self.total and now - self.last < 0.05:
            return
        self.last = now
        bar = "#" * (24 * done // self.total)
        extra = " ".join(f"{k}={v:.3g}" for k, v in vals.items() if k != "critic_s")
        self.stream.write(f"\r{self.label:<16} [{bar:<24}] {done}/{self.total} {now - self.t0:5.1f}s {extra}   ")
        if done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def run_one(dataset, name, *, steps, batch_size, seed, progress=True):
    """Train one method on one dataset; returns (D, samples (2500, dim), metrics dict, history)."""
    torch.manual_seed(seed)
    G, D, z_dim = make_models(dataset)
    sample_real = make_sampler(dataset)
    history = {"d_loss": [], "g_loss": [], "critic_s": []}
    bar = Progress(name, steps) if progress else None

    def log(step, **vals):
        for k, v in vals.items():
            history[k].append(v)
        if bar:
            bar(step, **vals)

    method = METHODS[name]
    t0 = time.perf_counter()
    train(G, D, sample_real, method, steps=steps, batch_size=batch_size, z_dim=z_dim, log=log)
    seconds = time.perf_counter() - t0
    G.eval()
    D.eval()
    with torch.no_grad():
        samples = G(torch.randn(N_EVAL, z_dim))
    metrics = sample_metrics(dataset, samples, torch.Generator().manual_seed(seed + 1))
    crit = history["critic_s"][1:] or history["critic_s"]  # the first step includes warm-up
    metrics.update({
        "sec_per_critic_step": statistics.median(crit),
        "train_seconds": seconds,
        "final_d_loss": history["d_loss"][-1], "final_g_loss": history["g_loss"][-1],
    })
    return D, samples, metrics, history


SUMMARY_COLUMNS = {
    "modes_covered": "modes covered", "high_quality": "high-quality share",
    "nn_gen_to_data": "NN gen→data", "nn_data_to_gen": "NN data→gen",
    "nn_gen_to_test": "NN gen→test (÷ real)", "nn_test_to_gen": "NN test→gen (÷ real)",
    "sec_per_critic_step": "ms / critic step", "train_seconds": "train s",
}


def summary_table(dataset, results):
    """Markdown table method x metric."""
    cols = [c for c in SUMMARY_COLUMNS if any(c in m for m in results.values())]
    lines = ["| method | " + " | ".join(SUMMARY_COLUMNS[c] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for name, m in results.items():
        cells = []
        for c in cols:
            v = m.get(c)
            if c == "modes_covered":
                cells.append(f"{v}/{m['n_modes']}")
            elif c == "high_quality":
                cells.append(f"{v:.1%}")
            elif c == "sec_per_critic_step":
                cells.append(f"{1e3 * v:.2f}")
            elif c == "train_seconds":
                cells.append(f"{v:.1f}")
            else:
                cells.append(f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    what = ("1,500 generated digits vs 1,500 training digits, distances to 297 held-out digits"
            if dataset == "digits" else f"{N_EVAL:,} generated samples per method")
    return f"{dataset}: {what}\n\n" + "\n".join(lines) + "\n"


def default_steps(dataset, name):
    """Generator steps of method ``name`` on ``dataset`` by default: the critic-update budget
    ``CRITIC_STEPS[dataset]`` divided by the method's critic steps per generator step.

    >>> default_steps("8gaussians", "wgan-gp"), default_steps("8gaussians", "r1")
    (1000, 5000)"""
    return CRITIC_STEPS[dataset] // METHODS[name].n_critic


def run_metrics(dataset, name, seed, steps=None, batch_size=256):
    """Metrics of one run at the demo's defaults, one thread (picklable: for worker processes)."""
    torch.set_num_threads(1)
    steps = steps or default_steps(dataset, name)
    return run_one(dataset, name, steps=steps, batch_size=batch_size, seed=seed, progress=False)[2]


def run_and_save(dataset, name, steps, batch_size, seed, out, progress=False, threads=1):
    """Train one method, write <name>.json/.png/_losses.png; returns (surface, samples[:1000], metrics).

    ``steps=None``: :func:`default_steps`. Top-level (picklable) so that :func:`run` can hand it
    to worker processes."""
    steps = steps or default_steps(dataset, name)
    torch.set_num_threads(threads)  # tiny networks: one thread per run, parallelism across runs
    D, samples, metrics, history = run_one(dataset, name, steps=steps, batch_size=batch_size, seed=seed,
                                           progress=progress)
    config = dataclasses.asdict(METHODS[name])
    config["penalty"] = config["penalty"] is not None
    record = {"dataset": dataset, "method": name, "steps": steps, "batch_size": batch_size, "seed": seed,
              "config": config, "metrics": metrics, "history": history,
              "fastgan": fg.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(record, f, indent=1)
    surface = None if dataset == "digits" else critic_surface(dataset, D)
    write_figures(out, dataset, name, surface, samples, history)
    return surface, samples[:1000], metrics


def run(dataset, methods, *, steps, batch_size, seed, out, progress=True, jobs=1, threads=1):
    """Train every method, write per-run PNG/JSON, overview.png, summary.md and summary.json.

    ``steps``: generator steps of every method, or None for each method's :func:`default_steps`.
    ``jobs > 1`` trains that many methods at once in worker processes (one thread each): the
    runs are independent and each seeds itself, so the results equal those of ``jobs=1``."""
    os.makedirs(out, exist_ok=True)
    runs = {}
    if jobs <= 1:
        for name in methods:
            runs[name] = run_and_save(dataset, name, steps, batch_size, seed, out, progress, threads)
    else:
        import concurrent.futures
        import multiprocessing

        # spawn: a fresh interpreter per worker (forking a process that already ran torch ops can hang)
        ctx = multiprocessing.get_context("spawn")
        # the longest runs first, so that the pool finishes together
        order = sorted(methods, key=lambda n: -_cost(dataset, n, steps))
        with concurrent.futures.ProcessPoolExecutor(min(jobs, len(methods)), mp_context=ctx) as pool:
            futures = {pool.submit(run_and_save, dataset, n, steps, batch_size, seed, out, False, threads): n for n in order}
            for fut in concurrent.futures.as_completed(futures):
                name = futures[fut]
                runs[name] = fut.result()
                if progress:
                    print(f"{name:<16} done: {_headline(runs[name][2])}", file=sys.stderr, flush=True)
        runs = {n: runs[n] for n in methods}
    results = {n: r[2] for n, r in runs.items()}
    write_overview(out, dataset, runs)
    table = summary_table(dataset, results)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results, table


def _cost(dataset, name, steps):
    """Relative cost of a run: critic forward/backward passes (a 5-critic step ~ 5 1-critic steps;
    the penalties roughly double a critic step)."""
    m = METHODS[name]
    return (steps or default_steps(dataset, name)) * (m.n_critic + 1) * (2 if m.penalty else 1)


# --------------------------------------------------------------------------------------------
# command line
def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def add_parser(sub):
    p = sub.add_parser("demo", help="train small GANs on CPU with every regularizer; figures, metrics, table",
                       description="Train small GANs on CPU with each method and compare them: per-run PNGs "
                                   "(samples over the data and the critic's value surface, loss curves), "
                                   "JSON metrics, overview.png and a summary table (summary.md).")
    p.add_argument("--dataset", choices=DATASETS, default="8gaussians")
    p.add_argument("--method", nargs="+", choices=list(METHODS), metavar="NAME",
                   help=f"one or more of: {', '.join(METHODS)} (default: all)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="generator steps of every method (default: an equal budget of critic updates, " +
                        ", ".join(f"{k} {v}" for k, v in CRITIC_STEPS.items()) +
                        ", i.e. that many divided by the method's critic steps per generator step)")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--out", help="output folder (default: demo-results/DATASET)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="torch CPU threads (default 1: the networks are tiny, more threads only add overhead)")
    p.add_argument("--jobs", type=_positive_int, default=None,
                   help="methods trained at once in worker processes, one thread each "
                        "(default: the number of CPU cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cli)
    return p


def cli(args):
    steps = args.steps  # None: each method's default_steps
    out = args.out or os.path.join("demo-results", args.dataset)
    if os.path.exists(out) and not os.path.isdir(out):
        print(f"python -m fastgan demo: error: --out {out!r} exists and is not a directory", file=sys.stderr)
        return 2
    methods = list(dict.fromkeys(args.method or METHODS))
    jobs = args.jobs or len(os.sched_getaffinity(0))
    torch.set_num_threads(args.threads)
    budget = (f"{steps} generator steps" if steps else
              f"{CRITIC_STEPS[args.dataset]} critic updates (1-critic methods {CRITIC_STEPS[args.dataset]}, "
              f"5-critic {CRITIC_STEPS[args.dataset] // 5} generator steps)")
    print(f"fastgan demo: {args.dataset}, methods {', '.join(methods)}, {budget}, "
          f"batch {args.batch_size}, seed {args.seed}, {min(jobs, len(methods))} process(es) -> {out}")
    _, table = run(args.dataset, methods, steps=steps, batch_size=args.batch_size, seed=args.seed, out=out,
                   progress=not args.quiet, jobs=jobs, threads=args.threads)
    print()
    print(table)
    print(f"figures, JSON and summary.md in {out}")
    return 0
