// The AVX-512 copy of the clip clamp loop (csrc/cpu/clip_kernel.h), built only when setup.py finds
// AVX-512 on the build machine (FASTGAN_CPU_AVX512). The rest of the extension keeps the build's
// flags; this file alone is compiled for AVX-512, as torch compiles each kernel file once per ISA,
// and csrc/cpu/clip.cpp picks it at run time when the CPU (and ATEN_CPU_CAPABILITY) allows.
// avx512_target.h says how (it must come before every other include).
#include "avx512_target.h"
#if defined(FASTGAN_AVX512_TU)
#define FASTGAN_CLIP_NS clip_avx512
#include "clip_kernel.h"
#endif
