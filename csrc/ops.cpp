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
  // --- spectral norm (issue 4) ---
  // --- weight clipping (issue 5) ---
  // In place: every tensor of the list becomes clamp(t, lo, hi) (NaN stays NaN), storage kept.
  // One call for the whole list; kernels group it by (device, dtype) themselves.
  m.def("clip_weights_(Tensor(a!)[] tensors, float lo, float hi) -> ()");
}
