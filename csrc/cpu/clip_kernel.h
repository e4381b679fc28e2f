// The clamp loop of the CPU weight-clipping kernel, compiled once per ISA (as torch compiles its
// kernels once per CPU_CAPABILITY): csrc/cpu/clip.cpp includes it with the build's flags (AVX2 on
// an AVX2 machine), csrc/cpu/clip_avx512.cpp with AVX-512 enabled. Each includer first defines
// FASTGAN_CLIP_NS, the namespace the copy lives in, so the copies never collide at link time;
// at::vec::Vectorized is itself in an inline namespace named after CPU_CAPABILITY.
#pragma once
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "clip_span.h"

namespace fastgan {
namespace FASTGAN_CLIP_NS {

using at::vec::Vectorized;

// Clamps p[0, n) from the end backwards (see the caller, clip.cpp): first the scalar tail past the
// last whole step, then whole steps from the end down to p, so vectors stay aligned as p is.
template <typename scalar_t>
inline void clamp_span(scalar_t* p, int64_t n, scalar_t lo, scalar_t hi) {
  using Vec = Vectorized<scalar_t>;
  constexpr int64_t W = Vec::size();
  constexpr int64_t step = at::vec::is_reduced_floating_point_v<scalar_t> ? W : 2 * W;
  const int64_t m = n - n % step;  // [0, m): whole steps; [m, n): the tail
  for (int64_t i = m; i < n; ++i) {
    // comparisons with NaN are false: NaN stays NaN, as in at::clamp
    scalar_t x = p[i];
    if (x < lo) x = lo;
    if (x > hi) x = hi;
    p[i] = x;
  }
  if constexpr (at::vec::is_reduced_floating_point_v<scalar_t>) {
    // the bounds are exact in float, so clamping in float then rounding back is exact too
    const Vectorized<float> lv(static_cast<float>(lo)), hv(static_cast<float>(hi));
    for (int64_t i = m - W; i >= 0; i -= W) {
      auto [x0, x1] = at::vec::convert_to_float<scalar_t>(Vec::loadu(p + i));
      at::vec::convert_from_float<scalar_t>(at::vec::clamp(x0, lv, hv), at::vec::clamp(x1, lv, hv)).store(p + i);
    }
  } else {
    const Vec lv(lo), hv(hi);
    for (int64_t i = m - 2 * W; i >= 0; i -= 2 * W) {
      Vec x0 = Vec::loadu(p + i), x1 = Vec::loadu(p + i + W);
      at::vec::clamp(x0, lv, hv).store(p + i);
      at::vec::clamp(x1, lv, hv).store(p + i + W);
    }
  }
}

// Clamps elements [off, off + n) of span s.
void clamp_piece(const ClipSpan& s, int64_t off, int64_t n, const ClipBounds& b) {
  switch (s.dtype) {
    case at::kDouble:
      return clamp_span(static_cast<double*>(s.ptr) + off, n, b.f64[0], b.f64[1]);
    case at::kFloat:
      return clamp_span(static_cast<float*>(s.ptr) + off, n, b.f32[0], b.f32[1]);
    case at::kHalf:
      return clamp_span(static_cast<at::Half*>(s.ptr) + off, n, b.f16[0], b.f16[1]);
    case at::kBFloat16:
      return clamp_span(static_cast<at::BFloat16*>(s.ptr) + off, n, b.bf16[0], b.bf16[1]);
    default:
      break;  // excluded by clip_check_args
  }
}

}  // namespace FASTGAN_CLIP_NS
}  // namespace fastgan
