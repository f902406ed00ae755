// CPU kernels of fastrnn::rnn_cell_forward / rnn_cell_backward: one nn.RNNCell step,
// h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), as two GEMMs into one output and a fused
// bias + activation pass.  A separate op from rnn_forward because a cell call is all
// fixed cost, and the sequence op's (T=1, tensor lists, a layer-output stack) made
// fastrnn.RNNCell slower than nn.RNNCell (docs/performance.md).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "activation.h"
#include "cpu_blas.h"
#include "cpu_dtypes.h"
#include "message_text.h"
#include "ops.h"
#include "recurrence_cpu.h"

namespace fastrnn {
namespace {

void check_cell(const at::Tensor& input, const at::Tensor& hx, const at::Tensor& w_ih,
                const at::Tensor& w_hh) {
  TORCH_CHECK(input.dim() == 2 && hx.dim() == 2,
              "fastrnn: rnn_cell takes input [B, I] and hx [B, H], got ", text(input.sizes()),
              " and ", text(hx.sizes()));
  const int64_t H = w_hh.size(0);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == H && w_ih.size(1) == input.size(1),
              "fastrnn: weight_ih must be [", text(H), ", ", text(input.size(1)), "], got ",
              text(w_ih.sizes()));
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(1) == H, "fastrnn: weight_hh must be [", text(H),
              ", ", text(H), "], got ", text(w_hh.sizes()));
  TORCH_CHECK(hx.size(0) == input.size(0) && hx.size(1) == H, "fastrnn: hx must be [",
              text(input.size(0)), ", ", text(H), "], got ", text(hx.sizes()));
  for (const auto* t : {&hx, &w_ih, &w_hh}) {
    TORCH_CHECK(t->scalar_type() == input.scalar_type(), "fastrnn: dtype ", t->scalar_type(),
                " does not match input dtype ", input.scalar_type());
  }
  check_cpu_dtype(input.scalar_type());
}

RnnCellForwardFn rnn_cell_forward_cpu;
RnnCellBackwardFn rnn_cell_backward_cpu;

at::Tensor rnn_cell_forward_cpu(const at::Tensor& input, const at::Tensor& hx,
                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const std::optional<at::Tensor>& b_ih,
                                const std::optional<at::Tensor>& b_hh, bool relu) {
  check_cell(input, hx, w_ih, w_hh);
  if (computed_in_float(input.scalar_type(), Pass::kForward, 1, input.size(0), input.size(1),
                        w_hh.size(0))) {
    return rnn_cell_forward_cpu(to_float(input), to_float(hx), to_float(w_ih), to_float(w_hh),
                                to_float(b_ih), to_float(b_hh), relu)
        .to(input.scalar_type());
  }
  const int64_t B = input.size(0), I = input.size(1), H = w_hh.size(0);
  const at::Tensor x = dense(input), h = dense(hx);
  const at::Tensor wi = dense(w_ih), wh = dense(w_hh);
  at::Tensor out = empty_cpu({B, H}, input.scalar_type());
  const bool has_bias = b_ih.has_value() && b_ih->defined();
  FASTRNN_DISPATCH_CPU_DTYPES(input.scalar_type(), "fastrnn_rnn_cell_forward_cpu", [&] {
    scalar_t* y = out.data_ptr<scalar_t>();
    std::vector<scalar_t> bias;
    if (has_bias) {
      bias.resize(H);
      summed_bias(*b_ih, *b_hh, bias.data());
    }
    const scalar_t* bias_left = input_projection(x.data_ptr<scalar_t>(), I, B, I,
                                                 wi.data_ptr<scalar_t>(),
                                                 has_bias ? bias.data() : nullptr, y, H, H);
    gemm<scalar_t>(false, true, B, H, H, 1, h.data_ptr<scalar_t>(), H, wh.data_ptr<scalar_t>(),
                   H, 1, y, H);
    bias_activation_rows(y, B, H, H, bias_left, relu);
  });
  return out;
}

// Returns grad_input, grad_hx, grad_w_ih, grad_w_hh, grad_bias (of b_ih and of b_hh
// alike; an empty [0] tensor without bias).
RnnCellBackwardResult rnn_cell_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& h_new, bool has_bias,
    bool relu, bool need_input_grad, bool need_hx_grad) {
  check_cell(input, hx, w_ih, w_hh);
  if (computed_in_float(input.scalar_type(), Pass::kBackward, 1, input.size(0), input.size(1),
                        w_hh.size(0))) {
    auto [gi, gh, gwi, gwh, gb] = rnn_cell_backward_cpu(
        to_float(grad_h), to_float(input), to_float(hx), to_float(w_ih), to_float(w_hh),
        to_float(h_new), has_bias, relu, need_input_grad, need_hx_grad);
    const auto dtype = input.scalar_type();
    return {gi.to(dtype), gh.to(dtype), gwi.to(dtype), gwh.to(dtype), gb.to(dtype)};
  }
  const int64_t B = input.size(0), I = input.size(1), H = w_hh.size(0);
  const at::Tensor x = dense(input), h = dense(hx), y = dense(h_new);
  const at::Tensor dy = dense(grad_h);
  const at::Tensor wi = dense(w_ih), wh = dense(w_hh);
  at::Tensor dz = empty_cpu({B, H}, x.scalar_type());
  at::Tensor grad_input = empty_cpu({need_input_grad ? B : 0, I}, x.scalar_type());
  at::Tensor grad_hx = empty_cpu({need_hx_grad ? B : 0, H}, x.scalar_type());
  at::Tensor grad_w_ih = empty_cpu({H, I}, x.scalar_type());
  at::Tensor grad_w_hh = empty_cpu({H, H}, x.scalar_type());
  at::Tensor grad_bias = empty_cpu({has_bias ? H : 0}, x.scalar_type());
  FASTRNN_DISPATCH_CPU_DTYPES(x.scalar_type(), "fastrnn_rnn_cell_backward_cpu", [&] {
    scalar_t* g = dz.data_ptr<scalar_t>();
    activation_backward_rows(g, dy.data_ptr<scalar_t>(), static_cast<scalar_t*>(nullptr),
                             y.data_ptr<scalar_t>(), B, H, H, H, relu);
    if (need_input_grad) {
      gemm<scalar_t>(false, false, B, I, H, 1, g, H, wi.data_ptr<scalar_t>(), I, 0,
                     grad_input.data_ptr<scalar_t>(), I);
    }
    if (need_hx_grad) {
      gemm<scalar_t>(false, false, B, H, H, 1, g, H, wh.data_ptr<scalar_t>(), H, 0,
                     grad_hx.data_ptr<scalar_t>(), H);
    }
    gemm<scalar_t>(true, false, H, I, B, 1, g, H, x.data_ptr<scalar_t>(), I, 0,
                   grad_w_ih.data_ptr<scalar_t>(), I);
    gemm<scalar_t>(true, false, H, H, B, 1, g, H, h.data_ptr<scalar_t>(), H, 0,
                   grad_w_hh.data_ptr<scalar_t>(), H);
    if (has_bias) column_sums(g, B, H, grad_bias.data_ptr<scalar_t>());
  });
  return {grad_input, grad_hx, grad_w_ih, grad_w_hh, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  m.impl("rnn_cell_forward", &rnn_cell_forward_cpu);
  m.impl("rnn_cell_backward", &rnn_cell_backward_cpu);
}

}  // namespace fastrnn
