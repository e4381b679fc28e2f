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
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "block_cache.h"
#include "../sn_layout.h"

namespace fastgan {
namespace {

using at::vec::Vectorized;

// Elements of W per parallel task; smaller layers run on the calling thread.
constexpr int64_t kGrain = 32768;
// Elements of W per chunk of the power-iteration sweep (512 KB of float32): W v and W^T (W v)
// read it while it is in L2.
constexpr int64_t kChunk = 131072;
// Columns of the W^T t partial sums updated per sweep over a chunk's rows (L1-resident).
constexpr int64_t kColBlock = 512;

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  Vec a0(T(0)), a1(T(0)), a2(T(0)), a3(T(0));
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 = at::vec::fmadd(Vec::loadu(a + i), Vec::loadu(b + i), a0);
    a1 = at::vec::fmadd(Vec::loadu(a + i + W), Vec::loadu(b + i + W), a1);
    a2 = at::vec::fmadd(Vec::loadu(a + i + 2 * W), Vec::loadu(b + i + 2 * W), a2);
    a3 = at::vec::fmadd(Vec::loadu(a + i + 3 * W), Vec::loadu(b + i + 3 * W), a3);
  }
  for (; i + W <= n; i += W) a0 = at::vec::fmadd(Vec::loadu(a + i), Vec::loadu(b + i), a0);
  Vec acc = (a0 + a1) + (a2 + a3);
  T lanes[Vec::size()];
  acc.store(lanes);
  T s = 0;
  for (int64_t k = 0; k < W; ++k) s += lanes[k];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y += c0 x0 + c1 x1 + c2 x2 + c3 x3 (four rows per sweep over y)
template <typename T>
void axpy4(T* y, const T* x0, const T* x1, const T* x2, const T* x3, T c0, T c1, T c2, T c3, int64_t n) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  Vec v0(c0), v1(c1), v2(c2), v3(c3);
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    Vec acc = Vec::loadu(y + j);
    acc = at::vec::fmadd(Vec::loadu(x0 + j), v0, acc);
    acc = at::vec::fmadd(Vec::loadu(x1 + j), v1, acc);
    acc = at::vec::fmadd(Vec::loadu(x2 + j), v2, acc);
    acc = at::vec::fmadd(Vec::loadu(x3 + j), v3, acc);
    acc.store(y + j);
  }
  for (; j < n; ++j) y[j] += x0[j] * c0 + x1[j] * c1 + x2[j] * c2 + x3[j] * c3;
}

template <typename T>
void axpy(T* y, const T* x, T c, int64_t n) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  Vec cv(c);
  int64_t j = 0;
  for (; j + W <= n; j += W) at::vec::fmadd(Vec::loadu(x + j), cv, Vec::loadu(y + j)).store(y + j);
  for (; j < n; ++j) y[j] += x[j] * c;
}

// t = W_mat v
template <typename T>
void mat_vec(const T* W, const SnMat& m, const T* v, T* t) {
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(m.cols(), 1));
  at::parallel_for(0, m.h, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T acc = 0;
      for (int64_t a = 0; a < m.A; ++a) acc += dot(W + (a * m.h + i) * m.K, v + a * m.K, m.K);
      t[i] = acc;
    }
  });
}

// One power iteration in ONE sweep over W: rows are taken in cache-sized chunks; each chunk gives
// t = W_c v (its rows of W v) and, while W_c is still in cache, adds W_c^T t into its own slice of
// partial sums. Since u = t / d with d = max(|t|, eps), W^T u = (sum over chunks of W_c^T t_c) / d.
// Chunk boundaries do not depend on the thread count, and partials are added in chunk order, so
// the result is deterministic. Returns |s|^2 with s = W^T u left in v (not yet normalized).
template <typename T>
T sweep(const T* W, const SnMat& m, T* u, T* v, std::vector<T>& partial, double eps) {
  const int64_t w = m.cols();
  const int64_t rows = std::max<int64_t>(1, kChunk / std::max<int64_t>(w, 1));
  const int64_t chunks = (m.h + rows - 1) / rows;
  partial.assign(chunks * w, T(0));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i0 = c * rows, i1 = std::min(m.h, i0 + rows);
      T* ps = partial.data() + c * w;
      for (int64_t i = i0; i < i1; ++i) {
        T acc = 0;
        for (int64_t a = 0; a < m.A; ++a) acc += dot(W + (a * m.h + i) * m.K, v + a * m.K, m.K);
        u[i] = acc;
      }
      // column blocks keep their slice of the partial sums in L1
      for (int64_t a = 0; a < m.A; ++a) {
        for (int64_t k0 = 0; k0 < m.K; k0 += kColBlock) {
          const int64_t len = std::min(kColBlock, m.K - k0);
          const T* base = W + a * m.h * m.K + k0;
          T* out = ps + a * m.K + k0;
          int64_t i = i0;
          for (; i + 4 <= i1; i += 4)
            axpy4(out, base + i * m.K, base + (i + 1) * m.K, base + (i + 2) * m.K, base + (i + 3) * m.K, u[i],
                  u[i + 1], u[i + 2], u[i + 3], len);
          for (; i < i1; ++i) axpy(out, base + i * m.K, u[i], len);
        }
      }
    }
  });
  const T d = std::max(std::sqrt(dot(u, u, m.h)), static_cast<T>(eps));
  for (int64_t i = 0; i < m.h; ++i) u[i] = u[i] / d;
  // s = (sum of partials) / d, by column blocks, chunks in order
  at::parallel_for(0, w, std::max<int64_t>(1, kGrain / std::max<int64_t>(chunks, 1)), [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      T acc = 0;
      for (int64_t c = 0; c < chunks; ++c) acc += partial[c * w + j];
      v[j] = acc / d;
    }
  });
  return dot(v, v, w);
}

