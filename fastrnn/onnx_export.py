"""ONNX export of fastrnn.RNN / fastrnn.RNNCell as ONNX's own RNN operator: one node per
layer, both directions in it, which ONNX Runtime runs as one fused kernel.  Works with
both exporters of torch.onnx.export and no extra argument:

* dynamo exporter (``dynamo=True``, the default): while torch.onnx.is_in_onnx_export(),
  functional.rnn calls :func:`rnn_onnx`, whose RNN nodes are
  torch.onnx.ops.symbolic_multi_out and the rest plain torch ops;
* TorchScript exporter (``dynamo=False``): the traced fastrnn::rnn_forward op becomes the
  same nodes through the symbolic registered by :func:`register_torchscript_symbolic`.

Both build the graph with :func:`rnn_graph`, given the few node kinds of their exporter.
PackedSequence input cannot be expressed (ONNX's RNN takes padded input) and fails with
a message saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

PACKED_INPUT_ERROR = (
    "fastrnn: ONNX export of PackedSequence input is not supported: ONNX's RNN operator "
    "takes a padded [T, B, I] tensor.  Export the model on padded input (unpack with "
    "torch.nn.utils.rnn.pad_packed_sequence before the RNN, or pass the padded tensor)."
)


def rnn_graph(
    nodes: Any,  # the exporter's node kinds: stack, cat, cells, rnn, merge_directions
    input: Any,  # [T, B, I]
    hx: Any | None,  # [L*D, B, H], or None for zeros
    weights: list[Any],  # nn.RNN's flat list
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    relu: bool,
    between_layers: Callable[[Any], Any] = lambda y: y,
) -> tuple[Any, Any]:  # output [T, B, D*H], h_n [L*D, B, H]
    """nn.RNN as ONNX RNN nodes, one per layer.  ONNX's weights per node: W [D, H, I],
    R [D, H, H], B [D, 2H] (b_ih then b_hh), initial_h [D, B, H]."""
    directions = 2 if bidirectional else 1
    per_cell = len(weights) // (num_layers * directions)
    layer_input, finals = input, []
    for layer in range(num_layers):
        cells = [
            weights[(layer * directions + d) * per_cell : (layer * directions + d + 1) * per_cell]
            for d in range(directions)
        ]
        w = nodes.stack([cell[0] for cell in cells])
        r = nodes.stack([cell[1] for cell in cells])
        b = nodes.stack([nodes.cat(cell[2:4]) for cell in cells]) if per_cell == 4 else None
        h0 = None if hx is None else nodes.cells(hx, layer * directions, (layer + 1) * directions)
        y, h_n = nodes.rnn(
            layer_input,
            w,
            r,
            b,
            h0,
            activations=["Relu" if relu else "Tanh"] * directions,
            direction="bidirectional" if bidirectional else "forward",
            hidden_size=hidden_size,
        )
        layer_input = nodes.merge_directions(y)  # [T, D, B, H] -> [T, B, D*H]
        if layer < num_layers - 1:
            layer_input = between_layers(layer_input)
        finals.append(h_n)
    return layer_input, nodes.cat(finals)


class TorchNodes:
    """Node kinds for the dynamo exporter: torch ops, and the RNN node as a symbolic op."""

    stack = staticmethod(torch.stack)
    cat = staticmethod(torch.cat)

    @staticmethod
    def cells(hx: Tensor, start: int, end: int) -> Tensor:
        return hx[start:end]

    @staticmethod
    def rnn(x, w, r, b, h0, *, activations, direction, hidden_size):
        steps, batch = x.shape[0], x.shape[1]
        directions = w.shape[0]
        return torch.onnx.ops.symbolic_multi_out(
            "RNN",
            [x, w, r, b, None, h0],  # None: no sequence_lens
            {"activations": activations, "direction": direction, "hidden_size": hidden_size},
            dtypes=[x.dtype, x.dtype],
            shapes=[[steps, directions, batch, hidden_size], [directions, batch, hidden_size]],
        )

    @staticmethod
    def merge_directions(y: Tensor) -> Tensor:
        return y.permute(0, 2, 1, 3).flatten(2)


def rnn_onnx(
    input: Tensor,  # [T, B, I]
    hx: Tensor | None,  # [L*D, B, H]; None: zeros
    weights: list[Tensor],
    batch_sizes: Tensor | None,
    num_layers: int,
    bidirectional: bool,
    relu: bool,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[Tensor, Tensor]:
    """What functional.rnn runs under the dynamo ONNX exporter."""
    if batch_sizes is not None:
        raise RuntimeError(PACKED_INPUT_ERROR)

    def between_layers(y: Tensor) -> Tensor:
        return F.dropout(y, dropout, training) if dropout > 0 and training else y

    return rnn_graph(TorchNodes, input, hx, weights, weights[1].shape[0], num_layers,
                     bidirectional, relu, between_layers)  # fmt: skip


class TorchScriptNodes:
    """Node kinds for the TorchScript exporter: ONNX nodes in its graph context."""

    def __init__(self, g):
        from torch.onnx._internal.torchscript_exporter import symbolic_helper

        self.g, self.helper = g, symbolic_helper

    def stack(self, values):
        unsqueezed = [self.helper._unsqueeze_helper(self.g, v, [0]) for v in values]
        return self.cat(unsqueezed)

    def cat(self, values):
        return self.g.op("Concat", *values, axis_i=0)

    def cells(self, hx, start, end):
        return self.helper._slice_helper(self.g, hx, axes=[0], starts=[start], ends=[end])

    def missing(self):
        value = self.g.op("prim::Constant")
        value.setType(torch._C.OptionalType.ofTensor())
        return value

    def rnn(self, x, w, r, b, h0, *, activations, direction, hidden_size):
        inputs = [x, w, r, b, None, h0]
        return self.g.op(
            "RNN",
            *[self.missing() if v is None else v for v in inputs],
            outputs=2,
            activations_s=activations,
            direction_s=direction,
            hidden_size_i=hidden_size,
        )

    def merge_directions(self, y):
        y = self.g.op("Transpose", y, perm_i=[0, 2, 1, 3])
        shape = self.g.op("Constant", value_t=torch.tensor([0, 0, -1], dtype=torch.int64))
        return self.g.op("Reshape", y, shape)


def _rnn_forward_symbolic(g, input, hx, weights, batch_sizes, num_layers, bidirectional, relu):
    """fastrnn::rnn_forward for the TorchScript exporter."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper as helper

    if not helper._is_none(batch_sizes):
        raise torch.onnx.errors.SymbolicValueError(PACKED_INPUT_ERROR, input)
    weight_values = helper._unpack_list(weights)
    hidden_size = helper._get_tensor_dim_size(weight_values[1], 0)
    if hidden_size is None:
        raise torch.onnx.errors.SymbolicValueError(
            "fastrnn: ONNX export needs the hidden size, the first dimension of weight_hh_l0",
            input,
        )
    nodes = TorchScriptNodes(g)
    output, h_n = rnn_graph(
        nodes,
        input,
        None if helper._is_none(hx) else hx,
        weight_values,
        hidden_size,
        helper._get_const(num_layers, "i", "num_layers"),
        helper._get_const(bidirectional, "b", "bidirectional"),
        helper._get_const(relu, "b", "relu"),
    )
    # The third output (the layers' outputs, for backward) has no use in an exported graph
    # and is pruned; an Identity node stands for it (an untyped constant makes the exporter
    # warn, and reusing `output` would give output that output's shape).
    return output, h_n, g.op("Identity", output)


def register_torchscript_symbolic() -> None:
    """Lets torch.onnx.export(..., dynamo=False) turn fastrnn::rnn_forward into RNN nodes."""
    torch.onnx.register_custom_op_symbolic("fastrnn::rnn_forward", _rnn_forward_symbolic, 9)
