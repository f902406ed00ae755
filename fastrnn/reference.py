"""Pure-PyTorch reference of the Elman RNN: the math of ``nn.RNN``, written for reading.

Used by the tests as the readable statement of what every kernel computes, and by the
``reference`` backend (autograd through plain torch ops, any device and dtype).

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu

Sequences are rows grouped by time step (fastrnn.layout); a sequence's final state is
its state after its last valid step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fastrnn.layout import step_size_list


def rnn_reference(
    input: Tensor,  # [T, B, I], or packed [N, I] when batch_sizes is given
    hx: Tensor,  # [L*D, B, H]
    weights: list[Tensor],  # per layer and direction: w_ih, w_hh[, b_ih, b_hh]
    batch_sizes: Tensor | None,  # [T] int64 on the CPU, or None
    num_layers: int,
    bidirectional: bool,
    relu: bool,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[Tensor, Tensor]:  # output [T, B, D*H] or [N, D*H], h_n [L*D, B, H]
    act = torch.relu if relu else torch.tanh
    directions = 2 if bidirectional else 1
    per_cell = len(weights) // (num_layers * directions)
    sizes = step_size_list(input, batch_sizes)  # rows of each step
    padded = batch_sizes is None  # every row runs every step
    layer_input = input.reshape(sum(sizes), input.shape[-1])

    final_states = []
    for layer in range(num_layers):
        direction_outputs = []
        for direction in range(directions):
            cell = layer * directions + direction
            w_ih, w_hh, *biases = weights[cell * per_cell : (cell + 1) * per_cell]
            b_ih, b_hh = biases if biases else (None, None)
            # Summed in ATen's order on the CPU (x W_ih^T + b_ih, every step at once; then
            # h W_hh^T + b_hh plus it), so that low precision rounds as nn.RNN does.
            projected = F.linear(layer_input, w_ih, b_ih)  # [N, H]
            # One view per step; split, not slicing per step, so that autograd's backward
            # of it is one concatenation rather than a zero-filled [N, H] per step.
            step_inputs = projected.split(sizes)
            h = hx[cell]  # [B, H]
            outputs: list[Tensor] = [projected[:0]] * len(sizes)
            order = range(len(sizes)) if direction == 0 else reversed(range(len(sizes)))
            for t in order:
                rows = sizes[t]
                h_new = act(F.linear(h if padded else h[:rows], w_hh, b_hh) + step_inputs[t])
                # Packed: rows past batch_sizes[t] have ended (or, in reverse, not started).
                h = h_new if padded else torch.cat([h_new, h[rows:]])
                outputs[t] = h_new
            final_states.append(h)
            direction_outputs.append(torch.cat(outputs))
        layer_input = torch.cat(direction_outputs, dim=1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)

    output = layer_input
    if batch_sizes is None:
        output = output.reshape(input.shape[0], input.shape[1], output.shape[1])
    return output, torch.stack(final_states)
