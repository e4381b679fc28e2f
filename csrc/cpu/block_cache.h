// A small cache of large CPU blocks for fastgan's outputs that are as big as the gradients
// (dL/dgrads of the penalty). Why: glibc returns a freed multi-MB block to the kernel (heap
// trim or munmap), so the same block allocated again next training step is page-faulted and
// zeroed page by page, which on CPU costs several times the kernel itself (measured: ~300
// faults and ~0.7 ms for a 3 MB block on a 2-core EPYC VM, vs ~55 us of arithmetic). Freed
// blocks are kept here, up to FASTGAN_CPU_CACHE_MB (default 256, 0 disables) and reused for
// an allocation of exactly the same size. fastgan.empty_cache() returns them to the system.
#pragma once
#include <ATen/core/Tensor.h>

namespace fastgan {

// Like at::empty_strided on CPU, with storage from the cache for large sizes.
at::Tensor cpu_empty_strided_cached(at::IntArrayRef sizes, at::IntArrayRef strides, at::ScalarType dtype);

}  // namespace fastgan
