// Included FIRST by a file that holds the AVX-512 copy of a kernel (clip_avx512.cpp, sn_avx512.cpp):
// every function of that file, the inline ones of the headers it includes too, is compiled for
// AVX-512, as torch compiles each kernel file once per ISA. Those inline helpers may be merged at
// link time with the AVX2 copies of other files, which is why such files are built only for a
// machine that has AVX-512 (FASTGAN_CPU_AVX512, set by setup.py; the extension runs where it was
// built). Defines FASTGAN_AVX512_TU when it applies.
#if defined(FASTGAN_CPU_AVX512) && defined(__x86_64__) && defined(__GNUC__)
#define FASTGAN_AVX512_TU 1
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
#endif
