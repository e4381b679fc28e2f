// cuda_emu stub of c10/cuda/CUDAStream.h: one (default) stream; launches are synchronous.
#pragma once
#include <c10/core/Device.h>

namespace c10::cuda {
struct CUDAStream {
  cudaStream_t stream() const { return nullptr; }
  operator cudaStream_t() const { return nullptr; }
  c10::Device device() const { return c10::Device(c10::DeviceType::CPU); }
};
inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return {}; }
inline CUDAStream getDefaultCUDAStream(c10::DeviceIndex = -1) { return {}; }
}  // namespace c10::cuda
