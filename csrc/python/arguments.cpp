#include "arguments.h"

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

namespace fastrnn::python {

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

std::pair<StepLayout, Geometry> checked_forward_arguments(
    const at::Tensor& input, const std::optional<at::Tensor>& hx,
    const std::vector<at::Tensor>& weights, PyObject* batch_sizes, long long num_layers,
    int bidirectional) {
  auto layout = make_layout(input, optional_tensor(batch_sizes), hx);
  auto geometry = make_geometry(input, hx, weights, num_layers, bidirectional);
  return {std::move(layout), std::move(geometry)};
}

ForwardResults forward_results(const at::Tensor& input, const StepLayout& layout,
                               const Geometry& geometry) {
  const ForwardShapes shapes = forward_shapes(input, layout, geometry);
  const auto options = input.options();
  return {at::empty(shapes.output, options), at::empty(shapes.layer_outputs, options),
          at::empty(shapes.h_n, options)};
}

}  // namespace fastrnn::python
