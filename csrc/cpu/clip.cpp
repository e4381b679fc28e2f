// CPU kernel of weight clipping: one call clamps a whole parameter list in place, in a single
// vectorized pass (min and max together) split across threads by element ranges, so one huge
// tensor and a thousand tiny ones both run in one parallel region sized by the work.
//
// The clamp loop (clip_kernel.h) is compiled once per ISA, like torch's kernels: here with the
// build's flags (AVX2 on an AVX2 machine) and in clip_avx512.cpp for AVX-512; the copy is picked
// once, at the first call, from torch's own choice (at::get_cpu_capability(), which honours
// ATEN_CPU_CAPABILITY) and the CPU's.
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/clamp.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../clip.h"

#define FASTGAN_CLIP_NS clip_base
#include "clip_kernel.h"

namespace fastgan {
namespace {

// Least bytes per thread. A clamp pass is memory bound; a thread is worth waking only when its
// share takes clearly longer than the wake-up (a few us). 128 KiB is torch's own grain for
// elementwise ops (at::internal::GRAIN_SIZE = 32768 float32 elements), the grain of the clamp_
// loop this kernel replaces, so both start a second thread at the same list size.
constexpr int64_t kGrainBytes = int64_t(128) << 10;

bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

struct Isa {
  ClipPieceFn fn;
  const char* name;
};

// The base copy's ISA, from the flags this file was compiled with.
constexpr const char* kBaseIsa =
#if defined(CPU_CAPABILITY_AVX512)
    "AVX512";
#elif defined(CPU_CAPABILITY_AVX2)
    "AVX2";
#else
    "DEFAULT";
#endif

const Isa& clip_isa() {
  static const Isa isa = [] {
#if defined(FASTGAN_CPU_AVX512)
    if (at::get_cpu_capability() == "AVX512" && cpu_has_avx512()) return Isa{&clip_avx512::clamp_piece, "AVX512"};
#endif
    return Isa{&clip_base::clamp_piece, kBaseIsa};
  }();
  return isa;
}

std::string clip_cpu_isa() { return clip_isa().name; }

void fill_bounds(ClipBounds& b, at::ScalarType dt, double lo, double hi) {
  switch (dt) {
    case at::kDouble: b.f64[0] = lo, b.f64[1] = hi; break;
    case at::kFloat: std::tie(b.f32[0], b.f32[1]) = clip_bounds<float>(lo, hi); break;
    case at::kHalf: std::tie(b.f16[0], b.f16[1]) = clip_bounds<at::Half>(lo, hi); break;
    case at::kBFloat16: std::tie(b.bf16[0], b.bf16[1]) = clip_bounds<at::BFloat16>(lo, hi); break;
    default: break;
  }
}

void clip_weights_cpu(at::TensorList tensors, double lo, double hi) {
  clip_check_args(tensors, lo, hi, c10::DeviceType::CPU);
  std::vector<ClipSpan> spans;
  spans.reserve(tensors.size());
  ClipBounds b{};
  bool filled[4] = {false, false, false, false};  // double, float, half, bfloat16
  int64_t total = 0, bytes = 0;
  for (const at::Tensor& t : tensors) {
    if (t.numel() == 0) continue;
    if (clip_as_span(t)) {
      const auto dt = t.scalar_type();
      const int k = dt == at::kDouble ? 0 : dt == at::kFloat ? 1 : dt == at::kHalf ? 2 : 3;
      if (!filled[k]) fill_bounds(b, dt, lo, hi), filled[k] = true;
      spans.push_back({t.data_ptr(), total, dt});
      total += t.numel();
      bytes += t.numel() * static_cast<int64_t>(t.element_size());
    } else {
      at::clamp_(const_cast<at::Tensor&>(t), lo, hi);  // strided views
    }
  }
  clip_bump_versions(tensors);
  if (total == 0) return;
  // elements per thread at least: kGrainBytes at the list's mean element size
  const int64_t grain = std::max<int64_t>(1, total * kGrainBytes / bytes);
  const ClipPieceFn piece = clip_isa().fn;
  at::parallel_for(0, total, grain, [&](int64_t r0, int64_t r1) {
    // first span that contains element r0
    auto it = std::upper_bound(spans.begin(), spans.end(), r0,
                               [](int64_t v, const ClipSpan& s) { return v < s.begin; }) - 1;
    for (int64_t r = r0; r < r1; ++it) {
      const int64_t end = (it + 1 == spans.end()) ? total : (it + 1)->begin;
      const int64_t n = std::min(end, r1) - r;
      piece(*it, r - it->begin, n, b);
      r += n;
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) { m.impl("clip_weights_", &clip_weights_cpu); }

// Clipping records no autograd history (like p.data.clamp_): autograd falls through to the
// kernels, which bump the version counters themselves. Callers need no torch.no_grad() (whose
// enter and exit cost more than dispatching a small list), and the warning autograd fallback
// never wraps a mutated non-leaf in a "not implemented" node.
TORCH_LIBRARY_IMPL(fastgan, Autograd, m) { m.impl("clip_weights_", torch::CppFunction::makeFallthrough()); }

// Which copy of the clamp loop clip_weights_ runs on this CPU: "AVX512", "AVX2" or "DEFAULT".
TORCH_LIBRARY_FRAGMENT(fastgan, m) { m.def("clip_cpu_isa() -> str", &clip_cpu_isa); }

}  // namespace fastgan
