// CPU kernels of the per-sample gradient-norm penalty: one vectorized, parallel pass over the
// gradients forward (per-row sum of squares) and one backward (dL/dg_i = c_i * g_i).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <vector>

#include "../gnp_math.h"
#include "../rows.h"
#include "block_cache.h"

namespace fastgan {
namespace {

using at::vec::Vectorized;

// Rows are cut into chunks of this many elements so that few huge rows (B=2, 3x1024x1024) still
// use every thread; partial sums are combined in a fixed order, so results do not depend on the
// thread count.
constexpr int64_t kChunk = 16384;
// Below this many elements per task group a parallel region costs more than it saves (ATen's own
// at::internal::GRAIN_SIZE).
constexpr int64_t kGrain = 32768;

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename scalar_t>
acc_type<scalar_t> sum_squares(const scalar_t* p, int64_t n) {
  using acc_t = acc_type<scalar_t>;
  using Vec = Vectorized<scalar_t>;
  using aVec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  aVec a0(acc_t(0)), a1(acc_t(0)), a2(acc_t(0)), a3(acc_t(0));
  int64_t i = 0;
  if constexpr (at::vec::is_reduced_floating_point_v<scalar_t>) {
    for (; i + 2 * W <= n; i += 2 * W) {
      auto [x0, x1] = at::vec::convert_to_float<scalar_t>(Vec::loadu(p + i));
      auto [x2, x3] = at::vec::convert_to_float<scalar_t>(Vec::loadu(p + i + W));
      a0 = at::vec::fmadd(x0, x0, a0);
      a1 = at::vec::fmadd(x1, x1, a1);
      a2 = at::vec::fmadd(x2, x2, a2);
      a3 = at::vec::fmadd(x3, x3, a3);
    }
  } else {
    for (; i + 4 * W <= n; i += 4 * W) {
      Vec x0 = Vec::loadu(p + i), x1 = Vec::loadu(p + i + W);
      Vec x2 = Vec::loadu(p + i + 2 * W), x3 = Vec::loadu(p + i + 3 * W);
      a0 = at::vec::fmadd(x0, x0, a0);
      a1 = at::vec::fmadd(x1, x1, a1);
      a2 = at::vec::fmadd(x2, x2, a2);
      a3 = at::vec::fmadd(x3, x3, a3);
    }
  }
  aVec a = (a0 + a1) + (a2 + a3);
  acc_t lanes[aVec::size()];
  a.store(lanes);
  acc_t s = 0;
  for (int64_t k = 0; k < aVec::size(); ++k) s += lanes[k];
  for (; i < n; ++i) {
    acc_t x = static_cast<acc_t>(p[i]);
    s += x * x;
  }
  return s;
}

template <typename scalar_t>
void scale_into(scalar_t* out, const scalar_t* in, int64_t n, acc_type<scalar_t> c) {
  using acc_t = acc_type<scalar_t>;
  using Vec = Vectorized<scalar_t>;
  constexpr int64_t W = Vec::size();
  int64_t i = 0;
  if constexpr (at::vec::is_reduced_floating_point_v<scalar_t>) {
    Vectorized<float> cv(c);
    for (; i + W <= n; i += W) {
      auto [x0, x1] = at::vec::convert_to_float<scalar_t>(Vec::loadu(in + i));
      at::vec::convert_from_float<scalar_t>(x0 * cv, x1 * cv).store(out + i);
    }
  } else {
    Vec cv(c);
    for (; i + W <= n; i += W) (Vec::loadu(in + i) * cv).store(out + i);
  }
  for (; i < n; ++i) out[i] = static_cast<scalar_t>(static_cast<acc_t>(in[i]) * c);
}

// Fills norms[r] = ||g_r|| and phi[r] = phi(||g_r||) for every row of `grads` (dense rows).
template <typename scalar_t>
void rows_phi(const at::Tensor& grads, double target, double power, bool one_sided, acc_type<scalar_t>* phi_p,
              acc_type<scalar_t>* norm_p) {
  using acc_t = acc_type<scalar_t>;
  const int64_t B = grads.size(0);
  const int64_t N = B == 0 ? 0 : grads.numel() / B;
  if (B == 0) return;
  const int64_t row_stride = grads.stride(0);
  const int64_t chunks = std::max<int64_t>(1, (N + kChunk - 1) / kChunk);
  const scalar_t* g = grads.const_data_ptr<scalar_t>();
  const acc_t t = static_cast<acc_t>(target), p = static_cast<acc_t>(power);
  auto finish_row = [&](int64_t r, acc_t s) {
    acc_t n = std::sqrt(s);
    norm_p[r] = n;
    phi_p[r] = gnp_phi<acc_t>(s, n, t, p, one_sided);
  };
  if (chunks == 1) {
    at::parallel_for(0, B, std::max<int64_t>(1, kGrain / std::max<int64_t>(N, 1)), [&](int64_t b0, int64_t b1) {
      for (int64_t r = b0; r < b1; ++r) finish_row(r, sum_squares(g + r * row_stride, N));
    });
    return;
  }
  std::vector<acc_t> partial(B * chunks);
  at::parallel_for(0, B * chunks, kGrain / kChunk, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      int64_t r = k / chunks, c = k % chunks;
      int64_t start = c * kChunk, len = std::min(kChunk, N - start);
      partial[k] = sum_squares(g + r * row_stride + start, len);
    }
  });
  for (int64_t r = 0; r < B; ++r) {
    double s = 0;  // thousands of chunk sums per row for huge rows: float32 would drift
    for (int64_t c = 0; c < chunks; ++c) s += partial[r * chunks + c];
    finish_row(r, static_cast<acc_t>(s));
  }
}

