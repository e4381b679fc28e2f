"""Lazy access to the Triton ops: their module is imported (defining ``fastgan_triton::*``) and
registered with the op layer once, on first use, so importing fastgan never imports triton."""
import importlib

import torch


def loader(module, register=None):
    """A function returning ``torch.ops.fastgan_triton`` once ``fastgan._triton.<module>`` is
    imported and, if given, ``register("fastgan_triton")`` has run. A plain list, not
    ``functools.lru_cache``: dynamo traces through it without a warning."""
    done = []

    def triton_ops():
        if not done:
            importlib.import_module(f"fastgan._triton.{module}")
            if register is not None:
                register("fastgan_triton")
            done.append(torch.ops.fastgan_triton)
        return done[0]

    return triton_ops
