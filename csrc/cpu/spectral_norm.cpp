// CPU kernels of spectral normalization.
//
// sn_power: the whole power iteration of one weight (W v, normalize, W^T u, normalize, sigma) in
// one parallel sweep over W per iteration (see sweep()), for every layer of a model in one call.
// Torch needs ~12 ops per layer and three passes over W (the third for sigma = u^T W v); here
// sigma comes for free: with s = W^T u and v = s / max(|s|, eps), u^T W v = |s|^2 / max(|s|, eps).
// sn_normalize / sn_normalize_backward: W / sigma and its gradient through sigma = u^T W v, one
// pass forward and two backward. float16/bfloat16 weights are computed in float32.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "block_cache.h"
#include "cpu_isa.h"
#include "../sn_layout.h"

#define FASTGAN_SN_NS sn_base
#include "sn_kernel.h"

namespace fastgan {
#if defined(FASTGAN_CPU_AVX512)
namespace sn_avx512 {  // csrc/cpu/sn_avx512.cpp
float power_f(const float*, const SnMat&, float*, float*, int64_t, double);
double power_d(const double*, const SnMat&, double*, double*, int64_t, double);
void divide_f(const float*, float*, int64_t, float);
void divide_d(const double*, double*, int64_t, double);
void backward_f(const float*, const float*, const float*, const float*, float*, const SnMat&, float);
void backward_d(const double*, const double*, const double*, const double*, double*, const SnMat&, double);
}  // namespace sn_avx512
#endif

namespace {

using at::vec::Vectorized;
using sn_base::kChunk;
using sn_base::kGrain;

// The copy of the hot loops this CPU runs (sn_kernel.h), picked once: torch's own choice
// (at::get_cpu_capability(), which honours ATEN_CPU_CAPABILITY) where the CPU has it.
struct SnIsa {
  decltype(&sn_base::power_f) power_f;
  decltype(&sn_base::power_d) power_d;
  decltype(&sn_base::divide_f) divide_f;
  decltype(&sn_base::divide_d) divide_d;
  decltype(&sn_base::backward_f) backward_f;
  decltype(&sn_base::backward_d) backward_d;
  const char* name;
};

const SnIsa& isa() {
  static const SnIsa chosen = [] {
#if defined(FASTGAN_CPU_AVX512)
    if (use_avx512_copy())
      return SnIsa{&sn_avx512::power_f, &sn_avx512::power_d, &sn_avx512::divide_f, &sn_avx512::divide_d,
                   &sn_avx512::backward_f, &sn_avx512::backward_d, "AVX512"};
#endif
    return SnIsa{&sn_base::power_f, &sn_base::power_d, &sn_base::divide_f, &sn_base::divide_d,
                 &sn_base::backward_f, &sn_base::backward_d,
#if defined(CPU_CAPABILITY_AVX2)
                 "AVX2"};
#else
                 "DEFAULT"};
#endif
  }();
  return chosen;
}

float power_layer(const float* W, const SnMat& m, float* u, float* v, int64_t n_iter, double eps) {
  return isa().power_f(W, m, u, v, n_iter, eps);
}
double power_layer(const double* W, const SnMat& m, double* u, double* v, int64_t n_iter, double eps) {
  return isa().power_d(W, m, u, v, n_iter, eps);
}
void backward_rows(const float* g, const float* w, const float* u, const float* v, float* o, const SnMat& m,
                   float s) {
  isa().backward_f(g, w, u, v, o, m, s);
}
void backward_rows(const double* g, const double* w, const double* u, const double* v, double* o, const SnMat& m,
                   double s) {
  isa().backward_d(g, w, u, v, o, m, s);
}

at::ScalarType compute_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// A fresh contiguous copy of x in dtype ct. sn_power runs once per forward for every layer: a plain
// memcpy avoids two dispatcher round trips (to + contiguous) per vector when x already fits.
at::Tensor fresh_copy(const at::Tensor& x, at::ScalarType ct) {
  if (x.scalar_type() != ct || !x.is_contiguous()) return x.to(ct, /*non_blocking=*/false, /*copy=*/true).contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  std::memcpy(out.data_ptr(), x.const_data_ptr(), x.nbytes());
  return out;
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>> sn_power_cpu(
    at::TensorList weights, at::TensorList us, at::TensorList vs, at::IntArrayRef dims, int64_t n_iter, double eps) {
  sn_check_lists(weights, us, vs, dims);
  TORCH_CHECK(n_iter >= 0, "sn_power: n_iter must be >= 0, got ", n_iter);
  std::vector<at::Tensor> sigmas, u_out, v_out;
  for (size_t l = 0; l < weights.size(); ++l) {
    const auto ct = compute_type(weights[l].scalar_type());
    const at::Tensor& wl = weights[l];
    at::Tensor w = wl.scalar_type() == ct && wl.is_contiguous() ? wl : wl.to(ct).contiguous();
    // fresh working copies: the results are new tensors, the inputs stay untouched
    at::Tensor u = fresh_copy(us[l], ct);
    at::Tensor v = fresh_copy(vs[l], ct);
    at::Tensor sigma = at::empty({}, w.options());
    const SnMat m = sn_mat(w, dims[l]);
    AT_DISPATCH_FLOATING_TYPES(ct, "sn_power_cpu", [&] {
      *sigma.mutable_data_ptr<scalar_t>() = power_layer(w.const_data_ptr<scalar_t>(), m, u.mutable_data_ptr<scalar_t>(),
                                                        v.mutable_data_ptr<scalar_t>(), n_iter, eps);
    });
    sigmas.push_back(sigma);
    u_out.push_back(u.scalar_type() == us[l].scalar_type() ? u : u.to(us[l].scalar_type()));
    v_out.push_back(v.scalar_type() == vs[l].scalar_type() ? v : v.to(vs[l].scalar_type()));
  }
  return {sigmas, u_out, v_out};
}

double sigma_value(const at::Tensor& sigma) {
  TORCH_CHECK(sigma.numel() == 1, "spectral norm: sigma must have one element, got ", sigma.sizes());
  // CPU tensor: no device synchronisation; read in place when possible (a to() per layer shows)
  if (sigma.scalar_type() == at::kFloat) return *sigma.const_data_ptr<float>();
  if (sigma.scalar_type() == at::kDouble) return *sigma.const_data_ptr<double>();
  return sigma.to(at::kDouble).item<double>();
}

// out = w / s, elementwise in w's own dense layout (w is non-overlapping and dense).
void divide_into(const at::Tensor& w, at::Tensor& out, double sigma) {
  const int64_t n = w.numel();
  if (w.scalar_type() == at::kFloat) {
    isa().divide_f(w.const_data_ptr<float>(), out.mutable_data_ptr<float>(), n, static_cast<float>(sigma));
    return;
  }
  if (w.scalar_type() == at::kDouble) {
    isa().divide_d(w.const_data_ptr<double>(), out.mutable_data_ptr<double>(), n, sigma);
    return;
  }
  AT_DISPATCH_REDUCED_FLOATING_TYPES(w.scalar_type(), "sn_normalize_cpu", [&] {
    const float s = static_cast<float>(sigma);
    const scalar_t* src = w.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) dst[i] = static_cast<scalar_t>(static_cast<float>(src[i]) / s);
    });
  });
}

