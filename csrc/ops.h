// The C++ signatures of the fastrnn ops, stated once: the schemas in ops.cpp say the same
// in the dispatcher's words, and the CPU kernels (rnn_cpu.cpp, rnn_cell_cpu.cpp) and the
// autograd kernels (autograd.cpp) are checked against these types where they register.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace fastrnn {

// The shape of the network beyond its tensors: what rnn_forward's autograd saves for
// backward besides tensors.
struct RnnOptions {
  int64_t num_layers;
  bool bidirectional;
  bool relu;
};

// (output, h_n, layer_outputs)
using RnnForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
// (grad_input, grad_hx, grad_weights)
using RnnBackwardResult = std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>>;
// (grad_input, grad_hx, grad_w_ih, grad_w_hh, grad_bias)
using RnnCellBackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

using RnnForwardFn = RnnForwardResult(
    const at::Tensor& input, const std::optional<at::Tensor>& hx, at::TensorList weights,
    const std::optional<at::Tensor>& batch_sizes, int64_t num_layers, bool bidirectional,
    bool relu);

using RnnBackwardFn = RnnBackwardResult(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_h_n,
    const at::Tensor& input,
    const std::optional<at::Tensor>& hx, at::TensorList weights,
    const std::optional<at::Tensor>& batch_sizes, const at::Tensor& output,
    const at::Tensor& layer_outputs, int64_t num_layers, bool bidirectional, bool relu,
    bool need_input_grad, bool need_hx_grad);

// (output, h_n)
using RnnReferenceResult = std::tuple<at::Tensor, at::Tensor>;

using RnnReferenceFn = RnnReferenceResult(
    const at::Tensor& input, const at::Tensor& hx, at::TensorList weights,
    const std::optional<at::Tensor>& batch_sizes, int64_t num_layers, bool bidirectional,
    bool relu);

using RnnCellForwardFn = at::Tensor(const at::Tensor& input, const at::Tensor& hx,
                                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                                    const std::optional<at::Tensor>& b_ih,
                                    const std::optional<at::Tensor>& b_hh, bool relu);

using RnnCellBackwardFn = RnnCellBackwardResult(
    const at::Tensor& grad_h, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& h_new, bool has_bias,
    bool relu, bool need_input_grad, bool need_hx_grad);

// Kernels are declared with these types, so a definition that drifts from the signature
// does not compile: `RnnForwardFn rnn_forward_cpu;` declares a function of that type.

// True when an optional tensor argument was given (None means: not given).
inline bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

}  // namespace fastrnn
