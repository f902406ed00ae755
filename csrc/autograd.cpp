// Autograd of the fastrnn ops (sequence and cell), in C++, registered for the Autograd
// key: one autograd for every backend (C++ CPU kernels, Triton CUDA kernels).
//
// C++ rather than torch.library.register_autograd: a Python autograd kernel cost ~30 µs
// per call, most of a training step at tutorial sizes (docs/performance.md).
//
// The backward ops get an autograd kernel too, for gradients of gradients
// (create_graph=True, as nn.RNN supports on the CPU): when autograd must record the
// backward, it is computed in plain differentiable torch ops instead of the kernels.
// Batched (vmapped) gradients take those torch ops too.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <utility>
#include <vector>

#include "autograd.h"
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
const Op<RnnReferenceFn>& rnn_reference() {
  static const Op<RnnReferenceFn> op("fastrnn::rnn_reference");
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

// Saved for backward besides tensors: RnnOptions, as one saved_data entry.
c10::IValue to_ivalue(const RnnOptions& o) {
  return c10::ivalue::Tuple::create(o.num_layers, o.bidirectional, o.relu);
}
RnnOptions options_from(const c10::IValue& v) {
  const auto& e = v.toTupleRef().elements();
  return {e[0].toInt(), e[1].toBool(), e[2].toBool()};
}

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

// Whether a gradient is vmapped (a legacy or a functorch batched tensor:
// jacobian(vectorize=True), autograd.grad(is_grads_batched=True)).  The kernels take one
// gradient, and vmap has no fallback for an op with tensor-list arguments; torch ops
// have batching rules.
bool batched(std::initializer_list<at::Tensor> grads) {
  const c10::DispatchKeySet keys({c10::DispatchKey::Batched, c10::DispatchKey::FuncTorchBatched});
  for (const auto& g : grads) {
    if (g.defined() && g.key_set().has_any(keys)) return true;
  }
  return false;
}

// The tensor itself when it requires grad, else a leaf alias that does, so that
// autograd::grad returns a gradient for every argument, as the kernels do.
at::Tensor differentiable(const at::Tensor& t) {
  return t.requires_grad() ? t : t.detach().requires_grad_(true);
}

// rnn_backward in torch ops: the forward recomputed through rnn_reference (plain torch
// ops) and differentiated, with create_graph=True where autograd records the backward.
// output and layer_outputs are not read: the recomputation stands for them, so gradients
// flow to the inputs.
RnnBackwardResult differentiable_rnn_backward(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_h_n,
    const at::Tensor& input, const std::optional<at::Tensor>& hx, at::TensorList weights,
    const std::optional<at::Tensor>& batch_sizes, int64_t num_layers, bool bidirectional,
    bool relu, bool need_input_grad, bool need_hx_grad, bool record) {
  at::AutoGradMode grad_mode(true);  // an unrecorded backward runs with grad mode off
  variable_list arguments{differentiable(input)};
  const int64_t directions = bidirectional ? 2 : 1;
  arguments.push_back(hx ? differentiable(*hx)
                         : input.new_zeros({num_layers * directions, input.size(1),
                                            weights[1].size(0)}));
  for (const auto& w : weights) arguments.push_back(differentiable(w));
  const std::vector<at::Tensor> weight_arguments(arguments.begin() + 2, arguments.end());
  auto [output, h_n] = rnn_reference()(arguments[0], arguments[1], weight_arguments,
                                       batch_sizes, num_layers, bidirectional, relu);
  variable_list outputs, output_grads;
  if (given(grad_output)) outputs.push_back(output), output_grads.push_back(*grad_output);
  if (given(grad_h_n)) outputs.push_back(h_n), output_grads.push_back(*grad_h_n);
  // Only what the schema returns: grad_input and grad_hx when needed (hx given).
  const bool hx_grad = hx && need_hx_grad;
  variable_list wrt;
  if (need_input_grad) wrt.push_back(arguments[0]);
  if (hx_grad) wrt.push_back(arguments[1]);
  wrt.insert(wrt.end(), weight_arguments.begin(), weight_arguments.end());
  variable_list grads = outputs.empty()
                            ? variable_list(wrt.size())
                            : torch::autograd::grad(outputs, wrt, output_grads,
                                                    /*retain_graph=*/record,
                                                    /*create_graph=*/record,
                                                    /*allow_unused=*/true);
  for (size_t i = 0; i < grads.size(); ++i) {  // unused (no gradient reached it): zeros
    if (!grads[i].defined()) grads[i] = at::zeros_like(wrt[i]);
  }
  auto next = grads.begin();
  at::Tensor grad_input = need_input_grad ? *next++ : input.new_empty({0});
  at::Tensor grad_hx = hx_grad ? *next++ : input.new_empty({0});
  return {grad_input, grad_hx, std::vector<at::Tensor>(next, grads.end())};
}

// rnn_cell_backward in differentiable torch ops, for a recorded or a batched backward.
// h_new carries its own graph (through RnnCellBackward), so second derivatives of the
// activation follow from differentiating 1 - h_new^2.
RnnCellBackwardResult differentiable_rnn_cell_backward(
    const at::Tensor& grad_h, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& h_new, bool has_bias,
    bool relu, bool need_input_grad, bool need_hx_grad) {
  const at::Tensor grad_pre =
      relu ? grad_h * (h_new > 0).to(grad_h.scalar_type()) : grad_h * (1 - h_new * h_new);
  return {need_input_grad ? grad_pre.mm(w_ih) : input.new_empty({0, input.size(1)}),
          need_hx_grad ? grad_pre.mm(w_hh) : hx.new_empty({0, hx.size(1)}),
          grad_pre.t().mm(input), grad_pre.t().mm(hx),
          has_bias ? grad_pre.sum(0) : w_hh.new_empty({0})};
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
    // needs_input_grad counts tensor arguments only: hx, when given, is the second.
    const bool hx_grad = hx && ctx->needs_input_grad(1);
    // Through the autograd kernel: under create_graph=True it records how the gradients
    // depend on the inputs.  Batched gradients cannot enter the op (see batched).
    auto [grad_input, grad_hx, grad_weights] =
        batched({grads[0], grads[1]})
            ? differentiable_rnn_backward(grad_output, grad_h_n, input, hx, weights,
                                          batch_sizes, o.num_layers, o.bidirectional, o.relu,
                                          ctx->needs_input_grad(0), hx_grad,
                                          at::GradMode::is_enabled())
            : rnn_backward()(grad_output, grad_h_n, input, hx, weights, batch_sizes, output,
                             layer_outputs, o.num_layers, o.bidirectional, o.relu,
                             ctx->needs_input_grad(0), hx_grad);
    variable_list flat{ctx->needs_input_grad(0) ? grad_input : at::Tensor(),
                       hx_grad ? grad_hx : at::Tensor()};
    flat.insert(flat.end(), grad_weights.begin(), grad_weights.end());
    // One entry per forward argument: input, hx, each weight, then the non-tensors.
    flat.resize(2 + weights.size() + 4);
    return flat;
  }
};

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
    bool need_input_grad, bool need_hx_grad) {
  if (!needs_graph({grad_output.value_or(at::Tensor()), grad_h_n.value_or(at::Tensor()),
                    input, hx.value_or(at::Tensor()), weights})) {
    // An ordinary backward pass: nothing to record.
    return rnn_backward().kernel(grad_output, grad_h_n, input, hx, weights, batch_sizes,
                                 output, layer_outputs, num_layers, bidirectional, relu,
                                 need_input_grad, need_hx_grad);
  }
  return differentiable_rnn_backward(grad_output, grad_h_n, input, hx, weights, batch_sizes,
                                     num_layers, bidirectional, relu, need_input_grad,
                                     need_hx_grad, /*record=*/true);
}

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
    const bool relu = ctx->saved_data["relu"].toBool();
    auto [gi, gh, gwi, gwh, gb] =
        batched({grads[0]})  // see batched
            ? differentiable_rnn_cell_backward(grads[0], saved[0], saved[1], saved[2],
                                               saved[3], saved[4], has_bias, relu, need_input,
                                               need_hx)
            : rnn_cell_backward()(grads[0], saved[0], saved[1], saved[2], saved[3], saved[4],
                                  has_bias, relu, need_input, need_hx);
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
  if (!needs_graph({{grad_h, input, hx, w_ih, w_hh, h_new}})) {
    // An ordinary backward pass: nothing to record.
    return rnn_cell_backward().kernel(grad_h, input, hx, w_ih, w_hh, h_new, has_bias, relu,
                                      need_input_grad, need_hx_grad);
  }
  return differentiable_rnn_cell_backward(grad_h, input, hx, w_ih, w_hh, h_new, has_bias, relu,
                                          need_input_grad, need_hx_grad);
}

}  // namespace

const std::type_info& rnn_backward_node_type() {
  return typeid(torch::autograd::CppNode<RnnBackward>);
}

const std::type_info& rnn_cell_backward_node_type() {
  return typeid(torch::autograd::CppNode<RnnCellBackward>);
}

TORCH_LIBRARY_IMPL(fastrnn, Autograd, m) {
  m.impl("rnn_forward", &rnn_forward_autograd);
  m.impl("rnn_backward", &rnn_backward_autograd);
  m.impl("rnn_cell_forward", &rnn_cell_forward_autograd);
  m.impl("rnn_cell_backward", &rnn_cell_backward_autograd);
}

}  // namespace fastrnn