// (W in a dense layout, storage for W / sigma in that layout): any dense layout (channels_last, ...)
// is read and written in its own order; W / sigma is rebuilt every forward, so its storage comes
// from the block cache (no page faults).
std::pair<at::Tensor, at::Tensor> dense_with_output(const at::Tensor& weight) {
  at::Tensor w = weight.is_non_overlapping_and_dense() ? weight : weight.contiguous();
  at::Tensor out = cpu_empty_strided_cached(w.sizes(), w.strides(), w.scalar_type());
  return {w, out};
}

at::Tensor sn_normalize_cpu(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v,
                            const at::Tensor& sigma, int64_t dim) {
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()), "sn_normalize: weight must be floating point, got ",
              weight.scalar_type());
  auto [w, out] = dense_with_output(weight);
  divide_into(w, out, sigma_value(sigma));
  return out;
}

// sn_normalize of every layer of a model in one call (one dispatch, one autograd node).
std::vector<at::Tensor> sn_normalize_list_cpu(at::TensorList weights, at::TensorList us, at::TensorList vs,
                                              at::TensorList sigmas, at::IntArrayRef dims) {
  const size_t n = weights.size();
  TORCH_CHECK(us.size() == n && vs.size() == n && sigmas.size() == n && dims.size() == n,
              "sn_normalize_list: weights, us, vs, sigmas and dims must have the same length, got ", n, ", ",
              us.size(), ", ", vs.size(), ", ", sigmas.size(), ", ", dims.size());
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t l = 0; l < n; ++l) out.push_back(sn_normalize_cpu(weights[l], us[l], vs[l], sigmas[l], dims[l]));
  return out;
}

