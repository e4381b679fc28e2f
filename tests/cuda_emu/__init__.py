"""Emulated CUDA tier: csrc/cuda/*.cu compiled for the CPU and tested against the reference.

See README.md here for how it works and, above all, what it cannot see (warp lockstep and
partial masks, the GPU memory model, concurrency between blocks, nvcc numerics, register /
shared-memory / argument limits, streams).
"""
