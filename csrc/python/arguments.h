// Tensors from the Python objects the module's functions take.
#pragma once

#include <Python.h>
#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace fastrnn::python {

std::optional<at::Tensor> optional_tensor(PyObject* object);  // None: nullopt
at::Tensor tensor(PyObject* object);
std::vector<at::Tensor> tensors(PyObject* sequence);  // a list of tensors: the weights

}  // namespace fastrnn::python