at::ScalarType acc_dtype_of(const at::Tensor& grads) {
  return grads.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<at::Tensor, at::Tensor> gnp_forward_cpu(const at::Tensor& grads_in, double target,
                                                   double power, bool one_sided) {
  check_grads(grads_in, "gnp_forward");
  at::Tensor grads = as_dense_rows(grads_in);
  const int64_t B = grads.size(0);
  at::Tensor phi = at::empty({B}, grads.options().dtype(acc_dtype_of(grads)));
  at::Tensor norms = at::empty({B}, grads.options().dtype(acc_dtype_of(grads)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(), "gnp_forward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    rows_phi<scalar_t>(grads, target, power, one_sided, phi.mutable_data_ptr<acc_t>(), norms.mutable_data_ptr<acc_t>());
  });
  return {phi, norms};
}

// loss = scale * sum_r phi_r: the reduction happens here rather than in two more ops (and two
// more autograd nodes) that cost more than the kernel at GAN batch sizes.
std::tuple<at::Tensor, at::Tensor> gnp_loss_cpu(const at::Tensor& grads_in, double target, double power,
                                                bool one_sided, double scale) {
  check_grads(grads_in, "gnp_loss");
  at::Tensor grads = as_dense_rows(grads_in);
  const int64_t B = grads.size(0);
  at::Tensor loss = at::empty({}, grads.options());
  at::Tensor norms = at::empty({B}, grads.options().dtype(acc_dtype_of(grads)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(), "gnp_loss_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    std::vector<acc_t> phi(B);
    rows_phi<scalar_t>(grads, target, power, one_sided, phi.data(), norms.mutable_data_ptr<acc_t>());
    // float64 accumulation over the rows: a float32 running sum loses ~1e-2 relative at 4M rows
    // (the reference's pairwise sum stays at 1e-8); the extra cost is one add per row
    double s = 0;
    for (int64_t r = 0; r < B; ++r) s += phi[r];
    *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(static_cast<acc_t>(s * scale));
  });
  return {loss, norms};
}

// empty_like_rows (rows.h), from the block cache: this output is as large as the gradients.
at::Tensor out_like_rows(const at::Tensor& rows) {
  return cpu_empty_strided_cached(rows.sizes(), packed_row_strides(rows), rows.scalar_type());
}

// out_r = coef(r) * g_r for every row, where coef(r) receives the row's upstream gradient.
template <typename scalar_t, typename GradPhi>
void scale_rows(const at::Tensor& grads, at::Tensor& out, const at::Tensor& norms, double target, double power,
                bool one_sided, GradPhi grad_phi) {
  using acc_t = acc_type<scalar_t>;
  const int64_t B = grads.size(0);
  const int64_t N = grads.numel() / B;
  const int64_t row_stride = grads.stride(0);
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  at::Tensor nrm = norms.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
  const acc_t* norm_p = nrm.const_data_ptr<acc_t>();
  const acc_t t = static_cast<acc_t>(target), p = static_cast<acc_t>(power);
  std::vector<acc_t> coef(B);
  for (int64_t r = 0; r < B; ++r) coef[r] = gnp_coef<acc_t>(grad_phi(r), norm_p[r], t, p, one_sided);
  const scalar_t* g = grads.const_data_ptr<scalar_t>();
  scalar_t* o = out.mutable_data_ptr<scalar_t>();
  const int64_t task = std::min(N, kChunk);  // elements per task
  at::parallel_for(0, B * chunks, std::max<int64_t>(1, kGrain / task), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      int64_t r = k / chunks, start = (k % chunks) * kChunk, len = std::min(kChunk, N - start);
      scale_into(o + r * N + start, g + r * row_stride + start, len, coef[r]);
    }
  });
}

at::Tensor gnp_backward_cpu(const at::Tensor& grad_phi, const at::Tensor& grads_in, const at::Tensor& norms,
                            double target, double power, bool one_sided) {
  check_grads(grads_in, "gnp_backward");
  at::Tensor grads = as_dense_rows(grads_in);
  at::Tensor out = out_like_rows(grads);
  const int64_t B = grads.size(0);
  if (grads.numel() == 0) return out;
  TORCH_CHECK(grad_phi.numel() == B && norms.numel() == B, "gnp_backward: grad_phi and norms must have ", B,
              " elements");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(), "gnp_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    at::Tensor gphi = grad_phi.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    const acc_t* gphi_p = gphi.const_data_ptr<acc_t>();
    scale_rows<scalar_t>(grads, out, norms, target, power, one_sided, [&](int64_t r) { return gphi_p[r]; });
  });
  return out;
}

at::Tensor gnp_loss_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& grads_in, const at::Tensor& norms,
                                 double target, double power, bool one_sided, double scale) {
  check_grads(grads_in, "gnp_loss_backward");
  at::Tensor grads = as_dense_rows(grads_in);
  at::Tensor out = out_like_rows(grads);
  const int64_t B = grads.size(0);
  if (grads.numel() == 0) return out;
  TORCH_CHECK(grad_loss.numel() == 1 && norms.numel() == B, "gnp_loss_backward: grad_loss must have 1 element ",
              "and norms ", B);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(), "gnp_loss_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const acc_t gphi = static_cast<acc_t>(grad_loss.item<double>() * scale);
    scale_rows<scalar_t>(grads, out, norms, target, power, one_sided, [&](int64_t) { return gphi; });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("gnp_forward", &gnp_forward_cpu);
  m.impl("gnp_backward", &gnp_backward_cpu);
  m.impl("gnp_loss", &gnp_loss_cpu);
  m.impl("gnp_loss_backward", &gnp_loss_backward_cpu);
}

}  // namespace fastgan
