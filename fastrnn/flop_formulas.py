"""FLOP formulas of the fused ops for torch.utils.flop_counter.FlopCounterMode.

They count as FlopCounterMode counts nn.RNN's matrix products on the CPU: 2 per
multiply-add of x W_ih^T and h W_hh^T (biases and activations are not counted, as for
addmm), and in a backward 2 per multiply-add of each gradient product the op computes.

torch.utils.flop_counter imports triton (~170 ms on a CPU), so ``import fastrnn`` does
not import it: the formulas are registered when it is first imported (FlopCounterMode
copies its registry when constructed, so they must be there by then).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from math import prod

import torch

FLOP_COUNTER_MODULE = "torch.utils.flop_counter"


def _cells(weight_shapes: list, num_layers: int, bidirectional: bool):
    """(W_ih shape, W_hh shape) of each layer and direction, in nn.RNN's weight order."""
    per_cell = len(weight_shapes) // (num_layers * (2 if bidirectional else 1))  # 2 or 4
    return [
        (weight_shapes[i], weight_shapes[i + 1]) for i in range(0, len(weight_shapes), per_cell)
    ]


def rnn_forward_flops(
    input_shape,
    hx_shape,
    weight_shapes,
    batch_sizes_shape,
    num_layers,
    bidirectional,
    relu,
    out_shape=None,
) -> int:
    """Every step's x W_ih^T and h W_hh^T, in every layer and direction (a zero initial
    state's product counted too, as nn.RNN computes it)."""
    rows = prod(input_shape[:-1])  # T*B padded, N packed
    return sum(
        2 * rows * (prod(w_ih) + prod(w_hh))
        for w_ih, w_hh in _cells(weight_shapes, num_layers, bidirectional)
    )


def rnn_backward_flops(
    grad_output_shape,
    grad_h_n_shape,
    input_shape,
    hx_shape,
    weight_shapes,
    batch_sizes_shape,
    output_shape,
    layer_outputs_shape,
    num_layers,
    bidirectional,
    relu,
    need_input_grad,
    need_hx_grad=True,
    out_shape=None,
) -> int:
    """Per layer and direction: the weight gradients, the gradient to the layer's input
    (layer 0's only when needed) and the gradient through h_{t-1} W_hh^T, whose product
    for the rows that start from hx the CPU kernels compute only when hx is given and needs
    it (the Triton kernels always do).  Those rows are known from the shapes for padded
    input (B) and for a packed forward direction (batch_sizes[0]); a packed reverse
    direction's (batch_sizes[-1]) are counted."""
    rows = prod(input_shape[:-1])
    packed = batch_sizes_shape is not None
    directions = 2 if bidirectional else 1
    total = 0
    for cell, (w_ih, w_hh) in enumerate(_cells(weight_shapes, num_layers, bidirectional)):
        input_grad = need_input_grad or cell >= directions
        reverse = cell % directions == 1
        skipped_rows = 0  # rows starting from hx whose product is not computed
        if hx_shape is None or not need_hx_grad:
            if not packed:
                skipped_rows = input_shape[1]
            elif not reverse:
                skipped_rows = hx_shape[1]
        total += 2 * rows * (prod(w_ih) + prod(w_hh))  # dW_ih, dW_hh
        total += 2 * rows * prod(w_ih) * input_grad
        total += 2 * (rows - skipped_rows) * prod(w_hh)
    return total


def rnn_cell_forward_flops(
    input_shape, hx_shape, w_ih_shape, w_hh_shape, b_ih_shape, b_hh_shape, relu, out_shape=None
) -> int:
    return 2 * input_shape[0] * (prod(w_ih_shape) + prod(w_hh_shape))


def rnn_cell_backward_flops(
    grad_h_shape,
    input_shape,
    hx_shape,
    w_ih_shape,
    w_hh_shape,
    h_new_shape,
    has_bias,
    relu,
    need_input_grad,
    need_hx_grad,
    out_shape=None,
) -> int:
    """The weight gradients, and the input and hx gradients where needed."""
    rows = input_shape[0]
    weight_grads = 2 * rows * (prod(w_ih_shape) + prod(w_hh_shape))
    return (
        weight_grads
        + 2 * rows * prod(w_ih_shape) * need_input_grad
        + 2 * rows * prod(w_hh_shape) * need_hx_grad
    )


def register(flop_counter) -> None:
    """Add the formulas to torch.utils.flop_counter's registry."""
    ops = torch.ops.fastrnn
    formulas = {
        ops.rnn_forward: rnn_forward_flops,
        ops.rnn_backward: rnn_backward_flops,
        ops.rnn_cell_forward: rnn_cell_forward_flops,
        ops.rnn_cell_backward: rnn_cell_backward_flops,
    }
    for op, formula in formulas.items():
        if op not in flop_counter.flop_registry:  # once, if fastrnn.ops is reloaded
            flop_counter.register_flop_formula(op)(formula)


def _register_or_warn(flop_counter) -> None:
    # Called inside the user's import of flop_counter: a failure here must not fail it.
    try:
        register(flop_counter)
    except Exception as error:
        warnings.warn(
            f"fastrnn: FlopCounterMode will count no FLOPs for fastrnn's ops: "
            f"registering their formulas failed ({error!r})",
            stacklevel=2,
        )


class _RegisteringLoader(importlib.abc.Loader):
    """torch.utils.flop_counter's own loader, which may serve other modules too (a zip
    importer's does), wrapped to register the formulas after the module has run."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _register_or_warn(module)

    def __getattr__(self, name):  # get_source, get_code, ...: the loader's own
        return getattr(self.loader, name)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds torch.utils.flop_counter as the import system would, with a loader that
    registers the formulas once it has run; then leaves sys.meta_path."""

    def find_spec(self, fullname, path, target=None):
        if fullname != FLOP_COUNTER_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def register_when_imported() -> None:
    """Register the formulas now if torch.utils.flop_counter is imported, else on its
    import."""
    module = sys.modules.get(FLOP_COUNTER_MODULE)
    if module is not None:
        _register_or_warn(module)
    elif not any(isinstance(finder, _RegisterOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
