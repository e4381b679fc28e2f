// Shared by the CPU and CUDA weight-clipping kernels: argument checks and which tensors can be
// clamped as one flat span of memory.
#pragma once
#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/Scalar.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#include <c10/util/overflows.h>

#include <cmath>

namespace fastgan {

// A finite bound beyond the range of a dtype in the list cannot be stored in it (at::clamp_
// refuses it too); an infinite one is kept (clamping to +-inf). Only the dtypes present are
// checked: 7e4 on a float32 list is fine although float16 cannot hold it.
template <typename scalar_t>
inline void clip_check_bound(double v, const char* which, size_t i, at::ScalarType dt) {
  const bool overflow = c10::overflows<scalar_t, double>(v);
  TORCH_CHECK_VALUE(!overflow, "clip_weights_: ", which, "=", v,
                    " cannot be converted to tensors[", i, "]'s dtype ", dt, " without overflow");
}

// Every check runs before any tensor is touched, so a failing call modifies nothing.
inline void clip_check_args(at::TensorList tensors, double lo, double hi, c10::DeviceType device_type) {
  TORCH_CHECK_VALUE(!std::isnan(lo) && !std::isnan(hi) && lo <= hi,
                    "clip_weights_: need lo <= hi (and neither NaN), got lo=", lo, ", hi=", hi);
  const bool inference_mode = c10::InferenceMode::is_enabled();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK_TYPE(t.defined(), "clip_weights_: tensors[", i, "] is undefined");
    const auto dt = t.scalar_type();
    TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                     "clip_weights_: tensors[", i, "] must be float16/bfloat16/float32/float64, got ", dt);
    TORCH_CHECK_VALUE(t.device().type() == device_type, "clip_weights_: tensors[", i, "] is on ", t.device(),
                      ", expected ", c10::DeviceTypeName(device_type));
    // what at::clamp_ refuses, refused here before anything is written
    TORCH_CHECK_VALUE(inference_mode || !t.is_inference(), "clip_weights_: tensors[", i,
                      "] is an inference tensor, which cannot be updated in place outside "
                      "torch.inference_mode() (clone it first)");
    TORCH_CHECK_VALUE(at::has_internal_overlap(t) != at::MemOverlap::Yes, "clip_weights_: tensors[", i,
                      "] has elements that share memory (e.g. from expand()); clamp a clone() of it");
    for (auto [v, which] : {std::pair<double, const char*>{lo, "lo"}, {hi, "hi"}}) {
      if (dt == at::kFloat) clip_check_bound<float>(v, which, i, dt);
      if (dt == at::kHalf) clip_check_bound<at::Half>(v, which, i, dt);
      if (dt == at::kBFloat16) clip_check_bound<at::BFloat16>(v, which, i, dt);
    }
  }
}

// A non-overlapping, dense tensor (contiguous, channels_last, any permutation) occupies exactly
// [data_ptr, data_ptr + numel): strides are never negative. Such tensors are clamped as a flat
// span whatever their layout; others (strided slices) go through at::clamp_.
inline bool clip_as_span(const at::Tensor& t) { return t.is_non_overlapping_and_dense(); }

// The bounds in the tensor's dtype, converted as at::clamp_ converts its Scalar bounds (checked by
// clip_check_args not to overflow).
template <typename scalar_t>
inline std::pair<scalar_t, scalar_t> clip_bounds(double lo, double hi) {
  return {c10::Scalar(lo).to<scalar_t>(), c10::Scalar(hi).to<scalar_t>()};
}

// The op mutates its inputs without going through autograd's in-place machinery: bump the
// version counters ourselves so autograd still detects a clipped tensor saved for backward.
// Inference tensors have no version counter.
inline void clip_bump_versions(at::TensorList tensors) {
  for (const at::Tensor& t : tensors)
    if (!t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
}

}  // namespace fastgan
