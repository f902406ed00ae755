"""Launch functions: the whole multi-layer RNN forward / backward on top of kernels.py.

Same signatures as the fastrnn::rnn_forward / rnn_backward ops, whose CUDA kernels they
are (registered in fastrnn/ops.py).  The GEMMs outside the recurrence are torch ops
(cuBLAS on a GPU).
"""

from __future__ import annotations

import dataclasses

import torch
import triton
from torch import Tensor

from fastrnn.triton import kernels

# Largest padded H of the persistent tier, per dtype: the largest that ptxas compiles
# without register spills for sm_80 and sm_90 (python -m fastrnn.triton.cubin_report;
# fp32 forward at H=128 spilled 12.9 KB/thread at 8 warps, 4.2 KB at 16).
MAX_PERSISTENT_H = {torch.float32: 64, torch.float64: 64, torch.float16: 128, torch.bfloat16: 128}
# Stepwise tier tiles: 64-wide hidden tiles, K streamed 32 at a time.
STEP_BLOCK_N = 64
STEP_BLOCK_K = 32
# Batch rows per program: tl.dot needs at least 16.
BLOCK_B = 16

ACC_DTYPE = {
    torch.float64: triton.language.float64,
    torch.float32: triton.language.float32,
    torch.float16: triton.language.float32,
    torch.bfloat16: triton.language.float32,
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which tier and tiles run hidden size H in dtype; depends on (H, dtype) only."""

    tier: str  # "persistent" or "stepwise"
    block_h: int
    num_warps: int


def plan(hidden: int, dtype: torch.dtype, force_tier: str | None = None) -> Plan:
    block_h = max(16, triton.next_power_of_2(hidden))
    tier = force_tier or ("persistent" if block_h <= MAX_PERSISTENT_H[dtype] else "stepwise")
    if tier == "persistent":
        # 8 warps where 4 spill: fp32 forward at H=64 used 255 registers + 940 B spill
        # at 4 warps, 243 and none at 8; H=128 (fp16/bf16) needs 8 warps to stay < 150.
        wide = block_h >= 128 or (dtype == torch.float32 and block_h == 64)
        return Plan("persistent", block_h, 8 if wide else 4)
    return Plan("stepwise", block_h, 4)


# Tests set this to run the stepwise tier on small H under the interpreter.
FORCE_TIER: str | None = None


def dot_precision(dtype: torch.dtype) -> str:
    """TF32 only for fp32 and only when torch allows it for matmuls (default: IEEE)."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


@dataclasses.dataclass
class Layout:
    steps: int
    batch: int
    rows: int
    batch_sizes: Tensor  # [T] int64 on the device
    offsets: Tensor  # [T] int64 on the device
    batch_sizes_cpu: Tensor  # [T] int64


def make_layout(input: Tensor, hx: Tensor, batch_sizes: Tensor | None) -> Layout:
    if batch_sizes is None:
        steps, batch = input.shape[0], input.shape[1]
        sizes = torch.full((steps,), batch, dtype=torch.int64)
    else:
        sizes = batch_sizes.to("cpu", torch.int64)
        steps, batch = sizes.numel(), hx.shape[1]
    offsets = torch.cumsum(sizes, 0) - sizes
    return Layout(
        steps, batch, int(sizes.sum()), sizes.to(input.device), offsets.to(input.device), sizes
    )


def _cell_weights(weights, cell, per_cell):
    return weights[cell * per_cell : (cell + 1) * per_cell]


def _run_recurrence(persistent_kernel, step_kernel, data, state_in, state_out, w_hh,
                    lay: Layout, reverse: bool, relu: bool, backward: bool):  # fmt: skip
    """Runs one direction's recurrence on the tier plan() picks.  Both kernels of a pair
    take (*data, state_in, state_out, W_hh, batch_sizes, offsets, row stride, T or t, B,
    H); the forward processes steps in time order (reverse: backwards), the backward in
    the opposite order.  state_in is never written."""
    if lay.batch == 0:
        return
    hidden = w_hh.shape[0]
    dtype = w_hh.dtype
    p = plan(hidden, dtype, FORCE_TIER)
    y = data[1]  # the saved output rows in both directions of travel
    common = dict(RELU=relu, BLOCK_B=BLOCK_B, ACC_DTYPE=ACC_DTYPE[dtype],
                  DOT_PRECISION=dot_precision(dtype), num_warps=p.num_warps)  # fmt: skip
    grid_b = triton.cdiv(lay.batch, BLOCK_B)
    tail = (lay.batch_sizes, lay.offsets, y.stride(0))
    if p.tier == "persistent":
        persistent_kernel[(grid_b,)](
            *data, state_in, state_out, w_hh, *tail, lay.steps, lay.batch, hidden,
            REVERSE=reverse, BLOCK_H=p.block_h, **common,
        )  # fmt: skip
        return
    # Stepwise: the state lives in two fp32 (fp64) buffers swapped every step.
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    current = state_in.to(state_dtype, copy=True)
    following = torch.empty_like(current)
    grid = (grid_b, triton.cdiv(hidden, STEP_BLOCK_N))
    descending = reverse != backward
    for i in range(lay.steps):
        t = lay.steps - 1 - i if descending else i
        step_kernel[grid](
            *data, current, following, w_hh, *tail, t, lay.batch, hidden,
            BLOCK_N=STEP_BLOCK_N, BLOCK_K=STEP_BLOCK_K, **common,
        )  # fmt: skip
        current, following = following, current
    state_out.copy_(current)


def _recurrence_forward(xp, y, h0, h_n, w_hh, lay: Layout, reverse: bool, relu: bool):
    """y[rows] = act(xp + h_prev @ W_hh^T) for every step; h_n = final states."""
    _run_recurrence(kernels.rnn_forward_persistent_kernel, kernels.rnn_forward_step_kernel,
                    (xp, y), h0, h_n, w_hh, lay, reverse, relu, backward=False)  # fmt: skip


def _recurrence_backward(dy, y, dz, dh_n, dh0, w_hh, lay: Layout, reverse: bool, relu: bool):
    """dz[rows] = (dy + dh) * act'(y), dh = dz @ W_hh, through time in reverse."""
    _run_recurrence(kernels.rnn_backward_persistent_kernel, kernels.rnn_backward_step_kernel,
                    (dy, y, dz), dh_n, dh0, w_hh, lay, reverse, relu, backward=True)  # fmt: skip


def previous_rows(lay: Layout, reverse: bool) -> Tensor:  # [N] int64
    """For each row, where its h_prev lives in cat([y, h0]): a y row or N + batch index."""
    sizes = lay.batch_sizes_cpu
    steps = torch.repeat_interleave(torch.arange(lay.steps), sizes)
    offsets = torch.cumsum(sizes, 0) - sizes
    index_in_step = torch.arange(lay.rows) - offsets[steps]
    from_h0 = lay.rows + index_in_step
    if not reverse:
        prev_step = (steps - 1).clamp(min=0)
        prev = torch.where(steps > 0, offsets[prev_step] + index_in_step, from_h0)
    else:
        next_step = (steps + 1).clamp(max=max(lay.steps - 1, 0))
        next_size = torch.where(steps + 1 < lay.steps, sizes[next_step], 0)
        prev = torch.where(index_in_step < next_size, offsets[next_step] + index_in_step, from_h0)
    return prev


def rnn_forward_triton(input, hx, weights, batch_sizes, num_layers, bidirectional, relu):
    """fastrnn::rnn_forward on Triton: (output, h_n, layer_outputs)."""
    lay = make_layout(input, hx, batch_sizes)
    directions = 2 if bidirectional else 1
    hidden = hx.shape[2]
    per_cell = len(weights) // (num_layers * directions)
    x = input.reshape(lay.rows, input.shape[-1])
    out_shape = (*input.shape[:-1], directions * hidden)
    output = input.new_empty(out_shape)
    layer_outputs = input.new_empty((num_layers - 1, *out_shape))
    h_n = torch.empty_like(hx, memory_format=torch.contiguous_format)
    h0 = hx.contiguous()
    layer_input = x
    for layer in range(num_layers):
        target = output if layer == num_layers - 1 else layer_outputs[layer]
        y_all = target.view(lay.rows, directions * hidden)
        for direction in range(directions):
            cell = layer * directions + direction
            w_ih, w_hh, *biases = _cell_weights(weights, cell, per_cell)
            if biases:
                xp = torch.addmm(biases[0] + biases[1], layer_input, w_ih.t())
            else:
                xp = layer_input @ w_ih.t()
            _recurrence_forward(
                xp.contiguous(),
                y_all[:, direction * hidden : (direction + 1) * hidden],
                h0[cell],
                h_n[cell],
                w_hh.contiguous(),
                lay,
                direction == 1,
                relu,
            )
        layer_input = y_all
    return output, h_n, layer_outputs


def rnn_backward_triton(
    grad_output,
    grad_h_n,
    input,
    hx,
    weights,
    batch_sizes,
    output,
    layer_outputs,
    num_layers,
    bidirectional,
    relu,
    need_input_grad,
):
    """fastrnn::rnn_backward on Triton: (grad_input, grad_hx, grad_weights)."""
    lay = make_layout(input, hx, batch_sizes)
    directions = 2 if bidirectional else 1
    hidden = hx.shape[2]
    per_cell = len(weights) // (num_layers * directions)
    x = input.reshape(lay.rows, input.shape[-1])
    h0 = hx.contiguous()
    grad_hn = grad_h_n.contiguous()
    grad_hx = torch.empty_like(h0)
    grad_weights: list[Tensor] = [torch.empty(0)] * len(weights)
    grad_y = grad_output.reshape(lay.rows, directions * hidden).contiguous()
    prev = {d: previous_rows(lay, d == 1).to(input.device) for d in range(directions)}
    for layer in reversed(range(num_layers)):
        layer_in = x if layer == 0 else layer_outputs[layer - 1].reshape(lay.rows, -1)
        saved = output if layer == num_layers - 1 else layer_outputs[layer]
        y_all = saved.reshape(lay.rows, directions * hidden)
        # Layer 0's input gradient is one more GEMM; skipped when nothing needs it.
        need_below = layer > 0 or need_input_grad
        grad_below = torch.zeros_like(layer_in) if need_below else None
        for direction in range(directions):
            cell = layer * directions + direction
            w_ih, w_hh, *biases = _cell_weights(weights, cell, per_cell)
            cols = slice(direction * hidden, (direction + 1) * hidden)
            dz = torch.empty(lay.rows, hidden, dtype=input.dtype, device=input.device)
            _recurrence_backward(
                grad_y[:, cols],
                y_all[:, cols],
                dz,
                grad_hn[cell],
                grad_hx[cell],
                w_hh.contiguous(),
                lay,
                direction == 1,
                relu,
            )
            h_prev = torch.cat([y_all[:, cols], h0[cell]]).index_select(0, prev[direction])
            base = cell * per_cell
            grad_weights[base] = dz.t() @ layer_in
            grad_weights[base + 1] = dz.t() @ h_prev
            if biases:
                db = dz.sum(0, dtype=torch.float64 if dz.dtype == torch.float64 else torch.float32)
                grad_weights[base + 2] = db.to(dz.dtype)
                grad_weights[base + 3] = db.to(dz.dtype).clone()
            if need_below:
                grad_below.addmm_(dz, w_ih)
        grad_y = grad_below
    grad_input = grad_y.reshape(input.shape) if need_input_grad else input.new_empty(0)
    return grad_input, grad_hx, grad_weights
