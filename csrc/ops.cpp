// Schemas of the fastrnn ops, and the Python module that loading the extension makes.
//
// Their C++ signatures are in ops.h.  Kernels register beside their code: CPU in
// rnn_cpu.cpp and rnn_cell_cpu.cpp, autograd in autograd.cpp, fake (meta) kernels in
// fastrnn/ops.py, CUDA (Triton) in fastrnn/triton/registration.py.
#include <Python.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cpu_blas.h"
#include "cpu_dtypes.h"
#include "rnn_arguments.h"

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
  // grad_hx ([0] when hx is None or not need_hx_grad: each direction's last product,
  // dz W_hh of its first step, is skipped) and one gradient per weight.
  m.def(
      "rnn_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor input, Tensor? hx, "
      "Tensor[] weights, Tensor? batch_sizes, Tensor output, Tensor layer_outputs, "
      "int num_layers, bool bidirectional, bool relu, bool need_input_grad, "
      "bool need_hx_grad=True) -> (Tensor, Tensor, Tensor[])");
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

// Python getter and setter of a string setting of the kernels (GEMM backend, reduced
// precision); a refused value raises ValueError with the setting's own message.
template <std::string (*get)()>
PyObject* get_setting(PyObject*, PyObject*) {
  return PyUnicode_FromString(get().c_str());
}

template <void (*set)(const std::string&)>
PyObject* set_setting(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  try {
    set(name);
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    return nullptr;
  }
  Py_RETURN_NONE;
}

std::optional<at::Tensor> optional_tensor(PyObject* object) {
  if (object == Py_None) return std::nullopt;
  TORCH_CHECK(THPVariable_Check(object), "fastrnn: expected a tensor or None");
  return THPVariable_Unpack(object);
}

at::Tensor tensor(PyObject* object) {
  TORCH_CHECK(THPVariable_Check(object), "fastrnn: expected a tensor");
  return THPVariable_Unpack(object);
}

std::vector<at::Tensor> tensors(PyObject* sequence) {
  PyObject* fast = PySequence_Fast(sequence, "fastrnn: weights must be a list of tensors");
  if (fast == nullptr) throw python_error();
  std::vector<at::Tensor> result;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  result.reserve(n);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PySequence_Fast_GET_ITEM(fast, i);
    if (!THPVariable_Check(item)) {
      Py_DECREF(fast);
      TORCH_CHECK(false, "fastrnn: weights must be a list of tensors");
    }
    result.push_back(THPVariable_Unpack(item));
  }
  Py_DECREF(fast);
  return result;
}

// rnn_forward's argument checks (rnn_arguments.cpp) on Python objects; the layout and
// geometry they give.
std::pair<fastrnn::StepLayout, fastrnn::Geometry> checked_forward_arguments(
    const at::Tensor& input, PyObject* hx, PyObject* weights, PyObject* batch_sizes,
    long long num_layers, int bidirectional) {
  const auto h = optional_tensor(hx);
  auto layout = fastrnn::make_layout(input, optional_tensor(batch_sizes), h);
  auto geometry = fastrnn::make_geometry(input, h, tensors(weights), num_layers, bidirectional);
  return {std::move(layout), std::move(geometry)};
}

// For kernels outside C++: the Triton launch functions, which would otherwise read out
// of bounds on bad shapes.
PyObject* check_rnn_arguments(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  PyObject *input, *hx, *weights, *batch_sizes;
  long long num_layers;
  int bidirectional;
  if (!PyArg_ParseTuple(args, "OOOOLp", &input, &hx, &weights, &batch_sizes, &num_layers,
                        &bidirectional)) {
    return nullptr;
  }
  checked_forward_arguments(tensor(input), hx, weights, batch_sizes, num_layers, bidirectional);
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

// rnn_backward's, likewise.
PyObject* check_rnn_backward_arguments(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  PyObject *grad_output, *grad_h_n, *input, *hx, *weights, *batch_sizes, *output, *layer_outputs;
  long long num_layers;
  int bidirectional;
  if (!PyArg_ParseTuple(args, "OOOOOOOOLp", &grad_output, &grad_h_n, &input, &hx, &weights,
                        &batch_sizes, &output, &layer_outputs, &num_layers, &bidirectional)) {
    return nullptr;
  }
  const at::Tensor x = tensor(input);
  const auto [layout, geometry] =
      checked_forward_arguments(x, hx, weights, batch_sizes, num_layers, bidirectional);
  fastrnn::check_backward_arguments(optional_tensor(grad_output), optional_tensor(grad_h_n), x,
                                    tensor(output), tensor(layer_outputs), layout, geometry);
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"get_cpu_gemm_backend", get_setting<fastrnn::gemm_backend>, METH_NOARGS,
     "'blas' when the CPU kernels call the BLAS torch links, else 'portable'."},
    {"set_cpu_gemm_backend", set_setting<fastrnn::set_gemm_backend>, METH_O,
     "Select 'blas' (default when available) or 'portable' GEMMs for the CPU kernels."},
    {"get_cpu_reduced_precision", get_setting<fastrnn::reduced_precision_mode>, METH_NOARGS,
     "How the CPU kernels run bfloat16/float16: 'auto', 'native' or 'float32'."},
    {"set_cpu_reduced_precision", set_setting<fastrnn::set_reduced_precision_mode>, METH_O,
     "'auto' (default): by the rules of csrc/cpu_dtypes.h; 'native' (in their own dtype) or "
     "'float32' (on float32 copies): every call so."},
    {"check_rnn_arguments", check_rnn_arguments, METH_VARARGS,
     "check_rnn_arguments(input, hx, weights, batch_sizes, num_layers, bidirectional): "
     "rnn_forward's argument checks; raises RuntimeError saying what is wrong."},
    {"check_rnn_backward_arguments", check_rnn_backward_arguments, METH_VARARGS,
     "check_rnn_backward_arguments(grad_output, grad_h_n, input, hx, weights, batch_sizes, "
     "output, layer_outputs, num_layers, bidirectional): rnn_backward's argument checks."},
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
