"""Op layer of weight clipping: ``clip_weights_`` (a list of tensors clamped in place).

Fake kernel for ``fastgan::clip_weights_`` (the Triton op registers its own with
``torch.library.custom_op``) and the dispatch to the resolved backend.
"""
import torch

from ._triton_ns import loader
from .. import _ext, reference

OP = "clip_weights"


def _clip_fake(tensors, lo, hi):
    # Also the Meta kernel: a list mixing meta and other tensors dispatches here, and must not be
    # taken as clipped.
    if len({t.device.type for t in tensors}) > 1:
        raise ValueError("clip_weights_: all tensors of one call must be on one device type, got "
                         f"{sorted({str(t.device) for t in tensors})}")


if _ext._C is not None:
    torch.library.register_fake("fastgan::clip_weights_")(_clip_fake)


# defines fastgan_triton::clip_weights_ and its fake
triton_ops = loader("clip")


def fused_(tensors, lo, hi):
    """One C++ call (CPU or CUDA) for the whole list; it checks every item before touching any."""
    torch.ops.fastgan.clip_weights_(tensors, lo, hi)


def run(name, tensors, lo, hi):
    """Clamp ``tensors`` (one device type, already checked) in place on the resolved backend."""
    if name == "reference":
        reference.clip_weights_foreach_(tensors, lo, hi)
    elif name == "triton":
        triton_ops().clip_weights_(tensors, lo, hi)
    else:
        fused_(tensors, lo, hi)
