// Shared by the CUDA kernels: the accumulation type and a 16-byte-aligned pack of N elements
// for vector loads and stores.
#pragma once
#include <type_traits>

namespace fastgan {

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

}  // namespace fastgan
