// The hot loops of the CPU spectral-norm kernels (csrc/cpu/spectral_norm.cpp), compiled once per
// ISA like torch's kernels: in spectral_norm.cpp with the build's flags (AVX2 on an AVX2 machine)
// and in sn_avx512.cpp for AVX-512 (at::vec::Vectorized is 8 or 16 floats wide); spectral_norm.cpp
// picks one copy at the first call (at::get_cpu_capability(), which honours ATEN_CPU_CAPABILITY).
// No include guard: each including file sets FASTGAN_SN_NS and includes it once.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../sn_layout.h"

namespace fastgan {
namespace FASTGAN_SN_NS {

using at::vec::Vectorized;

// Elements of W per parallel task; smaller layers run on the calling thread.
constexpr int64_t kGrain = 32768;
// Elements of W per chunk of the power-iteration sweep (512 KB of float32): W v and W^T (W v)
// read it while it is in L2.
constexpr int64_t kChunk = 131072;
// Columns of the W^T t partial sums updated per sweep over a chunk's rows (L1-resident).
constexpr int64_t kColBlock = 512;

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
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
inline void axpy4(T* y, const T* x0, const T* x1, const T* x2, const T* x3, T c0, T c1, T c2, T c3, int64_t n) {
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
inline void axpy(T* y, const T* x, T c, int64_t n) {
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

// Whether x * (1 / s) may stand for x / s: s and 1 / s both normal (no overflow to inf, no
// subnormal; 0, inf and NaN sigmas keep the division, whose NaN/inf results differ).
template <typename T>
inline bool reciprocal_ok(T s) {
  return std::isnormal(s) && std::isnormal(T(1) / s);
}

// dst = src / s over [0, n), split across threads by kGrain (T = float or double), computed as
// src * (1 / s): within an ulp of the quotient (torch's own CPU kernel does this for half and
// bfloat16), and the vector divider, which both hyperthreads of a core share, was the bottleneck:
// a division costs ~5-10 cycles per vector, a multiplication ~0.5 (measured: W / sigma of the
// SNGAN critic's 264k weights took as long on 2 threads as on 1).
template <typename T>
void divide(const T* src, T* dst, int64_t n, T s) {
  const bool mul = reciprocal_ok(s);
  const T r = T(1) / s;
  at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    using Vec = Vectorized<T>;
    int64_t i = i0;
    if (mul) {
      const Vec rv(r);
      for (; i + Vec::size() <= i1; i += Vec::size()) (Vec::loadu(src + i) * rv).store(dst + i);
      for (; i < i1; ++i) dst[i] = src[i] * r;
    } else {
      const Vec sv(s);
      for (; i + Vec::size() <= i1; i += Vec::size()) (Vec::loadu(src + i) / sv).store(dst + i);
      for (; i < i1; ++i) dst[i] = src[i] / s;
    }
  });
}

// dW = g / s - c u v^T (laid out like W: rows (a, i) of K elements), c = <g, W> / s^2.
template <typename T>
void normalize_backward(const T* gp, const T* wp, const T* up, const T* vp, T* op, const SnMat& m, T s) {
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
  const T c = gw / (s * s);
  // g / s as g * (1 / s) where that is safe (see divide)
  const bool mul = reciprocal_ok(s);
  const T rs = T(1) / s;
  at::parallel_for(0, rows, rb, [&](int64_t r0, int64_t r1) {
    using Vec = Vectorized<T>;
    const Vec sv(s), rv(rs);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t a = r / m.h, i = r % m.h;
      const T cu = c * up[i];
      const Vec cuv(cu);
      const T* gr = gp + r * m.K;
      const T* vr = vp + a * m.K;
      T* o = op + r * m.K;
      int64_t k = 0;
      if (mul) {
        for (; k + Vec::size() <= m.K; k += Vec::size())
          (Vec::loadu(gr + k) * rv - cuv * Vec::loadu(vr + k)).store(o + k);
        for (; k < m.K; ++k) o[k] = gr[k] * rs - cu * vr[k];
      } else {
        for (; k + Vec::size() <= m.K; k += Vec::size())
          (Vec::loadu(gr + k) / sv - cuv * Vec::loadu(vr + k)).store(o + k);
        for (; k < m.K; ++k) o[k] = gr[k] / s - cu * vr[k];
      }
    }
  });
}

// The entry points spectral_norm.cpp calls through its per-ISA table (external: defined once per
// including file, each in its own namespace).
float power_f(const float* W, const SnMat& m, float* u, float* v, int64_t n_iter, double eps) {
  return power_layer(W, m, u, v, n_iter, eps);
}
double power_d(const double* W, const SnMat& m, double* u, double* v, int64_t n_iter, double eps) {
  return power_layer(W, m, u, v, n_iter, eps);
}
void divide_f(const float* src, float* dst, int64_t n, float s) { divide(src, dst, n, s); }
void divide_d(const double* src, double* dst, int64_t n, double s) { divide(src, dst, n, s); }
void backward_f(const float* g, const float* w, const float* u, const float* v, float* o, const SnMat& m,
                       float s) {
  normalize_backward(g, w, u, v, o, m, s);
}
void backward_d(const double* g, const double* w, const double* u, const double* v, double* o,
                       const SnMat& m, double s) {
  normalize_backward(g, w, u, v, o, m, s);
}

}  // namespace FASTGAN_SN_NS
}  // namespace fastgan
