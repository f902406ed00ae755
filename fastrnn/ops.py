"""The fastrnn custom ops: schemas, CPU kernels and autograd in C++ (csrc/), fake kernels
here, CUDA kernels in fastrnn.triton and FLOP formulas in fastrnn.flop_formulas (both
registered on import of this module).

``torch.ops.fastrnn.rnn_forward`` runs a whole multi-layer, (bi)directional RNN and
``torch.ops.fastrnn.rnn_backward`` its backward; csrc/ops.cpp has the schemas.
``torch.ops.fastrnn.rnn_reference`` is fastrnn.reference as an op, through which the
backward is recomputed when autograd records it (gradients of gradients).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.jit import is_scripting

from fastrnn import flop_formulas
from fastrnn.reference import rnn_reference
from fastrnn.triton import registration

BUILD_HINT = (
    "fastrnn's C++ extension (fastrnn._C) is not built. Build it from the source tree with "
    "`pip install --no-build-isolation -e .` (torch must already be installed), or use "
    "fastrnn.set_backend('reference')."
)

try:
    from fastrnn import _C
except ImportError as error:  # the package still imports; the reference backend works
    _C = None
    _C_IMPORT_ERROR: ImportError | None = error
else:
    _C_IMPORT_ERROR = None


def require_extension() -> None:
    """Raise ImportError with build instructions when fastrnn._C is missing."""
    if _C is None:
        raise ImportError(f"{BUILD_HINT} (import error: {_C_IMPORT_ERROR})")


def initial_state(
    input: Tensor,  # [T, B, I], or packed [N, I] with batch_sizes
    weights: list[Tensor],
    batch_sizes: Tensor | None,  # [T] int64 on the CPU, or None
    num_layers: int,
    bidirectional: bool,
) -> Tensor:  # [L*D, B, H] zeros
    """The zero initial state that a missing hx stands for."""
    directions = 2 if bidirectional else 1
    batch = input.shape[1] if batch_sizes is None else int(batch_sizes[0])
    return input.new_zeros((num_layers * directions, batch, weights[1].shape[0]))


def rnn_op(
    input: Tensor,  # [T, B, I], or packed [N, I] with batch_sizes
    hx: Tensor | None,  # [L*D, B, H]; None: zeros (padded input only)
    weights: list[Tensor],
    batch_sizes: Tensor | None,  # [T] int64, CPU
    num_layers: int,
    bidirectional: bool,
    relu: bool,
) -> tuple[Tensor, Tensor]:  # output [T, B, D*H] or [N, D*H], h_n [L*D, B, H]
    """The fused RNN through the dispatcher (C++ on CPU, Triton on CUDA), with autograd."""
    if is_scripting():  # settled at compile time; TorchScript calls the op by name
        output, h_n, _ = torch.ops.fastrnn.rnn_forward(
            input, hx, weights, batch_sizes, num_layers, bidirectional, relu
        )
    else:
        if _RNN_FORWARD is None:
            require_extension()
        output, h_n, _ = _RNN_FORWARD(
            input, hx, weights, batch_sizes, num_layers, bidirectional, relu
        )
    return output, h_n


def _rnn_forward_fake(input, hx, weights, batch_sizes, num_layers, bidirectional, relu):
    if hx is None:
        if batch_sizes is not None:  # its batch size is data, which a fake cannot read
            raise RuntimeError("fastrnn: packed input needs hx")
        hx = initial_state(input, weights, None, num_layers, bidirectional)
    out_shape = (*input.shape[:-1], (2 if bidirectional else 1) * hx.shape[2])
    output = input.new_empty(out_shape)
    h_n = hx.new_empty(hx.shape)
    layer_outputs = input.new_empty((num_layers - 1, *out_shape))
    return output, h_n, layer_outputs


def _rnn_backward_fake(grad_output, grad_h_n, input, hx, weights, batch_sizes, output,
                       layer_outputs, num_layers, bidirectional, relu, need_input_grad,
                       need_hx_grad=True):  # fmt: skip
    return (
        input.new_empty(input.shape if need_input_grad else (0,)),
        hx.new_empty(hx.shape) if hx is not None and need_hx_grad else input.new_empty((0,)),
        [w.new_empty(w.shape) for w in weights],
    )


def rnn_cell_op(
    input: Tensor,  # [B, I]
    hx: Tensor,  # [B, H]
    weights: list[Tensor],  # w_ih, w_hh[, b_ih, b_hh]
    relu: bool,
) -> Tensor:  # [B, H]
    """One nn.RNNCell step through the C++ cell op (CPU), with autograd."""
    if not is_scripting():
        require_extension()
    b_ih = weights[2] if len(weights) == 4 else None
    b_hh = weights[3] if len(weights) == 4 else None
    return torch.ops.fastrnn.rnn_cell_forward(input, hx, weights[0], weights[1], b_ih, b_hh, relu)


def _rnn_cell_forward_fake(input, hx, w_ih, w_hh, b_ih, b_hh, relu):
    return input.new_empty((input.shape[0], w_hh.shape[0]))


def _rnn_cell_backward_fake(
    grad_h, input, hx, w_ih, w_hh, h_new, has_bias, relu, need_input_grad, need_hx_grad
):
    hidden = w_hh.shape[0]
    return (
        input.new_empty(input.shape if need_input_grad else (0, input.shape[1])),
        hx.new_empty(hx.shape if need_hx_grad else (0, hidden)),
        w_ih.new_empty(w_ih.shape),
        w_hh.new_empty(w_hh.shape),
        w_hh.new_empty((hidden if has_bias else 0,)),
    )


# The overload itself, looked up once: calling it skips the packet's overload resolution.
_RNN_FORWARD = torch.ops.fastrnn.rnn_forward.default if _C is not None else None

if _C is not None:
    _CUDA_KERNELS = registration.register("cuda")  # alive as long as the module
    torch.library.register_fake("fastrnn::rnn_forward")(_rnn_forward_fake)
    torch.library.register_fake("fastrnn::rnn_backward")(_rnn_backward_fake)
    torch.library.impl("fastrnn::rnn_reference", "CompositeImplicitAutograd", rnn_reference)
    torch.library.register_fake("fastrnn::rnn_cell_forward")(_rnn_cell_forward_fake)
    torch.library.register_fake("fastrnn::rnn_cell_backward")(_rnn_cell_backward_fake)
    flop_formulas.register_when_imported()
