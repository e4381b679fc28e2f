// cuda_emu stub of ATen/cuda/CUDAContext.h.
#pragma once
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace at::cuda {
using c10::cuda::getCurrentCUDAStream;
}