// x (1-d, any dtype) into dst[0..n) of type T, or back: memcpy when the dtypes match.
template <typename T>
void load_vec(const at::Tensor& x, T* dst) {
  if (x.scalar_type() == c10::CppTypeToScalarType<T>::value && x.is_contiguous()) {
    std::memcpy(dst, x.const_data_ptr(), x.numel() * sizeof(T));
  } else {
    at::Tensor c = x.to(c10::CppTypeToScalarType<T>::value).contiguous();
    std::memcpy(dst, c.const_data_ptr(), x.numel() * sizeof(T));
  }
}

template <typename T>
void store_vec(const T* src, at::Tensor& x) {
  if (x.scalar_type() == c10::CppTypeToScalarType<T>::value && x.is_contiguous()) {
    std::memcpy(x.mutable_data_ptr(), src, x.numel() * sizeof(T));
  } else {
    at::Tensor s = at::empty({x.numel()}, x.options().dtype(c10::CppTypeToScalarType<T>::value));
    std::memcpy(s.mutable_data_ptr(), src, x.numel() * sizeof(T));
    x.copy_(s);
  }
}

// apply_spectral_norm's whole forward in one call: for every layer, n_iter power iterations updating
// u and v IN PLACE (as torch's parametrization does), then W / sigma. The second output packs, per
// layer, [sigma, u (h), v (A*K)] in the accumulation dtype: one allocation for all layers, which the
// autograd node keeps for the backward (the buffers may be rewritten before it, e.g. by DDP).
std::tuple<std::vector<at::Tensor>, at::Tensor> sn_power_normalize_cpu(at::TensorList weights, at::TensorList us,
                                                                       at::TensorList vs, at::IntArrayRef dims,
                                                                       int64_t n_iter, double eps) {
  sn_check_lists(weights, us, vs, dims);
  TORCH_CHECK(n_iter >= 0, "sn_power_normalize: n_iter must be >= 0, got ", n_iter);
  const size_t n = weights.size();
  const auto ct = n ? compute_type(weights[0].scalar_type()) : at::kFloat;
  std::vector<int64_t> off(n + 1, 0);
  std::vector<SnMat> mats;
  mats.reserve(n);
  for (size_t l = 0; l < n; ++l) {
    TORCH_CHECK(compute_type(weights[l].scalar_type()) == ct, "sn_power_normalize: weights of one call must share ",
                "the accumulation dtype, got ", weights[0].scalar_type(), " and ", weights[l].scalar_type());
    mats.push_back(sn_mat(weights[l], dims[l]));
    off[l + 1] = off[l] + 1 + mats[l].h + mats[l].cols();
  }
  at::Tensor state = at::empty({off[n]}, at::TensorOptions().dtype(ct));
  // ws: W in the accumulation dtype, contiguous (the sweep's layout); src: W in its own dtype, dense
  std::vector<at::Tensor> ws(n), src(n), outs(n);
  for (size_t l = 0; l < n; ++l) {
    const at::Tensor& wl = weights[l];
    ws[l] = wl.scalar_type() == ct && wl.is_contiguous() ? wl : wl.to(ct).contiguous();
    std::tie(src[l], outs[l]) = dense_with_output(wl);
  }
  AT_DISPATCH_FLOATING_TYPES(ct, "sn_power_normalize_cpu", [&] {
    using T = scalar_t;
    T* st = state.mutable_data_ptr<T>();
    // One layer, start to end: its power iteration, then W / sigma while W is still in cache.
    auto layer = [&](size_t l) {
      T* u = st + off[l] + 1;
      T* v = u + mats[l].h;
      load_vec(us[l], u);
      load_vec(vs[l], v);
      st[off[l]] = power_layer(ws[l].const_data_ptr<T>(), mats[l], u, v, n_iter, eps);
      divide_into(src[l], outs[l], static_cast<double>(st[off[l]]));
    };
    // Large layers parallelize inside (chunks of the sweep, ranges of the division), one after the
    // other. Small ones (most layers of a critic) would each pay a fork/join for little work: they
    // run in ONE parallel region, each thread taking whole layers, split by element count. Results
    // do not depend on the split: every layer's arithmetic is serial and in a fixed order.
    std::vector<size_t> small;
    int64_t small_elems = 0;
    for (size_t l = 0; l < n; ++l) {
      if (weights[l].numel() >= kChunk) {
        layer(l);
      } else {
        small.push_back(l);
        small_elems += weights[l].numel();
      }
    }
    const int64_t parts = std::min<int64_t>(at::get_num_threads(), int64_t(small.size()));
    if (parts <= 1 || small_elems < kGrain) {
      for (size_t l : small) layer(l);
    } else {
      at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
        // part p takes the layers whose first element falls in [p, p + 1) * small_elems / parts
        int64_t before = 0;
        for (size_t l : small) {
          const int64_t part = before * parts / small_elems;
          if (part >= p0 && part < p1) layer(l);
          before += weights[l].numel();
        }
      });
    }
  });
  for (size_t l = 0; l < n && n_iter; ++l) {  // the buffers, in place, as torch's parametrization does
    at::Tensor ul = us[l], vl = vs[l];
    AT_DISPATCH_FLOATING_TYPES(ct, "sn_power_normalize_store", [&] {
      const scalar_t* u = state.const_data_ptr<scalar_t>() + off[l] + 1;
      store_vec(u, ul);
      store_vec(u + mats[l].h, vl);
    });
  }
  return {outs, state};
}

