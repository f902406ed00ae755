// CPU kernels of fastrnn::rnn_forward / fastrnn::rnn_backward: the whole multi-layer,
// (bi)directional Elman RNN in one call, layer by layer and direction by direction on the
// recurrence of recurrence_cpu.h.
#include <torch/library.h>

#include <vector>

#include "cpu_blas.h"
#include "cpu_dtypes.h"
#include "ops.h"
#include "recurrence_cpu.h"
#include "rnn_arguments.h"

namespace fastrnn {
namespace {

// Where each layer reads its input and writes its output: layer 0 reads the op's input,
// the top layer writes the op's output, layer l < top writes layer_outputs[l].  Every
// buffer holds N rows; layer outputs have D*H columns.
template <typename Pointer>
struct LayerStack {
  Pointer input, output, layer_outputs;
  int64_t rows, input_size, DH, layers;

  Pointer layer_input(int64_t l) const { return l == 0 ? input : layer_outputs + (l - 1) * rows * DH; }
  Pointer layer_output(int64_t l) const {
    return l == layers - 1 ? output : layer_outputs + l * rows * DH;
  }
  int64_t layer_input_size(int64_t l) const { return l == 0 ? input_size : DH; }
};

// The op's input as layer 0 reads it: in place when dense or a batch_first input ([B, T,
// I] memory, seen as [T, B, I]), else a dense copy.
at::Tensor readable_input(const at::Tensor& input) {
  const bool batch_major = input.dim() == 3 && input.stride(2) == 1 &&
                           input.stride(0) == input.size(2) &&
                           input.stride(1) == input.size(0) * input.size(2);
  return batch_major ? input : dense(input);
}

// Layer l's input rows: the stack's dense buffers, but for layer 0 of a batch_first input
// x (as readable_input gives it), read where it is.
template <typename scalar_t, typename Pointer>
LayerInput<scalar_t> layer_rows(const LayerStack<Pointer>& stack, const at::Tensor& x,
                                const StepLayout& s, int64_t l) {
  if (l > 0 || x.is_contiguous()) {
    return LayerInput<scalar_t>::dense(stack.layer_input(l), stack.layer_input_size(l), s.batch);
  }
  return {x.const_data_ptr<scalar_t>(), x.size(-1), x.stride(0), x.stride(1)};
}

// Rows per step (packed input: on average), by which bfloat16/float16 pick how they run.
int64_t step_batch(const StepLayout& s) { return s.steps == 0 ? 0 : s.rows / s.steps; }

RnnForwardFn rnn_forward_cpu;
RnnBackwardFn rnn_backward_cpu;

RnnForwardResult rnn_forward_cpu(const at::Tensor& input, const std::optional<at::Tensor>& hx,
                                 at::TensorList weights,
                                 const std::optional<at::Tensor>& batch_sizes,
                                 int64_t num_layers, bool bidirectional, bool relu) {
  const StepLayout s = make_layout(input, batch_sizes, hx);
  const Geometry g = make_geometry(input, hx, weights, num_layers, bidirectional);
  check_cpu_dtype(input.scalar_type());  // make_geometry has matched every weight's to it
  if (computed_in_float(input.scalar_type(), Pass::kForward, s.steps, step_batch(s),
                        input.size(-1), g.hidden)) {
    auto [output, h_n, layer_outputs] =
        rnn_forward_cpu(to_float(input), to_float(hx), converted(weights, at::kFloat),
                        batch_sizes, num_layers, bidirectional, relu);
    const auto dtype = input.scalar_type();
    return {output.to(dtype), h_n.to(dtype), layer_outputs.to(dtype)};
  }
  const int64_t H = g.hidden, D = g.directions, DH = D * H;

  const at::Tensor x = readable_input(input);
  // Without hx the initial state is zero and its products are skipped (h0 pointers null).
  const at::Tensor h0 = given(hx) ? dense(*hx) : at::Tensor();
  const ForwardShapes shapes = forward_shapes(input, s, g);
  at::Tensor output = empty_cpu(shapes.output, input.scalar_type());
  at::Tensor layer_outputs = empty_cpu(shapes.layer_outputs, input.scalar_type());
  at::Tensor h_n = empty_cpu(shapes.h_n, input.scalar_type());

  FASTRNN_DISPATCH_CPU_DTYPES(input.scalar_type(), "fastrnn_rnn_forward_cpu", [&] {
    const LayerStack<scalar_t*> stack{x.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(),
                                      layer_outputs.data_ptr<scalar_t>(), s.rows,
                                      input.size(-1), DH, g.layers};
    std::vector<scalar_t> bias(H);
    for (int64_t l = 0; l < g.layers; ++l) {
      for (int64_t d = 0; d < D; ++d) {
        const int64_t cell = l * D + d;
        const int64_t base = g.first_weight(cell);
        if (g.has_bias) summed_bias(weights[base + 2], weights[base + 3], bias.data());
        const at::Tensor w_ih = dense(weights[base]);
        const at::Tensor w_hh = dense(weights[base + 1]);
        layer_forward<scalar_t>(s, layer_rows<scalar_t>(stack, x, s, l),
                                stack.layer_output(l) + d * H, DH,
                                w_ih.data_ptr<scalar_t>(),
                                w_hh.data_ptr<scalar_t>(), g.has_bias ? bias.data() : nullptr,
                                h0.defined() ? h0.data_ptr<scalar_t>() + cell * s.batch * H
                                             : nullptr,
                                h_n.data_ptr<scalar_t>() + cell * s.batch * H, H, d == 1, relu);
      }
    }
  });
  return {output, h_n, layer_outputs};
}

RnnBackwardResult rnn_backward_cpu(const std::optional<at::Tensor>& grad_output,
                                   const std::optional<at::Tensor>& grad_h_n,
                                   const at::Tensor& input, const std::optional<at::Tensor>& hx,
                                   at::TensorList weights,
                                   const std::optional<at::Tensor>& batch_sizes,
                                   const at::Tensor& output, const at::Tensor& layer_outputs,
                                   int64_t num_layers, bool bidirectional, bool relu,
                                   bool need_input_grad, bool need_hx_grad) {
  const StepLayout s = make_layout(input, batch_sizes, hx);
  const Geometry g = make_geometry(input, hx, weights, num_layers, bidirectional);
  check_cpu_dtype(input.scalar_type());
  check_backward_arguments(grad_output, grad_h_n, input, output, layer_outputs, s, g);
  if (computed_in_float(input.scalar_type(), Pass::kBackward, s.steps, step_batch(s),
                        input.size(-1), g.hidden)) {
    auto [grad_input, grad_hx, grad_weights] = rnn_backward_cpu(
        to_float(grad_output), to_float(grad_h_n), to_float(input), to_float(hx),
        converted(weights, at::kFloat), batch_sizes, to_float(output), to_float(layer_outputs),
        num_layers, bidirectional, relu, need_input_grad, need_hx_grad);
    const auto dtype = input.scalar_type();
    return {grad_input.to(dtype), grad_hx.to(dtype), converted(grad_weights, dtype)};
  }
  const int64_t H = g.hidden, D = g.directions, DH = D * H;

  const at::Tensor x = readable_input(input);
  const at::Tensor h0 = given(hx) ? dense(*hx) : at::Tensor();  // undefined: zeros
  const at::Tensor y_last = dense(output);
  const at::Tensor y_stack = dense(layer_outputs);
  const auto dtype = x.scalar_type();
  at::Tensor grad_input = empty_cpu(need_input_grad ? x.sizes() : at::IntArrayRef{0}, dtype);
  // dh of every cell, grad of h_n on entry; it becomes the grad of hx in place, which is
  // returned only when hx was given and needs it (else [0]).
  const bool hx_grad = given(hx) && need_hx_grad;
  at::Tensor grad_hx = given(grad_h_n) ? dense_copy(*grad_h_n)
                                       : at::zeros(forward_shapes(input, s, g).h_n, x.options());
  std::vector<at::Tensor> grad_weights;
  grad_weights.reserve(weights.size());
  for (const auto& w : weights) grad_weights.push_back(empty_cpu(w.sizes(), w.scalar_type()));

  at::Tensor dz = empty_cpu({s.rows, H}, dtype);
  const bool packed = given(batch_sizes);
  at::Tensor h_prev = empty_cpu({packed || s.steps == 0 ? s.rows : 0, H}, dtype);
  // Gradient w.r.t. the current layer's output: grad_output for the top layer, then the
  // input gradient of the layer above.
  // A missing gradient is zeros, materialised here: the CPU loops read every row.
  at::Tensor grad_y = given(grad_output) ? dense(*grad_output) : at::zeros_like(y_last);

  FASTRNN_DISPATCH_CPU_DTYPES(dtype, "fastrnn_rnn_backward_cpu", [&] {
    const LayerStack<const scalar_t*> stack{x.data_ptr<scalar_t>(), y_last.data_ptr<scalar_t>(),
                                            y_stack.data_ptr<scalar_t>(), s.rows,
                                            input.size(-1), DH, g.layers};
    for (int64_t l = g.layers - 1; l >= 0; --l) {
      const scalar_t* layer_out = stack.layer_output(l);
      const int64_t layer_in_size = stack.layer_input_size(l);
      at::Tensor grad_below = l == 0 ? grad_input : empty_cpu({s.rows, DH}, dtype);
      scalar_t* d_in = grad_below.data_ptr<scalar_t>();
      for (int64_t d = 0; d < D; ++d) {
        const int64_t cell = l * D + d;
        const int64_t base = g.first_weight(cell);
        const at::Tensor w_ih = dense(weights[base]);
        const at::Tensor w_hh = dense(weights[base + 1]);
        const bool reverse = d == 1;
        scalar_t* dh = grad_hx.data_ptr<scalar_t>() + cell * s.batch * H;
        const scalar_t* h0_cell =
            h0.defined() ? h0.data_ptr<scalar_t>() + cell * s.batch * H : nullptr;
        layer_backward_through_time<scalar_t>(s, grad_y.data_ptr<scalar_t>() + d * H,
                                              layer_out + d * H, DH, w_hh.data_ptr<scalar_t>(),
                                              dh, dz.data_ptr<scalar_t>(), H, reverse, relu,
                                              /*need_h0_grad=*/hx_grad);
        const scalar_t* dz_p = dz.data_ptr<scalar_t>();
        input_weight_grad<scalar_t>(s, layer_rows<scalar_t>(stack, x, s, l), dz_p,
                                    grad_weights[base].data_ptr<scalar_t>(), H);
        recurrent_weight_grad<scalar_t>(s, packed, dz_p, layer_out + d * H, DH, h0_cell,
                                        h_prev.data_ptr<scalar_t>(),
                                        grad_weights[base + 1].data_ptr<scalar_t>(), H, reverse);
        if (g.has_bias) {
          scalar_t* db_ih = grad_weights[base + 2].data_ptr<scalar_t>();
          column_sums(dz_p, s.rows, H, db_ih);
          std::memcpy(grad_weights[base + 3].data_ptr<scalar_t>(), db_ih, sizeof(scalar_t) * H);
        }
        // Both directions read the same layer input: the second accumulates.
        if (l == 0 && !need_input_grad) continue;
        gemm<scalar_t>(false, false, s.rows, layer_in_size, H, 1, dz_p, H,
                       w_ih.data_ptr<scalar_t>(), layer_in_size, d == 0 ? 0 : 1, d_in,
                       layer_in_size);
      }
      grad_y = grad_below;
    }
  });
  if (!hx_grad) grad_hx = empty_cpu({0}, dtype);
  return {grad_input, grad_hx, grad_weights};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  m.impl("rnn_forward", &rnn_forward_cpu);
  m.impl("rnn_backward", &rnn_backward_cpu);
}

}  // namespace fastrnn
