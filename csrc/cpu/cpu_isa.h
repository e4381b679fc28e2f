// Whether a kernel file's AVX-512 copy may run: torch's own choice (at::get_cpu_capability(), which
// honours ATEN_CPU_CAPABILITY) is AVX512 and the CPU has every extension the copy is built for.
// Included by files built with the base flags only (never by an AVX-512 copy: avx512_target.h).
#pragma once
#include <ATen/Version.h>

namespace fastgan {

inline bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

inline bool use_avx512_copy() { return at::get_cpu_capability() == "AVX512" && cpu_has_avx512(); }

}  // namespace fastgan
