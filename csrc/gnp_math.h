// Per-sample scalar math of the gradient-norm penalty, shared by the CPU and CUDA kernels so that
// every backend computes phi and its derivative with the same formula as the eager reference
// (fastgan/reference.py).
#pragma once
#include <c10/macros/Macros.h>
#include <cmath>

namespace fastgan {

// t = 0, p = 2 is the R1/R2 penalty: phi = sum of squares, gradient 2g, no square root.
C10_HOST_DEVICE inline bool gnp_is_sumsq(double target, double power, bool one_sided) {
  return target == 0.0 && power == 2.0 && !one_sided;
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t gnp_phi(acc_t sumsq, acc_t norm, acc_t t, acc_t p, bool one_sided) {
  if (t == acc_t(0) && p == acc_t(2) && !one_sided) return sumsq;
  acc_t d = norm - t;
  if (one_sided) d = d < acc_t(0) ? acc_t(0) : d;  // NaN stays NaN
  else d = d < acc_t(0) ? -d : d;
  return p == acc_t(2) ? d * d : ::pow(d, p);
}

// c such that dL/dg_i = c * g_i, for upstream gradient gphi of phi_i.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t gnp_coef(acc_t gphi, acc_t norm, acc_t t, acc_t p, bool one_sided) {
  if (t == acc_t(0) && p == acc_t(2) && !one_sided) return acc_t(2) * gphi;
  // d||g||/dg = g/||g|| except at a zero row, where eager torch's norm backward gives 0.
  if (norm == acc_t(0)) return acc_t(0);
  acc_t d = norm - t;
  acc_t dphi;
  if (one_sided) {
    if (d < acc_t(0)) return acc_t(0);
    dphi = p == acc_t(2) ? acc_t(2) * d : p * ::pow(d, p - acc_t(1));
  } else {
    acc_t sign = d > acc_t(0) ? acc_t(1) : (d < acc_t(0) ? acc_t(-1) : acc_t(0));
    acc_t a = d < acc_t(0) ? -d : d;
    dphi = p == acc_t(2) ? acc_t(2) * d : p * ::pow(a, p - acc_t(1)) * sign;
  }
  return gphi * dphi / norm;
}

}  // namespace fastgan
