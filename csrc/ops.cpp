// Schemas of the fastrnn ops, and the Python module that loading the extension makes.
//
// Their C++ signatures are in ops.h.  Kernels register beside their code: CPU in
// rnn_cpu.cpp and rnn_cell_cpu.cpp, autograd in autograd.cpp, fake (meta) kernels in
// fastrnn/ops.py, CUDA (Triton) in fastrnn/triton/registration.py.
#include <Python.h>
#include <torch/library.h>

#include "cpu_blas.h"

namespace fastrnn {

TORCH_LIBRARY(fastrnn, m) {
  // input: [T, B, I] (batch_sizes None) or packed [N, I] with batch_sizes [T] on the CPU.
  // hx: [L*D, B, H], or None for zeros (padded input only: a packed batch's size is data,
  // which fake tensors cannot see); weights: nn.RNN's flat list (w_ih, w_hh[, b_ih, b_hh])
  // per layer and direction.  Returns output [T, B, D*H] or [N, D*H], h_n [L*D, B, H] and the outputs of
  // the layers below the top, [L-1, *output.shape], which backward needs.
  m.def(
      "rnn_forward(Tensor input, Tensor? hx, Tensor[] weights, Tensor? batch_sizes, "
      "int num_layers, bool bidirectional, bool relu) -> (Tensor, Tensor, Tensor)");
  // grad_output / grad_h_n: None where that output did not reach the loss (zeros, which
  // the kernels then neither read nor need materialised).  Returns grad_input (empty [0]
  // unless need_input_grad: the input GEMM of layer 0 is skipped when nothing needs it),
  // grad_hx ([0] when hx is None) and one gradient per weight.
  m.def(
      "rnn_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor input, Tensor? hx, "
      "Tensor[] weights, Tensor? batch_sizes, Tensor output, Tensor layer_outputs, "
      "int num_layers, bool bidirectional, bool relu, bool need_input_grad) "
      "-> (Tensor, Tensor, Tensor[])");
  // The same RNN in plain differentiable torch ops (fastrnn.reference, registered as this
  // op's CompositeImplicitAutograd kernel in fastrnn/ops.py): rnn_backward's autograd
  // recomputes through it, so that gradients of gradients are recorded.
  m.def(
      "rnn_reference(Tensor input, Tensor hx, Tensor[] weights, Tensor? batch_sizes, "
      "int num_layers, bool bidirectional, bool relu) -> (Tensor, Tensor)");
  // One nn.RNNCell step: input [B, I], hx [B, H] -> h' [B, H].
  m.def(
      "rnn_cell_forward(Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, bool relu) -> Tensor");
  // Returns grad_input, grad_hx (each [0] unless needed), grad_w_ih, grad_w_hh and the
  // bias gradient (the same for b_ih and b_hh; [0] without bias).
  m.def(
      "rnn_cell_backward(Tensor grad_h, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, "
      "Tensor h_new, bool has_bias, bool relu, bool need_input_grad, bool need_hx_grad) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

}  // namespace fastrnn

namespace {

PyObject* get_cpu_gemm_backend(PyObject*, PyObject*) {
  return PyUnicode_FromString(fastrnn::gemm_backend().c_str());
}

PyObject* set_cpu_gemm_backend(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  try {
    fastrnn::set_gemm_backend(name);
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"get_cpu_gemm_backend", get_cpu_gemm_backend, METH_NOARGS,
     "'blas' when the CPU kernels call the BLAS torch links, else 'portable'."},
    {"set_cpu_gemm_backend", set_cpu_gemm_backend, METH_O,
     "Select 'blas' (default when available) or 'portable' GEMMs for the CPU kernels."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "fastrnn C++ CPU kernels", -1,
                          methods};

}  // namespace

namespace fastrnn {
void register_node_python_types(PyObject* module);  // autograd.cpp
}

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr) fastrnn::register_node_python_types(module);
  return module;
}
