// cuda_emu stub of c10/cuda/CUDAException.h: errors of the emulated runtime raise like c10's.
#pragma once
#include <c10/util/Exception.h>

#define C10_CUDA_CHECK(EXPR)                                                                      \
  do {                                                                                            \
    const cudaError_t cuemu_err_ = (EXPR);                                                        \
    TORCH_CHECK(cuemu_err_ == cudaSuccess, "CUDA error (emulated): ", cudaGetErrorString(cuemu_err_), \
                " (", cuemu_err_, ") from ", #EXPR);                                              \
  } while (0)
// Launch errors are thrown by the emulated launch itself, before this runs.
#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