at::Tensor sn_normalize_backward_cpu(const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& u,
                                     const at::Tensor& v, const at::Tensor& sigma, int64_t dim) {
  const SnMat m = sn_check_backward(grad, weight, u, v, dim);
  const auto ct = compute_type(weight.scalar_type());
  at::Tensor g = grad.to(ct).contiguous(), w = weight.to(ct).contiguous();
  at::Tensor uc = u.to(ct).contiguous(), vc = v.to(ct).contiguous();
  at::Tensor out = cpu_empty_strided_cached(weight.sizes(), w.strides(), w.scalar_type());
  const double sig = sigma_value(sigma);
  AT_DISPATCH_FLOATING_TYPES(ct, "sn_normalize_backward_cpu", [&] {
    using T = scalar_t;
    const T* gp = g.const_data_ptr<T>();
    const T* wp = w.const_data_ptr<T>();
    const T* up = uc.const_data_ptr<T>();
    const T* vp = vc.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    backward_rows(gp, wp, up, vp, op, m, static_cast<T>(sig));
  });
  return out.to(weight.scalar_type());
}

std::string sn_cpu_isa() { return isa().name; }

}  // namespace

// Which copy of the spectral-norm loops this CPU runs: "AVX512", "AVX2" or "DEFAULT".
TORCH_LIBRARY_FRAGMENT(fastgan, m) { m.def("sn_cpu_isa() -> str", &sn_cpu_isa); }

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("sn_power", &sn_power_cpu);
  m.impl("sn_normalize", &sn_normalize_cpu);
  m.impl("sn_normalize_list", &sn_normalize_list_cpu);
  m.impl("sn_power_normalize", &sn_power_normalize_cpu);
  m.impl("sn_normalize_backward", &sn_normalize_backward_cpu);
}

}  // namespace fastgan
