// Gradients are read as B rows of N elements. A row may be any dense permutation of its
// sample's elements (contiguous, channels_last, ...): sums of squares and elementwise scaling do
// not care about the order, so such layouts are read in place, without a copy.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_strided.h>
#include <algorithm>
#include <utility>
#include <vector>

namespace fastgan {

inline void check_grads(const at::Tensor& grads, const char* op) {
  TORCH_CHECK(grads.dim() >= 1, op, ": grads must have a batch dimension, got a 0-d tensor");
  TORCH_CHECK(at::isFloatingType(grads.scalar_type()), op, ": grads must be floating point, got ",
              grads.scalar_type());
}

// True when dims 1.. of t cover a dense block of numel/size(0) elements.
inline bool rows_are_dense(const at::Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size)
  for (int64_t d = 1; d < t.dim(); ++d)
    if (t.size(d) != 1) dims.emplace_back(t.stride(d), t.size(d));
  std::sort(dims.begin(), dims.end());
  int64_t expect = 1;
  for (auto [stride, size] : dims) {
    if (stride != expect) return false;
    expect *= size;
  }
  return true;
}

// grads itself when its rows are dense, else a contiguous copy.
inline at::Tensor as_dense_rows(const at::Tensor& t) {
  return rows_are_dense(t) ? t : t.contiguous();
}

// A fresh tensor shaped like `rows` (dense rows), rows packed back to back, with the same
// element order inside each row, so one flat index addresses matching elements of both.
inline std::vector<int64_t> packed_row_strides(const at::Tensor& rows) {
  std::vector<int64_t> strides(rows.strides().begin(), rows.strides().end());
  int64_t n = rows.size(0) == 0 ? 0 : rows.numel() / rows.size(0);
  strides[0] = std::max<int64_t>(n, 1);
  return strides;
}

inline at::Tensor empty_like_rows(const at::Tensor& rows) {
  return at::empty_strided(rows.sizes(), packed_row_strides(rows), rows.options());
}

}  // namespace fastgan
