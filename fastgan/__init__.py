"""fastgan: fused kernels for the regularizers that make GANs train.

Per-sample gradient-norm penalties (WGAN-GP, LP, DRAGAN, WGAN-div, R1/R2), spectral
normalization and weight clipping, with eager reference implementations, C++ CPU, CUDA and
Triton backends. See README.md and docs/SPEC.md.
"""
from . import ops, reference
from ._ext import empty_cache
from .backend import backends, get_backend, set_backend, use_backend
from .approx import approx_r1_penalty, approx_r2_penalty
from .clip import ClipError, WeightClipper, clip_weights_
from .lazy import Lazy
from .penalty import (
    dragan_penalty,
    grad_norm_penalty,
    gradient_penalty,
    lipschitz_penalty,
    r1_penalty,
    r2_penalty,
    wgan_div_penalty,
)
from .spectral import apply_spectral_norm, remove_spectral_norm, spectral_norm
from . import losses
from .noise import anneal_std, instance_noise

__version__ = "0.1.0"

__all__ = [
    "backends", "get_backend", "set_backend", "use_backend", "reference", "empty_cache",
    "grad_norm_penalty", "gradient_penalty", "lipschitz_penalty", "dragan_penalty",
    "wgan_div_penalty", "r1_penalty", "r2_penalty", "approx_r1_penalty", "approx_r2_penalty", "Lazy",
    "spectral_norm", "remove_spectral_norm", "apply_spectral_norm",
    "clip_weights_", "WeightClipper", "ClipError",
    "losses", "instance_noise", "anneal_std",
]
