"""fastrnn's Triton backend: fused recurrence kernels (kernels.py), the launch functions
that run a whole multi-layer RNN on them (launch.py), and the autograd glue used on CPU
tensors under the Triton interpreter.

On CUDA tensors the launch functions are the CUDA kernels of the fastrnn custom ops
(registered in fastrnn/ops.py), so they share autograd, fake kernels and torch.compile
support with the C++ CPU path.  CPU tensors cannot reach a "cuda" kernel through the
dispatcher, so under TRITON_INTERPRET=1 the same launch functions run through
TritonInterpretedRNN, an autograd.Function that saves and differentiates exactly as the
ops' C++ autograd (csrc/autograd.cpp) does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastrnn import ops
from fastrnn.triton.launch import rnn_backward_triton, rnn_forward_triton


class TritonInterpretedRNN(torch.autograd.Function):
    @staticmethod
    def forward(input, hx, batch_sizes, num_layers, bidirectional, relu, *weights):
        return rnn_forward_triton(
            input, hx, list(weights), batch_sizes, num_layers, bidirectional, relu
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, hx, batch_sizes, num_layers, bidirectional, relu, *weights = inputs
        out, _, layer_outputs = output
        ctx.mark_non_differentiable(layer_outputs)
        ctx.num_weights = len(weights)
        ctx.config = (batch_sizes, num_layers, bidirectional, relu)
        ctx.save_for_backward(input, hx, out, layer_outputs, *weights)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, grad_h_n, _grad_layer_outputs):
        input, hx, out, layer_outputs, *weights = ctx.saved_tensors
        batch_sizes, num_layers, bidirectional, relu = ctx.config
        grad_input, grad_hx, grad_weights = rnn_backward_triton(
            torch.zeros_like(out) if grad_output is None else grad_output,
            torch.zeros_like(hx) if grad_h_n is None else grad_h_n,
            input,
            hx,
            weights,
            batch_sizes,
            out,
            layer_outputs,
            num_layers,
            bidirectional,
            relu,
            ctx.needs_input_grad[0],
        )
        grad_input = grad_input if ctx.needs_input_grad[0] else None
        return grad_input, grad_hx, None, None, None, None, *grad_weights


def rnn_triton(
    input: Tensor,
    hx: Tensor,
    weights: list[Tensor],
    batch_sizes: Tensor | None,
    num_layers: int,
    bidirectional: bool,
    relu: bool,
) -> tuple[Tensor, Tensor]:
    """The fused RNN on Triton kernels: the custom op on CUDA, the interpreter on CPU."""
    if input.is_cuda:
        return ops.rnn_op(input, hx, weights, batch_sizes, num_layers, bidirectional, relu)
    output, h_n, _ = TritonInterpretedRNN.apply(
        input, hx, batch_sizes, num_layers, bidirectional, relu, *weights
    )
    return output, h_n
