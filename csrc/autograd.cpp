// Autograd of the fastrnn ops (sequence and cell), in C++, registered for the Autograd
// key: one autograd for every backend (C++ CPU kernels, Triton CUDA kernels).
//
// C++ rather than torch.library.register_autograd: a Python autograd kernel cost ~30 µs
// per call, most of a training step at tutorial sizes (docs/performance.md).
//
// The backward ops get an autograd kernel too, whose own backward raises: gradients of
// gradients are not supported (as for cuDNN's RNN), and saying so beats a silent zero.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/python_cpp_function.h>
#include <torch/library.h>

#include <utility>
#include <vector>

#include "ops.h"

namespace fastrnn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// An op's dispatcher handle, looked up on first use (the ops are defined in ops.cpp).
template <typename Fn>
class Op {
 public:
  explicit Op(const char* name)
      : handle_(c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>()) {}

  // Below autograd: the backend kernel itself.
  template <typename... Args>
  auto kernel(Args&&... args) const {
    at::AutoDispatchBelowADInplaceOrView guard;
    return handle_.call(std::forward<Args>(args)...);
  }

  // Through the op's autograd kernel, which records a node only under grad mode.
  template <typename... Args>
  auto operator()(Args&&... args) const {
    return handle_.call(std::forward<Args>(args)...);
  }

 private:
  c10::TypedOperatorHandle<Fn> handle_;
};

const Op<RnnForwardFn>& rnn_forward() {
  static const Op<RnnForwardFn> op("fastrnn::rnn_forward");
  return op;
}
const Op<RnnBackwardFn>& rnn_backward() {
  static const Op<RnnBackwardFn> op("fastrnn::rnn_backward");
  return op;
}
const Op<RnnCellForwardFn>& rnn_cell_forward() {
  static const Op<RnnCellForwardFn> op("fastrnn::rnn_cell_forward");
  return op;
}
const Op<RnnCellBackwardFn>& rnn_cell_backward() {
  static const Op<RnnCellBackwardFn> op("fastrnn::rnn_cell_backward");
  return op;
}

[[noreturn]] void refuse_double_backward() {
  TORCH_CHECK(false,
              "fastrnn: double backward (gradients of gradients) is not supported by the "
              "fused RNN kernels, as for cuDNN's RNN; use fastrnn.set_backend('reference') "
              "if you need it");
}

// A node recorded only under create_graph=True: the backward op run with grad mode on.
// Its own backward refuses.
class RnnBackwardBackward : public torch::autograd::Function<RnnBackwardBackward> {
 public:
  template <typename... Args>
  static variable_list forward(AutogradContext*, Args&&... args) {
    auto [grad_input, grad_hx, grad_weights] =
        rnn_backward().kernel(std::forward<Args>(args)...);
    variable_list result{grad_input, grad_hx};
    result.insert(result.end(), grad_weights.begin(), grad_weights.end());
    return result;
  }
  static variable_list backward(AutogradContext*, variable_list) { refuse_double_backward(); }
};

// Saved for backward besides tensors: RnnOptions, as one saved_data entry.
c10::IValue to_ivalue(const RnnOptions& o) {
  return c10::ivalue::Tuple::create(o.num_layers, o.bidirectional, o.relu);
}
RnnOptions options_from(const c10::IValue& v) {
  const auto& e = v.toTupleRef().elements();
  return {e[0].toInt(), e[1].toBool(), e[2].toBool()};
}

