// The AVX-512 copy of the spectral-norm loops (csrc/cpu/sn_kernel.h), built only when setup.py finds
// AVX-512 on the build machine (FASTGAN_CPU_AVX512), and picked at run time by spectral_norm.cpp
// when the CPU (and ATEN_CPU_CAPABILITY) allows; avx512_target.h says how.
#include "avx512_target.h"
#if defined(FASTGAN_AVX512_TU)
#define FASTGAN_SN_NS sn_avx512
#include "sn_kernel.h"
#endif
