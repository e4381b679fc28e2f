// CPU kernel of weight clipping: one call clamps a whole parameter list in place, in a single
// vectorized pass (min and max together) split across threads by element ranges, so one huge
// tensor and a thousand tiny ones both keep every core busy with one parallel region.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/clamp.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "../clip.h"

namespace fastgan {
namespace {

using at::vec::Vectorized;

// Least elements per thread. A clamp pass is memory bound: on the 2-core build machine a second
// thread gained nothing below ~1M in-cache fp32 elements even when idle (p10 82 us either way),
// while waking it cost up to milliseconds when the machine was busy. Lists smaller than this run
// on the calling thread; each thread gets a contiguous range of the concatenated list.
constexpr int64_t kGrain = int64_t(1) << 20;

template <typename scalar_t>
void clamp_span(scalar_t* p, int64_t n, scalar_t lo, scalar_t hi) {
  using Vec = Vectorized<scalar_t>;
  constexpr int64_t W = Vec::size();
  int64_t i = 0;
  if constexpr (at::vec::is_reduced_floating_point_v<scalar_t>) {
    // the bounds are exact in float, so clamping in float then rounding back is exact too
    const Vectorized<float> lv(static_cast<float>(lo)), hv(static_cast<float>(hi));
    for (; i + W <= n; i += W) {
      auto [x0, x1] = at::vec::convert_to_float<scalar_t>(Vec::loadu(p + i));
      at::vec::convert_from_float<scalar_t>(at::vec::clamp(x0, lv, hv), at::vec::clamp(x1, lv, hv)).store(p + i);
    }
  } else {
    const Vec lv(lo), hv(hi);
    for (; i + 2 * W <= n; i += 2 * W) {
      Vec x0 = Vec::loadu(p + i), x1 = Vec::loadu(p + i + W);
      at::vec::clamp(x0, lv, hv).store(p + i);
      at::vec::clamp(x1, lv, hv).store(p + i + W);
    }
  }
  for (; i < n; ++i) {
    // comparisons with NaN are false: NaN stays NaN, as in at::clamp
    scalar_t x = p[i];
    if (x < lo) x = lo;
    if (x > hi) x = hi;
    p[i] = x;
  }
}

struct Span {
  void* ptr;
  int64_t begin;  // index of the span's first element in the concatenation of all spans
  at::ScalarType dtype;
};

struct Bounds {
  std::pair<double, double> f64;
  std::pair<float, float> f32;
  std::pair<at::Half, at::Half> f16;
  std::pair<at::BFloat16, at::BFloat16> bf16;
};

void clamp_piece(const Span& s, int64_t off, int64_t n, const Bounds& b) {
  switch (s.dtype) {
    case at::kDouble:
      return clamp_span(static_cast<double*>(s.ptr) + off, n, b.f64.first, b.f64.second);
    case at::kFloat:
      return clamp_span(static_cast<float*>(s.ptr) + off, n, b.f32.first, b.f32.second);
    case at::kHalf:
      return clamp_span(static_cast<at::Half*>(s.ptr) + off, n, b.f16.first, b.f16.second);
    case at::kBFloat16:
      return clamp_span(static_cast<at::BFloat16*>(s.ptr) + off, n, b.bf16.first, b.bf16.second);
    default:
      TORCH_CHECK(false, "clip_weights_: unsupported dtype ", s.dtype);  // excluded by clip_check_args
  }
}

// Test-only introspection (tests/test_kernel_edges.py): elements clamped by the span path, summed
// over threads. Every thread must visit exactly its own range; one that re-scanned from the first
// span would clamp elements twice, which no output can show (clamp is idempotent). One relaxed
// atomic add per thread per call.
std::atomic<int64_t> g_span_elements{0};

int64_t clip_span_elements() { return g_span_elements.load(); }

void clip_weights_cpu(at::TensorList tensors, double lo, double hi) {
  clip_check_args(tensors, lo, hi, c10::DeviceType::CPU);
  std::vector<Span> spans;
  spans.reserve(tensors.size());
  int64_t total = 0;
  for (const at::Tensor& t : tensors) {
    if (t.numel() == 0) continue;
    if (clip_as_span(t)) {
      spans.push_back({t.data_ptr(), total, t.scalar_type()});
      total += t.numel();
    } else {
      at::clamp_(const_cast<at::Tensor&>(t), lo, hi);  // strided views
    }
  }
  clip_bump_versions(tensors);
  if (total == 0) return;
  const Bounds b{clip_bounds<double>(lo, hi), clip_bounds<float>(lo, hi), clip_bounds<at::Half>(lo, hi),
                 clip_bounds<at::BFloat16>(lo, hi)};
  at::parallel_for(0, total, kGrain, [&](int64_t r0, int64_t r1) {
    // first span that contains element r0
    auto it = std::upper_bound(spans.begin(), spans.end(), r0,
                               [](int64_t v, const Span& s) { return v < s.begin; }) - 1;
    int64_t visited = 0;
    for (int64_t r = r0; r < r1; ++it) {
      const int64_t end = (it + 1 == spans.end()) ? total : (it + 1)->begin;
      const int64_t n = std::min(end, r1) - r;
      clamp_piece(*it, r - it->begin, n, b);
      r += n;
      visited += n;
    }
    g_span_elements.fetch_add(visited, std::memory_order_relaxed);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) { m.impl("clip_weights_", &clip_weights_cpu); }

// No tensor arguments: reachable from any dispatch key.
TORCH_LIBRARY_IMPL(fastgan, CompositeImplicitAutograd, m) { m.impl("_clip_span_elements", &clip_span_elements); }

}  // namespace fastgan
