// What csrc/cpu/clip.cpp hands to the per-ISA clamp loops (csrc/cpu/clip_kernel.h): plain data,
// no ISA-specific types, so the ISA copies and their caller agree whatever each was compiled for.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fastgan {

struct ClipSpan {
  void* ptr;
  int64_t begin;  // index of the span's first element in the concatenation of all spans
  at::ScalarType dtype;
};

// The bounds in each dtype of the list (only those present are filled: a bound need not fit a
// dtype the list does not hold, e.g. 7e4 and float16).
struct ClipBounds {
  double f64[2];
  float f32[2];
  at::Half f16[2];
  at::BFloat16 bf16[2];
};

using ClipPieceFn = void (*)(const ClipSpan&, int64_t off, int64_t n, const ClipBounds&);

// One copy per ISA; clip_avx512 exists when the extension was built on an AVX-512 machine.
namespace clip_base {
void clamp_piece(const ClipSpan& s, int64_t off, int64_t n, const ClipBounds& b);
}
namespace clip_avx512 {
void clamp_piece(const ClipSpan& s, int64_t off, int64_t n, const ClipBounds& b);
}

}  // namespace fastgan
