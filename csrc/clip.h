// Shared by the CPU and CUDA weight-clipping kernels: argument checks and which tensors can be
// clamped as one flat span of memory.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Scalar.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace fastgan {

// Every check runs before any tensor is touched, so a failing call modifies nothing.
inline void clip_check_args(at::TensorList tensors, double lo, double hi, c10::DeviceType device_type) {
  TORCH_CHECK_VALUE(!std::isnan(lo) && !std::isnan(hi) && lo <= hi,
                    "clip_weights_: need lo <= hi (and neither NaN), got lo=", lo, ", hi=", hi);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK_TYPE(t.defined(), "clip_weights_: tensors[", i, "] is undefined");
    const auto dt = t.scalar_type();
    TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                     "clip_weights_: tensors[", i, "] must be float16/bfloat16/float32/float64, got ", dt);
    TORCH_CHECK_VALUE(t.device().type() == device_type, "clip_weights_: tensors[", i, "] is on ", t.device(),
                      ", expected ", c10::DeviceTypeName(device_type));
  }
}

// A non-overlapping, dense tensor (contiguous, channels_last, any permutation) occupies exactly
// [data_ptr, data_ptr + numel): strides are never negative. Such tensors are clamped as a flat
// span whatever their layout; others (strided slices) go through at::clamp_.
inline bool clip_as_span(const at::Tensor& t) { return t.is_non_overlapping_and_dense(); }

// The bounds in the tensor's dtype, converted as at::clamp_ converts its Scalar bounds.
template <typename scalar_t>
inline std::pair<scalar_t, scalar_t> clip_bounds(double lo, double hi) {
  return {c10::Scalar(lo).to<scalar_t>(), c10::Scalar(hi).to<scalar_t>()};
}

// The op mutates its inputs without going through autograd's in-place machinery: bump the
// version counters ourselves so autograd still detects a clipped tensor saved for backward.
inline void clip_bump_versions(at::TensorList tensors) {
  for (const at::Tensor& t : tensors) t.unsafeGetTensorImpl()->bump_version();
}

}  // namespace fastgan
