// cuda_emu stub of c10/cuda/CUDAGuard.h: the emulated device is a CPU tensor's device.
#pragma once
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <optional>

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device d) {
    TORCH_CHECK(d.is_cpu(), "cuda_emu: CUDAGuard on ", d, ": emulated kernels take CPU tensors");
  }
  explicit CUDAGuard(c10::DeviceIndex) {}
  CUDAGuard(const CUDAGuard&) = delete;
  CUDAGuard& operator=(const CUDAGuard&) = delete;
};
struct OptionalCUDAGuard {
  OptionalCUDAGuard() = default;
  explicit OptionalCUDAGuard(std::optional<c10::Device>) {}
};
}  // namespace c10::cuda
