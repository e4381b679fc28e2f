// The AVX-512 copy of the spectral-norm loops (csrc/cpu/sn_kernel.h), built only when setup.py finds
// AVX-512 on the build machine (FASTGAN_CPU_AVX512), and picked at run time by spectral_norm.cpp
// when the CPU (and ATEN_CPU_CAPABILITY) allows: the same scheme as clip_avx512.cpp, which says
// why the target pragma precedes every include.
#if defined(FASTGAN_CPU_AVX512) && defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#undef CPU_CAPABILITY
#undef CPU_CAPABILITY_AVX2
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define FASTGAN_SN_NS sn_avx512
#include "sn_kernel.h"
#endif
