// CPU kernel of weight clipping: one call clamps a whole parameter list in place, in a single
// vectorized pass (min and max together), split across threads by element ranges (one parallel
// region sized by the work wherever the per-tensor clamp_ loop would open one; for lists of small
// tensors only, one thread unless timing says otherwise: see run_adaptive), so one huge tensor
// and a thousand tiny ones cost one dispatch.
//
// The clamp loop (clip_kernel.h) is compiled once per ISA, like torch's kernels: here with the
// build's flags (AVX2 on an AVX2 machine) and in clip_avx512.cpp for AVX-512; the copy is picked
// once, at the first call, from torch's own choice (at::get_cpu_capability(), which honours
// ATEN_CPU_CAPABILITY) and the CPU's.
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>  // at::internal::GRAIN_SIZE, the grain of at::clamp_
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/clamp.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "../clip.h"
#include "cpu_isa.h"

#define FASTGAN_CLIP_NS clip_base
#include "clip_kernel.h"

namespace fastgan {
namespace {

// Least bytes per thread. A clamp pass is memory bound; a thread is worth waking only when its
// share takes clearly longer than the wake-up (a few us). 128 KiB is torch's own grain for
// elementwise ops (at::internal::GRAIN_SIZE = 32768 float32 elements), the grain of the clamp_
// loop this kernel replaces, so both start a second thread at the same list size.
constexpr int64_t kGrainBytes = int64_t(128) << 10;

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
    if (use_avx512_copy()) return Isa{&clip_avx512::clamp_piece, "AVX512"};
#endif
    return Isa{&clip_base::clamp_piece, kBaseIsa};
  }();
  return isa;
}

std::string clip_cpu_isa() { return clip_isa().name; }

// --- serial or parallel -------------------------------------------------------------------
// A list of at least 2 grains may use several threads (as many as it has grains). When it holds
// a tensor that torch's clamp_ would split (above at::internal::GRAIN_SIZE elements), the split
// is by work, always: the per-tensor loop this replaces opens a parallel region for that tensor
// anyway, so one region for the whole list never wakes the pool more often than the loop does.
// A list of small tensors only is different: the loop runs it on one thread, and whether waking
// a thread pays depends on the machine's state as much as on the work: an idle core wakes in
// microseconds, but when other processes hold every core, the parallel region ends only when the
// woken thread gets a time slice (milliseconds). So for those lists "adaptive" (the default)
// times both choices per size class (log2 of the list's bytes) and runs the faster,
// re-timing the other one now and then (every 16 calls, backing off to every 256 while it
// keeps losing). The result is the same either way (an elementwise clamp); only time differs.
enum Threading : int { kAdaptive = 0, kSerial = 1, kParallel = 2 };
std::atomic<int> g_threading{kAdaptive};

struct SizeClass {
  std::atomic<float> ns_per_byte[2];  // [serial, parallel]; 0: not timed yet
  std::atomic<int32_t> calls, period;
  std::atomic<int32_t> warm;  // 1: the last call ran parallel untimed, to wake the pool; time the next
};
SizeClass g_stats[64];  // zero-initialized (static storage); races between callers only blur timings

