// The Python module fastrnn._C: the kernels' settings and the ops' argument checks as
// Python functions, and Python types for the autograd nodes.  Everything else (kernels,
// op schemas, autograd) is in the op library, libfastrnn_ops.so, which needs no Python
// (a C++ program running a TorchScript or AOTInductor model loads it alone); this module
// links against it.
#include <Python.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_cpp_function.h>
#include <torch/csrc/autograd/python_variable.h>

#include <optional>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "../autograd.h"
#include "../cpu_blas.h"
#include "../cpu_dtypes.h"
#include "../rnn_arguments.h"
#include "arguments.h"
#include "launch_replay.h"
#include "triton_op_kernels.h"

namespace {

using fastrnn::python::optional_tensor;
using fastrnn::python::tensor;
using fastrnn::python::tensors;

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

// rnn_forward's argument checks (rnn_arguments.cpp) on Python objects; the layout and
// geometry they give.
std::pair<fastrnn::StepLayout, fastrnn::Geometry> checked_forward_arguments(
    const at::Tensor& input, const std::optional<at::Tensor>& hx,
    const std::vector<at::Tensor>& weights, PyObject* batch_sizes, long long num_layers,
    int bidirectional) {
  auto layout = fastrnn::make_layout(input, optional_tensor(batch_sizes), hx);
  auto geometry = fastrnn::make_geometry(input, hx, weights, num_layers, bidirectional);
  return {std::move(layout), std::move(geometry)};
}

// A packed input's step tables (step_tables) on its device, as a tuple (batch sizes,
// offsets, then the previous rows of each of previous_directions); None for padded input
// (batch_sizes None), whose kernels need none.  One C++ pass in place of a dozen CPU
// tensor ops a call (docs/performance.md, "Packed step tables built in C++").
PyObject* device_step_tables(const at::Tensor& input, PyObject* batch_sizes,
                             const fastrnn::StepLayout& s, int64_t previous_directions) {
  if (batch_sizes == Py_None) Py_RETURN_NONE;
  const std::vector<at::Tensor> tables =
      fastrnn::step_tables(s, previous_directions, input.device());
  PyObject* result = PyTuple_New(static_cast<Py_ssize_t>(tables.size()));
  if (result == nullptr) return nullptr;
  for (size_t i = 0; i < tables.size(); ++i) {
    PyObject* view = THPVariable_Wrap(tables[i]);
    if (view == nullptr) {
      Py_DECREF(result);
      return nullptr;
    }
    PyTuple_SET_ITEM(result, i, view);
  }
  return result;
}

// For kernels outside C++, the Triton launch functions (which would otherwise read out of
// bounds on bad shapes): rnn_forward's checks, then its results (output, layer_outputs,
// h_n) uninitialised on the input's device, and a packed input's step tables
// (device_step_tables); in C++, where three Python calls cost a short sequence's call a
// tenth of its host time (docs/performance.md).
PyObject* rnn_forward_outputs(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  PyObject *input, *hx, *weights, *batch_sizes;
  long long num_layers;
  int bidirectional;
  if (!PyArg_ParseTuple(args, "OOOOLp", &input, &hx, &weights, &batch_sizes, &num_layers,
                        &bidirectional)) {
    return nullptr;
  }
  const at::Tensor x = tensor(input);
  const auto [layout, geometry] = checked_forward_arguments(
      x, optional_tensor(hx), tensors(weights), batch_sizes, num_layers, bidirectional);
  const fastrnn::ForwardShapes shapes = fastrnn::forward_shapes(x, layout, geometry);
  const auto options = x.options();
  const at::Tensor output = at::empty(shapes.output, options);
  const at::Tensor layer_outputs = at::empty(shapes.layer_outputs, options);
  const at::Tensor h_n = at::empty(shapes.h_n, options);
  PyObject* tables = device_step_tables(x, batch_sizes, layout, 0);
  if (tables == nullptr) return nullptr;
  return Py_BuildValue("(NNNN)", THPVariable_Wrap(output), THPVariable_Wrap(layer_outputs),
                       THPVariable_Wrap(h_n), tables);
  END_HANDLE_TH_ERRORS
}

// rnn_backward's checks, likewise, then what the Triton backward writes besides: dz
// [N, D*H] (the layers' pre-activation gradients, laid out as a layer's output), grad_hx
// (hx's shape where hx is given and need_hx_grad, else [0]), grad_input ([0] where not
// need_input_grad, else None: the launch's own), a gradient like each weight, and a
// packed input's step tables with each direction's previous rows (device_step_tables).
PyObject* rnn_backward_outputs(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  PyObject *grad_output, *grad_h_n, *input, *hx, *weights, *batch_sizes, *output, *layer_outputs;
  long long num_layers;
  int bidirectional, need_input_grad, need_hx_grad;
  if (!PyArg_ParseTuple(args, "OOOOOOOOLppp", &grad_output, &grad_h_n, &input, &hx, &weights,
                        &batch_sizes, &output, &layer_outputs, &num_layers, &bidirectional,
                        &need_input_grad, &need_hx_grad)) {
    return nullptr;
  }
  const at::Tensor x = tensor(input);
  const auto h = optional_tensor(hx);
  const std::vector<at::Tensor> w = tensors(weights);
  const auto [layout, geometry] =
      checked_forward_arguments(x, h, w, batch_sizes, num_layers, bidirectional);
  fastrnn::check_backward_arguments(optional_tensor(grad_output), optional_tensor(grad_h_n), x,
                                    tensor(output), tensor(layer_outputs), layout, geometry);
  const auto options = x.options();
  const at::Tensor dz = at::empty({layout.rows, geometry.directions * geometry.hidden}, options);
  const at::Tensor grad_hx =
      h.has_value() && need_hx_grad ? at::empty(h->sizes(), options) : at::empty({0}, options);
  std::vector<at::Tensor> grads;
  grads.reserve(w.size());
  for (const at::Tensor& weight : w) grads.push_back(at::empty(weight.sizes(), options));
  const at::Tensor no_input_grad = need_input_grad ? at::Tensor() : at::empty({0}, options);
  PyObject* tables = device_step_tables(x, batch_sizes, layout, geometry.directions);
  if (tables == nullptr) return nullptr;
  PyObject* grad_weights = PyList_New(static_cast<Py_ssize_t>(grads.size()));
  if (grad_weights == nullptr) {
    Py_DECREF(tables);
    return nullptr;
  }
  for (size_t i = 0; i < grads.size(); ++i) {
    PyObject* grad = THPVariable_Wrap(grads[i]);
    if (grad == nullptr) {
      Py_DECREF(grad_weights);
      Py_DECREF(tables);
      return nullptr;
    }
    PyList_SET_ITEM(grad_weights, i, grad);
  }
  PyObject* grad_input = Py_None;
  if (need_input_grad) {
    Py_INCREF(Py_None);
  } else {
    grad_input = THPVariable_Wrap(no_input_grad);
  }
  return Py_BuildValue("(NNNNN)", THPVariable_Wrap(dz), THPVariable_Wrap(grad_hx), grad_input,
                       grad_weights, tables);
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
    {"rnn_forward_outputs", rnn_forward_outputs, METH_VARARGS,
     "rnn_forward_outputs(input, hx, weights, batch_sizes, num_layers, bidirectional): "
     "rnn_forward's argument checks (RuntimeError saying what is wrong), then (output, "
     "layer_outputs, h_n), uninitialised, on the input's device, and packed input's step "
     "tables (batch sizes, offsets) there, or None."},
    {"rnn_backward_outputs", rnn_backward_outputs, METH_VARARGS,
     "rnn_backward_outputs(grad_output, grad_h_n, input, hx, weights, batch_sizes, output, "
     "layer_outputs, num_layers, bidirectional, need_input_grad, need_hx_grad): "
     "rnn_backward's argument checks, then (dz, grad_hx, grad_input or None, "
     "grad_weights), uninitialised, on the input's device, and packed input's step tables "
     "(batch sizes, offsets, each direction's previous rows) there, or None."},
    {"store_plan", fastrnn::python::store_plan, METH_VARARGS,
     "store_plan(kind, tensors, flags, steps, results): keeps a call's allocations, kernel "
     "launches and ATen ops, in order, and its results for replay (steps None: such calls "
     "are never replayed); False where they are not kept."},
    {"replay", fastrnn::python::replay, METH_VARARGS,
     "replay(kind, tensors, flags): the results of a call replayed from its plan; True "
     "where no plan is stored for such calls yet; None where they are never replayed."},
    {"clear_launch_plans", fastrnn::python::clear_launch_plans, METH_NOARGS,
     "Drops every kept replay plan; returns how many there were."},
    {"replay_launches_to", fastrnn::python::replay_launches_to, METH_O,
     "A list that replayed launches are appended to in place of being launched (tests), "
     "or None: the CUDA driver."},
    {"register_triton_kernels", fastrnn::python::register_triton_kernels, METH_VARARGS,
     "register_triton_kernels(dispatch_key, forward, backward, replay_tf32, recorded): "
     "rnn_forward's and rnn_backward's kernels for that key, replayed from C++ where they "
     "can be, recorded where no plan is kept yet, else the Python kernels forward / "
     "backward; a handle that keeps them registered."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "fastrnn: kernel settings, argument checks", -1, methods};

void register_node_type(PyObject* module, PyTypeObject& type, const char* name,
                        const std::type_info& node_type) {
  torch::autograd::_initFunctionPyTypeObject(type, name, nullptr, nullptr);
  Py_INCREF(&type);
  PyModule_AddObject(module, name, reinterpret_cast<PyObject*>(&type));
  torch::autograd::registerCppFunction(node_type, &type);
}

PyTypeObject rnn_backward_type, rnn_cell_backward_type;

}  // namespace

// The autograd nodes get Python types named after them, so that a grad_fn prints as
// <RnnBackward>, as torch's own nodes do (a C++ Function's node otherwise prints its
// template type, "CppNode<...RnnBackward>").
PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr) {
    register_node_type(module, rnn_backward_type, "RnnBackward",
                       fastrnn::rnn_backward_node_type());
    register_node_type(module, rnn_cell_backward_type, "RnnCellBackward",
                       fastrnn::rnn_cell_backward_node_type());
  }
  return module;
}
