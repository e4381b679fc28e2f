// The AVX-512 copy of the clip clamp loop (csrc/cpu/clip_kernel.h), built only when setup.py finds
// AVX-512 on the build machine (FASTGAN_CPU_AVX512). The rest of the extension keeps the build's
// flags; this file alone is compiled for AVX-512, as torch compiles each kernel file once per ISA,
// and csrc/cpu/clip.cpp picks it at run time when the CPU (and ATEN_CPU_CAPABILITY) allows.
//
// The target pragma must precede every include: each function of this file, the inline ones of
// the headers included, is then compiled for AVX-512. Those inline helpers may be merged at link
// time with the AVX2 copies of other files, which is why this file is built only for a machine
// that has AVX-512 (the extension runs where it was built).
#if defined(FASTGAN_CPU_AVX512) && defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
// the pragma enables the instructions, but headers that test these macros (sleef.h) must see them
// before they are included: define them as -mavx512f etc. would
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
#define FASTGAN_CLIP_NS clip_avx512
#include "clip_kernel.h"
#endif