class RnnBackward : public torch::autograd::Function<RnnBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const std::optional<at::Tensor>& hx, at::TensorList weights,
                               const std::optional<at::Tensor>& batch_sizes,
                               int64_t num_layers, bool bidirectional, bool relu) {
    auto [output, h_n, layer_outputs] =
        rnn_forward().kernel(input, hx, weights, batch_sizes, num_layers, bidirectional, relu);
    // Saved: the inputs and every layer's output; nothing per step.  hx None (zeros) and
    // batch_sizes None (padded input) are saved as undefined tensors.
    variable_list saved{input, hx.value_or(at::Tensor()), batch_sizes.value_or(at::Tensor()),
                        output, layer_outputs};
    saved.insert(saved.end(), weights.begin(), weights.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["options"] = to_ivalue({num_layers, bidirectional, relu});
    ctx->mark_non_differentiable({layer_outputs});
    // A missing gradient reaches the backward op as None (zeros it need not read);
    // materialising them would fill zeros, layer_outputs' too, on every backward.
    ctx->set_materialize_grads(false);
    return {output, h_n, layer_outputs};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const RnnOptions o = options_from(ctx->saved_data["options"]);
    const at::Tensor& input = saved[0];
    const std::optional<at::Tensor> hx = saved[1].defined() ? std::optional(saved[1]) : std::nullopt;
    const std::optional<at::Tensor> batch_sizes =
        saved[2].defined() ? std::optional(saved[2]) : std::nullopt;
    const at::Tensor& output = saved[3];
    const at::Tensor& layer_outputs = saved[4];
    const std::vector<at::Tensor> weights(saved.begin() + 5, saved.end());
    // An output that did not reach the loss has no gradient: None, which the kernels take
    // as zeros without a fill.
    const auto gradient = [](const at::Tensor& g) {
      return g.defined() ? std::optional<at::Tensor>(g) : std::nullopt;
    };
    const std::optional<at::Tensor> grad_output = gradient(grads[0]);
    const std::optional<at::Tensor> grad_h_n = gradient(grads[1]);
    // Through the autograd kernel: it records RnnBackwardBackward only when grad mode is
    // on, i.e. under create_graph=True.
    auto [grad_input, grad_hx, grad_weights] =
        rnn_backward()(grad_output, grad_h_n, input, hx, weights, batch_sizes, output,
                       layer_outputs, o.num_layers, o.bidirectional, o.relu,
                       ctx->needs_input_grad(0));
    variable_list flat{ctx->needs_input_grad(0) ? grad_input : at::Tensor(),
                       hx ? grad_hx : at::Tensor()};
    flat.insert(flat.end(), grad_weights.begin(), grad_weights.end());
    // One entry per forward argument: input, hx, each weight, then the non-tensors.
    flat.resize(2 + weights.size() + 4);
    return flat;
  }
};

// Whether an autograd node is needed: grad mode on and some input requires grad.
// Function::apply works that out too, after building its bookkeeping; checking first
// is cheaper on every inference call.
bool needs_graph(std::initializer_list<at::TensorList> groups) {
  if (!at::GradMode::is_enabled()) return false;
  for (const auto& group : groups) {
    for (const auto& t : group) {
      if (t.defined() && t.requires_grad()) return true;
    }
  }
  return false;
}

RnnForwardFn rnn_forward_autograd;
RnnBackwardFn rnn_backward_autograd;
RnnCellForwardFn rnn_cell_forward_autograd;
RnnCellBackwardFn rnn_cell_backward_autograd;

RnnForwardResult rnn_forward_autograd(const at::Tensor& input,
                                      const std::optional<at::Tensor>& hx,
                                      at::TensorList weights,
                                      const std::optional<at::Tensor>& batch_sizes,
                                      int64_t num_layers, bool bidirectional, bool relu) {
  if (!needs_graph({input, hx.value_or(at::Tensor()), weights})) {  // inference: no node
    return rnn_forward().kernel(input, hx, weights, batch_sizes, num_layers, bidirectional,
                                relu);
  }
  auto out = RnnBackward::apply(input, hx, weights, batch_sizes, num_layers, bidirectional, relu);
  return {out[0], out[1], out[2]};
}

RnnBackwardResult rnn_backward_autograd(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_h_n,
    const at::Tensor& input,
    const std::optional<at::Tensor>& hx, at::TensorList weights,
    const std::optional<at::Tensor>& batch_sizes, const at::Tensor& output,
    const at::Tensor& layer_outputs, int64_t num_layers, bool bidirectional, bool relu,
    bool need_input_grad) {
  if (!at::GradMode::is_enabled()) {  // an ordinary backward pass: nothing to record
    return rnn_backward().kernel(grad_output, grad_h_n, input, hx, weights, batch_sizes,
                                 output, layer_outputs, num_layers, bidirectional, relu,
                                 need_input_grad);
  }
  variable_list flat = RnnBackwardBackward::apply(grad_output, grad_h_n, input, hx, weights,
                                                  batch_sizes, output, layer_outputs,
                                                  num_layers, bidirectional, relu,
                                                  need_input_grad);
  return {flat[0], flat[1], std::vector<at::Tensor>(flat.begin() + 2, flat.end())};
}

class RnnCellBackwardBackward : public torch::autograd::Function<RnnCellBackwardBackward> {
 public:
  template <typename... Args>
  static variable_list forward(AutogradContext*, Args&&... args) {
    auto [gi, gh, gwi, gwh, gb] = rnn_cell_backward().kernel(std::forward<Args>(args)...);
    return {gi, gh, gwi, gwh, gb};
  }
  static variable_list backward(AutogradContext*, variable_list) { refuse_double_backward(); }
};

