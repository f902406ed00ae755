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

}  // namespace fastrnn::python