template <typename Run>
void run_adaptive(int64_t bytes, Run&& run) {
  SizeClass& sc = g_stats[63 - __builtin_clzll(static_cast<unsigned long long>(bytes))];
  const float rs = sc.ns_per_byte[0].load(std::memory_order_relaxed);
  const float rp = sc.ns_per_byte[1].load(std::memory_order_relaxed);
  const int32_t period = std::max<int32_t>(16, sc.period.load(std::memory_order_relaxed));
  const int32_t c = sc.calls.fetch_add(1, std::memory_order_relaxed);
  const bool warmed = sc.warm.exchange(0, std::memory_order_relaxed) != 0;
  bool par, explore = false;
  if (warmed) {
    par = true, explore = rp != 0 && rs != 0;  // the timed parallel run after a warm-up
  } else if (rp == 0 || (rs != 0 && rp > rs && c % period == period - 1)) {
    // Time the parallel choice (first the choice by work, later as exploration). Threads that
    // slept since their last region wake slowly; in training they rarely sleep (torch's own ops
    // keep them busy between clips), so run once untimed to wake them, and time the next call.
    sc.warm.store(1, std::memory_order_relaxed);
    run(true);
    return;
  } else if (rs == 0) {
    par = false;  // then the other
  } else {
    explore = c % period == period - 1;  // (serial, while parallel leads)
    par = (rp <= rs) != explore;
  }
  const auto t0 = std::chrono::steady_clock::now();
  run(par);
  const float r = std::chrono::duration<float, std::nano>(std::chrono::steady_clock::now() - t0).count() /
                  static_cast<float>(bytes);
  std::atomic<float>& est = sc.ns_per_byte[par];
  const float old = est.load(std::memory_order_relaxed);
  // moving average, asymmetric: timing noise only ever adds time (preemption), so a faster sample
  // counts half and a slower one a quarter, capped at twice the estimate (a preemption is not a
  // trend; a persistently slower choice still doubles its estimate within a few calls)
  const float now = old == 0 ? r : r < old ? 0.5f * (old + r) : 0.75f * old + 0.25f * std::min(r, 2 * old);
  est.store(now, std::memory_order_relaxed);
  if (explore) {
    const float other = sc.ns_per_byte[!par].load(std::memory_order_relaxed);
    sc.period.store(now > other ? std::min<int32_t>(2 * period, 256) : 16, std::memory_order_relaxed);
  }
}

// Test and benchmark hook: "adaptive", "serial" or "parallel" (by work, always); returns the
// previous setting; "" only queries. Setting a mode also forgets the adaptive timings, so that
// what follows starts from the choice by work.
std::string clip_cpu_threading(const std::string& mode) {
  static const char* names[] = {"adaptive", "serial", "parallel"};
  const int prev = g_threading.load();
  if (!mode.empty()) {
    int m = -1;
    for (int i = 0; i < 3; ++i)
      if (mode == names[i]) m = i;
    TORCH_CHECK_VALUE(m >= 0, "clip_cpu_threading: mode must be 'adaptive', 'serial' or 'parallel', got '",
                      mode, "'");
    g_threading.store(m);
    for (SizeClass& sc : g_stats) {
      sc.ns_per_byte[0] = 0, sc.ns_per_byte[1] = 0;
      sc.calls = 0, sc.period = 0, sc.warm = 0;
    }
  }
  return names[prev];
}

void fill_bounds(ClipBounds& b, at::ScalarType dt, double lo, double hi) {
  switch (dt) {
    case at::kDouble: b.f64[0] = lo, b.f64[1] = hi; break;
    case at::kFloat: std::tie(b.f32[0], b.f32[1]) = clip_bounds<float>(lo, hi); break;
    case at::kHalf: std::tie(b.f16[0], b.f16[1]) = clip_bounds<at::Half>(lo, hi); break;
    case at::kBFloat16: std::tie(b.bf16[0], b.bf16[1]) = clip_bounds<at::BFloat16>(lo, hi); break;
    default: break;
  }
}

// Test-only introspection (tests/test_kernel_edges.py): elements clamped by the span path, summed
// over threads. Every thread must visit exactly its own range; one that re-scanned from the first
// span would clamp elements twice, which no output can show (clamp is idempotent). One relaxed
// atomic add per thread per call.
std::atomic<int64_t> g_span_elements{0};

int64_t clip_span_elements() { return g_span_elements.load(); }

// Test-only, likewise: calls that split the list between threads (one parallel region each).
std::atomic<int64_t> g_parallel_calls{0};

int64_t clip_parallel_calls() { return g_parallel_calls.load(); }

void run_parallel(int64_t total, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  g_parallel_calls.fetch_add(1, std::memory_order_relaxed);
  at::parallel_for(0, total, grain, body);
}

