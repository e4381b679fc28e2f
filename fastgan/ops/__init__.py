"""The op layer: one module per op family, between the public API and the backend kernels.

Flow: public function (fastgan/penalty.py, spectral.py, clip.py: validation, semantics) ->
op layer (this package: fake kernels, autograd registration, backend dispatch) -> backend kernel
(fastgan.reference, fastgan._C's ``fastgan::*`` ops from csrc/cpu and csrc/cuda, the Triton
kernels' ``fastgan_triton::*`` ops in fastgan/_triton).

Each family module holds, for every namespace it serves (``fastgan`` and ``fastgan_triton``):
its fake kernels (``torch.compile`` / meta tensors), its autograd where it is written in Python
(the C++ ops register theirs in csrc/*_autograd.cpp), and one dispatch function per op taking the
already resolved backend name. Nothing below this layer imports the public modules.
"""
from . import clip, penalty, spectral  # noqa: F401  (registers the fastgan:: fakes)
