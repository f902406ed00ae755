// The Python module's arguments: tensors from Python objects, and rnn_forward's checks and
// results as the Triton launch functions and the replayed launches (launch_replay.cpp)
// take them.
#pragma once

#include <Python.h>
#include <ATen/ATen.h>

#include <optional>
#include <utility>
#include <vector>

#include "../rnn_arguments.h"

namespace fastrnn::python {

std::optional<at::Tensor> optional_tensor(PyObject* object);  // None: nullopt
at::Tensor tensor(PyObject* object);
std::vector<at::Tensor> tensors(PyObject* sequence);  // a list of tensors: the weights

// rnn_forward's argument checks (rnn_arguments.cpp) on Python objects; the layout and
// geometry they give.
std::pair<StepLayout, Geometry> checked_forward_arguments(
    const at::Tensor& input, const std::optional<at::Tensor>& hx,
    const std::vector<at::Tensor>& weights, PyObject* batch_sizes, long long num_layers,
    int bidirectional);

// rnn_forward's results, uninitialised, on the input's device (forward_shapes).
struct ForwardResults {
  at::Tensor output, layer_outputs, h_n;
};

ForwardResults forward_results(const at::Tensor& input, const StepLayout& layout,
                               const Geometry& geometry);

}  // namespace fastrnn::python
