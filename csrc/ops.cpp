// Schemas of the fastrnn ops.
//
// Their C++ signatures are in ops.h.  Kernels register beside their code: CPU in
// rnn_cpu.cpp and rnn_cell_cpu.cpp, autograd in autograd.cpp, fake (meta) kernels in
// fastrnn/ops.py, CUDA (Triton) in fastrnn/triton/registration.py.
#include <torch/library.h>

namespace fastrnn {

TORCH_LIBRARY(fastrnn, m) {
  // input: [T, B, I] (batch_sizes None) or packed [N, I] with batch_sizes [T] on the CPU.
  // hx: [L*D, B, H], or None for zeros (padded input only: a packed batch's size is data,
  // which fake tensors cannot see); weights: nn.RNN's flat list (w_ih, w_hh[, b_ih, b_hh])
  // per layer and direction.  Returns output [T, B, D*H] or [N, D*H], h_n [L*D, B, H] and the outputs of
  // the layers below the top, [L-1, *output.shape], which backward needs.
  m.def(
      "rnn_forward(Tensor input, Tensor? hx, Tensor[] weights, Tensor? batch_sizes, "
      "int num_layers, bool bidirectional, bool relu) -> (Tensor, Tensor, Tensor)");
  // grad_output / grad_h_n: None where that output did not reach the loss (zeros, which
  // the kernels then neither read nor need materialised).  Returns grad_input (empty [0]
  // unless need_input_grad: the input GEMM of layer 0 is skipped when nothing needs it),
  // grad_hx ([0] when hx is None or not need_hx_grad: the CPU kernels then skip each
  // direction's last product, dz W_hh of its first step; the Triton kernels compute it
  // and write nothing) and one gradient per weight.
  m.def(
      "rnn_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor input, Tensor? hx, "
      "Tensor[] weights, Tensor? batch_sizes, Tensor output, Tensor layer_outputs, "
      "int num_layers, bool bidirectional, bool relu, bool need_input_grad, "
      "bool need_hx_grad=True) -> (Tensor, Tensor, Tensor[])");
  // The same RNN in plain differentiable torch ops (fastrnn.reference, registered as this
  // op's CompositeImplicitAutograd kernel in fastrnn/ops.py): rnn_backward's autograd
  // recomputes through it, so that gradients of gradients are recorded.
  m.def(
      "rnn_reference(Tensor input, Tensor hx, Tensor[] weights, Tensor? batch_sizes, "
      "int num_layers, bool bidirectional, bool relu) -> (Tensor, Tensor)");
  // One nn.RNNCell step: input [B, I], hx [B, H] -> h' [B, H].
  m.def(
      "rnn_cell_forward(Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, bool relu) -> Tensor");
  // Returns grad_input, grad_hx (each [0] unless needed), grad_w_ih, grad_w_hh and the
  // bias gradient (the same for b_ih and b_hh; [0] without bias).
  m.def(
      "rnn_cell_backward(Tensor grad_h, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, "
      "Tensor h_new, bool has_bias, bool relu, bool need_input_grad, bool need_hx_grad) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

}  // namespace fastrnn