// One layer: u, v hold the current vectors and are updated in place; returns sigma.
template <typename T>
T power_layer(const T* W, const SnMat& m, T* u, T* v, int64_t n_iter, double eps) {
  if (n_iter == 0) {
    std::vector<T> t(m.h);
    mat_vec(W, m, v, t.data());
    return dot(u, t.data(), m.h);
  }
  T sigma = 0;
  std::vector<T> partial;
  for (int64_t it = 0; it < n_iter; ++it) {
    const T ss = sweep(W, m, u, v, partial, eps);
    const T d = std::max(std::sqrt(ss), static_cast<T>(eps));
    for (int64_t j = 0; j < m.cols(); ++j) v[j] = v[j] / d;
    sigma = ss / d;  // u^T W v = s.v = |s|^2 / max(|s|, eps)
  }
  return sigma;
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "sn_normalize_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const acc_t s = static_cast<acc_t>(sigma);
    const scalar_t* src = w.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
      if constexpr (std::is_same_v<scalar_t, acc_t>) {
        using Vec = Vectorized<acc_t>;
        const Vec sv(s);
        int64_t i = i0;
        for (; i + Vec::size() <= i1; i += Vec::size()) (Vec::loadu(src + i) / sv).store(dst + i);
        for (; i < i1; ++i) dst[i] = src[i] / s;
      } else {
        for (int64_t i = i0; i < i1; ++i) dst[i] = static_cast<scalar_t>(static_cast<acc_t>(src[i]) / s);
      }
    });
  });
}

// W / sigma: any dense layout (channels_last, ...) is read and written in its own order; W/sigma is
// rebuilt every forward, so its storage comes from the block cache (no page faults).
at::Tensor normalized(const at::Tensor& weight, double sigma) {
  at::Tensor w = weight.is_non_overlapping_and_dense() ? weight : weight.contiguous();
  at::Tensor out = cpu_empty_strided_cached(w.sizes(), w.strides(), w.scalar_type());
  divide_into(w, out, sigma);
  return out;
}

at::Tensor sn_normalize_cpu(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v,
                            const at::Tensor& sigma, int64_t dim) {
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()), "sn_normalize: weight must be floating point, got ",
              weight.scalar_type());
  return normalized(weight, sigma_value(sigma));
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
    src[l] = wl.is_non_overlapping_and_dense() ? wl : wl.contiguous();
    // W / sigma keeps W's dense layout (channels_last, ...); from the block cache (no page faults)
    outs[l] = cpu_empty_strided_cached(src[l].sizes(), src[l].strides(), wl.scalar_type());
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
    const int64_t rows = m.A * m.h;  // (a, i) rows of K elements
    // <grad, W> over fixed row blocks, added in order: independent of the thread count
    const int64_t rb = std::max<int64_t>(1, kGrain / std::max<int64_t>(m.K, 1));
    const int64_t nblk = (rows + rb - 1) / rb;
    std::vector<T> part(nblk);
    at::parallel_for(0, nblk, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * rb, r1 = std::min(rows, r0 + rb);
        part[b] = dot(gp + r0 * m.K, wp + r0 * m.K, (r1 - r0) * m.K);
      }
    });
    T gw = 0;
    for (T p : part) gw += p;
    const T s = static_cast<T>(sig);
    const T c = gw / (s * s);
    at::parallel_for(0, rows, rb, [&](int64_t r0, int64_t r1) {
      using Vec = Vectorized<T>;
      const Vec sv(s);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t a = r / m.h, i = r % m.h;
        const T cu = c * up[i];
        const Vec cuv(cu);
        const T* gr = gp + r * m.K;
        const T* vr = vp + a * m.K;
        T* o = op + r * m.K;
        int64_t k = 0;
        for (; k + Vec::size() <= m.K; k += Vec::size())
          (Vec::loadu(gr + k) / sv - cuv * Vec::loadu(vr + k)).store(o + k);
        for (; k < m.K; ++k) o[k] = gr[k] / s - cu * vr[k];
      }
    });
  });
  return out.to(weight.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("sn_power", &sn_power_cpu);
  m.impl("sn_normalize", &sn_normalize_cpu);
  m.impl("sn_normalize_list", &sn_normalize_list_cpu);
  m.impl("sn_power_normalize", &sn_power_normalize_cpu);
  m.impl("sn_normalize_backward", &sn_normalize_backward_cpu);
}

}  // namespace fastgan
