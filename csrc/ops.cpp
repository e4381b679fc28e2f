// All fastgan op schemas, in one place. Kernels register themselves with TORCH_LIBRARY_IMPL in
// csrc/cpu/*.cpp (CPU) and csrc/cuda/*.cu (CUDA); fake kernels and autograd live in
// fastgan/_ext.py.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing fastgan._C as a Python module runs the static registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(fastgan, m) {
  // Per-sample gradient-norm penalty. grads: (B, ...). Returns (phi, norms), both (B,) in the
  // accumulation dtype (float64 for float64 input, float32 otherwise), with
  // norms_i = ||grads_i||_2 and phi_i = |n_i - target|^power (or max(0, n_i - target)^power).
  m.def("gnp_forward(Tensor grads, float target, float power, bool one_sided) -> (Tensor, Tensor)");
  // dL/dgrads_i = c_i * grads_i with c_i = grad_phi_i * phi'(n_i) / n_i; same layout as grads.
  m.def(
      "gnp_backward(Tensor grad_phi, Tensor grads, Tensor norms, float target, float power, "
      "bool one_sided) -> Tensor");
  // Reduced form (CPU): loss = scale * sum_i phi_i as a 0-d tensor of grads' dtype (accumulated
  // in the accumulation dtype), and norms as above. scale = 1/B gives the mean.
  m.def("gnp_loss(Tensor grads, float target, float power, bool one_sided, float scale) -> (Tensor, Tensor)");
  // dL/dgrads_i = c_i * grads_i with c_i = grad_loss * scale * phi'(n_i) / n_i.
  m.def(
      "gnp_loss_backward(Tensor grad_loss, Tensor grads, Tensor norms, float target, float power, "
      "bool one_sided, float scale) -> Tensor");
  // The CPU block cache for gradient-sized outputs (csrc/cpu/block_cache.h): (cached bytes,
  // cached blocks, limit in bytes); clear frees every cached block and returns the stats before.
  m.def("cpu_cache_stats() -> int[]");
  m.def("cpu_cache_clear() -> int[]");
  // --- spectral norm (issue 4) ---
  // Power iteration for a list of weights (one call for all layers of a model). Each weight W is
  // viewed as the matrix W_mat (size(dim), -1) with dim moved to the front. n_iter times:
  // u <- W_mat v / max(|W_mat v|, eps), then v <- W_mat^T u / max(|W_mat^T u|, eps). Returns
  // (sigmas, us_new, vs_new): sigma = u^T W_mat v as a 0-d tensor in the accumulation dtype and
  // new u, v (the inputs are not modified). n_iter = 0 only evaluates sigma.
  m.def(
      "sn_power(Tensor[] weights, Tensor[] us, Tensor[] vs, int[] dims, int n_iter, float eps) "
      "-> (Tensor[], Tensor[], Tensor[])");
  // W / sigma, where sigma = u^T W_mat v (its gradient is taken through W; u, v are constants).
  m.def("sn_normalize(Tensor weight, Tensor u, Tensor v, Tensor sigma, int dim) -> Tensor");
  // sn_normalize of a list of weights (every layer of a model in one call; CPU).
  m.def("sn_normalize_list(Tensor[] weights, Tensor[] us, Tensor[] vs, Tensor[] sigmas, int[] dims) -> Tensor[]");
  // apply_spectral_norm's forward in one call (CPU): sn_power with u, v updated IN PLACE, then every
  // W / sigma. Returns (W / sigma per layer, state): state packs per layer [sigma, u, v] (the values
  // the normalization used, accumulation dtype), which the backward needs. All weights of one call
  // share the accumulation dtype.
  m.def(
      "sn_power_normalize(Tensor[] weights, Tensor(a!)[] us, Tensor(b!)[] vs, int[] dims, int n_iter, float eps) "
      "-> (Tensor[], Tensor)");
  // dW = grad / sigma - <grad, W> / sigma^2 * u v^T (u v^T laid out like W), contiguous.
  m.def("sn_normalize_backward(Tensor grad, Tensor weight, Tensor u, Tensor v, Tensor sigma, int dim) -> Tensor");
  // --- weight clipping (issue 5) ---
  // In place: every tensor of the list becomes clamp(t, lo, hi) (NaN stays NaN), storage kept.
  // One call for the whole list; kernels group it by (device, dtype) themselves.
  m.def("clip_weights_(Tensor(a!)[] tensors, float lo, float hi) -> ()");
  // Test-only: elements the CPU kernel's span path has clamped since import, over all threads
  // (tests/test_kernel_edges.py checks that each element is visited once).
  m.def("_clip_span_elements() -> int");
  // Test-only: CPU kernel calls that split their list between threads, since import.
  m.def("_clip_parallel_calls() -> int");
}