class RnnCellBackward : public torch::autograd::Function<RnnCellBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& hx, const at::Tensor& w_ih,
                               const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                               const std::optional<at::Tensor>& b_hh, bool relu) {
    at::Tensor h_new = rnn_cell_forward().kernel(input, hx, w_ih, w_hh, b_ih, b_hh, relu);
    ctx->save_for_backward({input, hx, w_ih, w_hh, h_new});
    ctx->saved_data["has_bias"] = given(b_ih);
    ctx->saved_data["relu"] = relu;
    return {h_new};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const bool need_input = ctx->needs_input_grad(0), need_hx = ctx->needs_input_grad(1);
    auto [gi, gh, gwi, gwh, gb] =
        rnn_cell_backward()(grads[0], saved[0], saved[1], saved[2], saved[3], saved[4],
                            has_bias, ctx->saved_data["relu"].toBool(), need_input, need_hx);
    // One entry per forward argument: input, hx, w_ih, w_hh, b_ih, b_hh, relu.
    at::Tensor db = has_bias ? gb : at::Tensor();
    return {need_input ? gi : at::Tensor(), need_hx ? gh : at::Tensor(), gwi, gwh, db,
            has_bias ? db.clone() : at::Tensor(), at::Tensor()};
  }
};

at::Tensor rnn_cell_forward_autograd(const at::Tensor& input, const at::Tensor& hx,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const std::optional<at::Tensor>& b_ih,
                                     const std::optional<at::Tensor>& b_hh, bool relu) {
  if (!needs_graph({{input, hx, w_ih, w_hh, b_ih.value_or(at::Tensor()),
                     b_hh.value_or(at::Tensor())}})) {
    return rnn_cell_forward().kernel(input, hx, w_ih, w_hh, b_ih, b_hh, relu);
  }
  return RnnCellBackward::apply(input, hx, w_ih, w_hh, b_ih, b_hh, relu)[0];
}

RnnCellBackwardResult rnn_cell_backward_autograd(const at::Tensor& grad_h,
                                                 const at::Tensor& input, const at::Tensor& hx,
                                                 const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                 const at::Tensor& h_new, bool has_bias,
                                                 bool relu, bool need_input_grad,
                                                 bool need_hx_grad) {
  if (!at::GradMode::is_enabled()) {  // an ordinary backward pass: nothing to record
    return rnn_cell_backward().kernel(grad_h, input, hx, w_ih, w_hh, h_new, has_bias, relu,
                                      need_input_grad, need_hx_grad);
  }
  auto g = RnnCellBackwardBackward::apply(grad_h, input, hx, w_ih, w_hh, h_new, has_bias, relu,
                                          need_input_grad, need_hx_grad);
  return {g[0], g[1], g[2], g[3], g[4]};
}

template <typename Fn>
void register_node_type(PyObject* module, PyTypeObject& type, const char* name) {
  torch::autograd::_initFunctionPyTypeObject(type, name, nullptr, nullptr);
  Py_INCREF(&type);
  PyModule_AddObject(module, name, reinterpret_cast<PyObject*>(&type));
  torch::autograd::registerCppFunction(typeid(torch::autograd::CppNode<Fn>), &type);
}

PyTypeObject rnn_backward_type, rnn_backward_backward_type, rnn_cell_backward_type,
    rnn_cell_backward_backward_type;

}  // namespace

// Python types named after the autograd nodes, so that a grad_fn prints as
// <RnnBackward>, as torch's own nodes do (a C++ Function's node otherwise prints its
// template type, "CppNode<...RnnBackward>").
void register_node_python_types(PyObject* module) {
  register_node_type<RnnBackward>(module, rnn_backward_type, "RnnBackward");
  register_node_type<RnnBackwardBackward>(module, rnn_backward_backward_type,
                                          "RnnBackwardBackward");
  register_node_type<RnnCellBackward>(module, rnn_cell_backward_type, "RnnCellBackward");
  register_node_type<RnnCellBackwardBackward>(module, rnn_cell_backward_backward_type,
                                              "RnnCellBackwardBackward");
}

TORCH_LIBRARY_IMPL(fastrnn, Autograd, m) {
  m.impl("rnn_forward", &rnn_forward_autograd);
  m.impl("rnn_backward", &rnn_backward_autograd);
  m.impl("rnn_cell_forward", &rnn_cell_forward_autograd);
  m.impl("rnn_cell_backward", &rnn_cell_backward_autograd);
}

}  // namespace fastrnn