void clip_weights_cpu(at::TensorList tensors, double lo, double hi) {
  clip_check_args(tensors, lo, hi, c10::DeviceType::CPU);
  std::vector<ClipSpan> spans;
  spans.reserve(tensors.size());
  ClipBounds b{};
  bool filled[4] = {false, false, false, false};  // double, float, half, bfloat16
  int64_t total = 0, bytes = 0;
  bool loop_splits = false;  // a tensor at::clamp_ would split between threads
  for (const at::Tensor& t : tensors) {
    if (t.numel() == 0) continue;
    if (clip_as_span(t)) {
      const auto dt = t.scalar_type();
      const int k = dt == at::kDouble ? 0 : dt == at::kFloat ? 1 : dt == at::kHalf ? 2 : 3;
      if (!filled[k]) fill_bounds(b, dt, lo, hi), filled[k] = true;
      spans.push_back({t.data_ptr(), total, dt});
      total += t.numel();
      bytes += t.numel() * static_cast<int64_t>(t.element_size());
      loop_splits |= t.numel() > at::internal::GRAIN_SIZE;
    } else {
      at::clamp_(const_cast<at::Tensor&>(t), lo, hi);  // strided views
    }
  }
  clip_bump_versions(tensors);
  if (total == 0) return;
  const ClipPieceFn piece = clip_isa().fn;
  // Each range is clamped from its end backwards: the step that wrote the weights before the clip
  // (the optimizer's, sweeping the list forwards) leaves the end of the list in cache, so going
  // backwards starts on cached lines and reaches the evicted ones last (8-15 % less time on 3-12 MB
  // lists, benchmarks/NOTES.md).
  auto body = [&](int64_t r0, int64_t r1) {
    // the span that holds element r1 - 1, the range's last
    auto it = std::upper_bound(spans.begin(), spans.end(), r1 - 1,
                               [](int64_t v, const ClipSpan& s) { return v < s.begin; }) - 1;
    int64_t visited = 0;
    for (int64_t r = r1; r > r0; --it) {
      const int64_t start = std::max(it->begin, r0);
      piece(*it, start - it->begin, r - start, b);
      visited += r - start;
      r = start;
    }
    g_span_elements.fetch_add(visited, std::memory_order_relaxed);
  };
  // elements per thread at least: kGrainBytes at the list's mean element size
  const int64_t grain = std::max<int64_t>(1, total * kGrainBytes / bytes);
  const int mode = g_threading.load(std::memory_order_relaxed);
  if (mode == kSerial || bytes < 2 * kGrainBytes || at::get_num_threads() < 2 || at::in_parallel_region()) {
    body(0, total);
  } else if (mode == kParallel || loop_splits) {
    // A tensor the per-tensor clamp_ loop would split (torch parallelizes one above its grain):
    // the loop wakes the thread pool for it anyway, once per such tensor, where this opens one
    // region for the whole list: never more wake-ups than the loop, and the work split evenly.
    run_parallel(total, grain, body);
  } else {
    // only small tensors, which the loop clamps on one thread: split only where timing says so
    run_adaptive(bytes, [&](bool par) { par ? run_parallel(total, grain, body) : body(0, total); });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) { m.impl("clip_weights_", &clip_weights_cpu); }

// Clipping records no autograd history (like p.data.clamp_): autograd falls through to the
// kernels, which bump the version counters themselves. Callers need no torch.no_grad() (whose
// enter and exit cost more than dispatching a small list), and the warning autograd fallback
// never wraps a mutated non-leaf in a "not implemented" node.
TORCH_LIBRARY_IMPL(fastgan, Autograd, m) { m.impl("clip_weights_", torch::CppFunction::makeFallthrough()); }

// Which copy of the clamp loop clip_weights_ runs on this CPU: "AVX512", "AVX2" or "DEFAULT".
TORCH_LIBRARY_FRAGMENT(fastgan, m) {
  m.def("clip_cpu_isa() -> str", &clip_cpu_isa);
  m.def("clip_cpu_threading(str mode) -> str", &clip_cpu_threading);
}
// No tensor arguments: reachable from any dispatch key.
TORCH_LIBRARY_IMPL(fastgan, CompositeImplicitAutograd, m) {
  m.impl("_clip_span_elements", &clip_span_elements);
  m.impl("_clip_parallel_calls", &clip_parallel_calls);
}

}  // namespace fastgan
