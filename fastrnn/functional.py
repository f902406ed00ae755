"""fastrnn.functional.rnn: one entry point that routes to the selected backend."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.jit import is_scripting

from fastrnn import backend
from fastrnn.onnx_export import rnn_onnx
from fastrnn.ops import initial_state, rnn_cell_op, rnn_op
from fastrnn.reference import rnn_reference


def exporting_to_onnx() -> bool:
    """True inside torch.onnx.export (either exporter); cheap outside any tracing."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()) and (
        torch.onnx.is_in_onnx_export()
    )


def autocasting(device_type: str) -> bool:
    """torch.is_autocast_enabled for that device type; False on the meta device, which
    that call refuses (nn.RNN runs there, for shapes)."""
    return device_type != "meta" and torch.is_autocast_enabled(device_type)


def rnn(
    input: Tensor,  # [T, B, I], or packed [N, I] with batch_sizes
    hx: Tensor | None,  # [L*D, B, H]; None: zeros
    weights: list[Tensor],  # nn.RNN's _flat_weights order
    batch_sizes: Tensor | None,  # [T] int64 on the CPU, or None
    num_layers: int,
    bidirectional: bool,
    relu: bool,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[Tensor, Tensor]:  # output [T, B, D*H] or [N, D*H], h_n [L*D, B, H]
    """The Elman RNN over a whole sequence, on the backend fastrnn.backend selects.

    TorchScript compiles it (scripted fastrnn modules call it): there the fused op runs
    (C++ on CPU, Triton on CUDA), without the Python-only choices of the first block."""
    if not is_scripting():  # settled at compile time: TorchScript skips this block
        if torch.compiler.is_compiling() and torch.onnx.is_in_onnx_export():  # dynamo exporter
            return rnn_onnx(
                input, hx, weights, batch_sizes, num_layers, bidirectional, relu, dropout,
                training,
            )  # fmt: skip
        device = input.device
        if autocasting(device.type):
            # As nn.RNN under autocast: every floating input in the autocast dtype, the RNN
            # run in it.
            dtype = torch.get_autocast_dtype(device.type)
            with torch.autocast(device.type, enabled=False):
                return rnn(
                    input.to(dtype), None if hx is None else hx.to(dtype),
                    [w.to(dtype) for w in weights], batch_sizes,
                    num_layers, bidirectional, relu, dropout, training,
                )  # fmt: skip
        if backend.resolve(device, input.dtype) == "reference":
            if hx is None:
                hx = initial_state(input, weights, batch_sizes, num_layers, bidirectional)
            return rnn_reference(
                input, hx, weights, batch_sizes, num_layers, bidirectional, relu, dropout,
                training,
            )  # fmt: skip
    per_layer_dropout = dropout > 0 and training and num_layers > 1
    # Where hx=None is decided: the fused op takes None for padded input and skips the
    # zero state's work; a packed batch's size is data its fake kernel cannot read, and
    # the per-layer calls slice hx, so those get zeros here.
    if hx is None and (batch_sizes is not None or per_layer_dropout):
        hx = initial_state(input, weights, batch_sizes, num_layers, bidirectional)
    if not per_layer_dropout:
        return rnn_op(input, hx, weights, batch_sizes, num_layers, bidirectional, relu)
    assert hx is not None  # for TorchScript's type refinement
    # Dropout sits between layers, so each layer is its own fused call.  F.dropout on the
    # layer output is what ATen's nn.RNN applies, drawing from the same generator.
    directions = 2 if bidirectional else 1
    per_layer = len(weights) // num_layers
    layer_input, final_states = input, []
    for layer in range(num_layers):
        output, h_n = rnn_op(
            layer_input,
            hx[layer * directions : (layer + 1) * directions],
            weights[layer * per_layer : (layer + 1) * per_layer],
            batch_sizes,
            1,
            bidirectional,
            relu,
        )
        final_states.append(h_n)
        layer_input = F.dropout(output, dropout, True) if layer < num_layers - 1 else output
    return layer_input, torch.cat(final_states)


def rnn_cell(
    input: Tensor,  # [B, I]
    hx: Tensor,  # [B, H]
    weights: list[Tensor],  # w_ih, w_hh[, b_ih, b_hh]
    relu: bool,
) -> Tensor:  # [B, H]
    """One Elman cell step (nn.RNNCell math), on the backend fastrnn.backend selects.

    TorchScript compiles it as it does rnn: the C++ cell op on CPU, the fused RNN else."""
    if is_scripting():  # settled at compile time
        cell_op = input.device.type == "cpu"
    else:
        cell_op = (
            not autocasting(input.device.type)
            and not exporting_to_onnx()
            and backend.resolve(input.device, input.dtype) == "cpp"
        )
    if cell_op:
        return rnn_cell_op(input, hx, weights, relu)  # the dedicated C++ cell op
    # Elsewhere (and in ONNX export: one RNN node) a cell step is the sequence RNN, T=1.
    _, h_n = rnn(input.unsqueeze(0), hx.unsqueeze(0), weights, None, 1, False, relu)
    return h_n[0]
