"""Fused Triton kernels of the Elman RNN recurrence, forward and backward.

Design
------
The input projection of every step, X @ W_ih^T + b_ih + b_hh, is one large GEMM done by
cuBLAS before the recurrence, and the weight gradients are large GEMMs after it; only
the sequential part, h_t = act(xp_t + h_{t-1} W_hh^T), needs custom kernels.  Two tiers:

* persistent (one launch per layer and direction): each program owns BLOCK_B batch rows
  and the whole hidden dimension, loads W_hh once, keeps it and its rows' state h on
  chip for the whole sequence and loops over time inside the kernel.  No grid-wide
  barrier is needed because a program only ever reads its own rows' state.  Chosen up
  to H = 64 in fp32/fp64 and H = 128 in fp16/bf16: ptxas (python -m
  fastrnn.triton.cubin_report) shows those compile with no spills, while the fp32
  forward at H = 128 spilled 4-13 KB per thread at 8 or 16 warps (TorchRL met the same
  255-register wall for a GRU at H >= 512).
* stepwise (one launch per step): for larger H, the grid splits the batch and the hidden
  dimension, and each program streams its W_hh tile from L2 along K.  Programs of one
  step need every column of h_{t-1}, so the step boundary is the kernel boundary
  (Triton has no safe grid-wide barrier; we do not build one from spin loops).

Backward mirrors both: dz_t = (dy_t + dh) * act'(y_t) from the saved outputs (tanh'
= 1 - y^2, relu' = [y > 0]), dh = dz_t @ W_hh, in reverse processing order.

Variable lengths (PackedSequence) use per-step batch sizes and row offsets: at step t
rows b < batch_sizes[t] advance and the others keep their state, which gives both the
final state of sequences that ended and the initial state of reverse-direction rows that
have not started.  Accumulation is fp32 (fp64 for fp64 inputs); the state is kept in
that precision.  tanh uses exp (1 - e^{-2|z|}) / (1 + e^{-2|z|}), which neither overflows
nor needs libdevice.  Offsets are int64 (N*H can pass 2^31).  T and t are not
specialised, so a new sequence length reuses the compiled kernel.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _activation(z, RELU: tl.constexpr):
    if RELU:
        return tl.maximum(z, 0.0)
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0, -t, t)


@triton.jit
def _activation_grad(g, y, RELU: tl.constexpr):
    if RELU:
        return tl.where(y > 0, g, 0.0)
    return g * (1.0 - y * y)


@triton.jit(do_not_specialize=["T"])
def rnn_forward_persistent_kernel(
    xp_ptr,  # [N, H] input projection incl. both biases, row stride H
    y_ptr,  # output rows of this direction, row stride stride_y
    h0_ptr,  # [B, H]
    hn_ptr,  # [B, H]
    w_ptr,  # W_hh [H, H]
    batch_sizes_ptr,  # [T] int64
    offsets_ptr,  # [T] int64, first row of each step
    stride_y,
    T,
    B,
    H,
    REVERSE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rh = tl.arange(0, BLOCK_H)
    in_b = rb < B
    in_h = rh < H
    # W_hh^T held on chip for the whole sequence: wt[k, n] = W_hh[n, k].
    wt = tl.load(
        w_ptr + rh[None, :] * H + rh[:, None], mask=in_h[:, None] & in_h[None, :], other=0.0
    )
    state_mask = in_b[:, None] & in_h[None, :]
    h = tl.load(h0_ptr + rb[:, None] * H + rh[None, :], mask=state_mask, other=0.0).to(ACC_DTYPE)
    for i in range(T):
        t = T - 1 - i if REVERSE else i
        active = rb < tl.load(batch_sizes_ptr + t)
        rows = tl.load(offsets_ptr + t) + rb.to(tl.int64)
        mask = active[:, None] & in_h[None, :]
        xp = tl.load(xp_ptr + rows[:, None] * H + rh[None, :], mask=mask, other=0.0)
        z = tl.dot(h.to(wt.dtype), wt, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
        y = _activation(z + xp.to(ACC_DTYPE), RELU)
        tl.store(
            y_ptr + rows[:, None] * stride_y + rh[None, :], y.to(y_ptr.dtype.element_ty), mask=mask
        )
        h = tl.where(active[:, None], y, h)
    tl.store(hn_ptr + rb[:, None] * H + rh[None, :], h.to(hn_ptr.dtype.element_ty), mask=state_mask)


@triton.jit(do_not_specialize=["T"])
def rnn_backward_persistent_kernel(
    dy_ptr,  # gradient of this direction's output rows, row stride stride_y
    y_ptr,  # saved output rows, row stride stride_y
    dz_ptr,  # [N, H] out: pre-activation gradients
    dhn_ptr,  # [B, H] gradient of h_n
    dh0_ptr,  # [B, H] out: gradient of h0
    w_ptr,  # W_hh [H, H]
    batch_sizes_ptr,
    offsets_ptr,
    stride_y,
    T,
    B,
    H,
    REVERSE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rh = tl.arange(0, BLOCK_H)
    in_b = rb < B
    in_h = rh < H
    w = tl.load(
        w_ptr + rh[:, None] * H + rh[None, :], mask=in_h[:, None] & in_h[None, :], other=0.0
    )
    state_mask = in_b[:, None] & in_h[None, :]
    dh = tl.load(dhn_ptr + rb[:, None] * H + rh[None, :], mask=state_mask, other=0.0).to(ACC_DTYPE)
    for i in range(T):
        t = i if REVERSE else T - 1 - i
        active = rb < tl.load(batch_sizes_ptr + t)
        rows = tl.load(offsets_ptr + t) + rb.to(tl.int64)
        mask = active[:, None] & in_h[None, :]
        dy = tl.load(dy_ptr + rows[:, None] * stride_y + rh[None, :], mask=mask, other=0.0)
        y = tl.load(y_ptr + rows[:, None] * stride_y + rh[None, :], mask=mask, other=0.0)
        dz = _activation_grad(dy.to(ACC_DTYPE) + dh, y.to(ACC_DTYPE), RELU)
        dz = tl.where(mask, dz, 0.0)
        tl.store(
            dz_ptr + rows[:, None] * H + rh[None, :], dz.to(dz_ptr.dtype.element_ty), mask=mask
        )
        dh_prev = tl.dot(dz.to(w.dtype), w, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
        dh = tl.where(active[:, None], dh_prev, dh)
    tl.store(
        dh0_ptr + rb[:, None] * H + rh[None, :], dh.to(dh0_ptr.dtype.element_ty), mask=state_mask
    )


@triton.jit(do_not_specialize=["t"])
def rnn_forward_step_kernel(
    xp_ptr,  # [N, H]
    y_ptr,  # output rows of this direction, row stride stride_y
    h_in_ptr,  # [B, H] state before step t (ACC_DTYPE)
    h_out_ptr,  # [B, H] state after step t
    w_ptr,  # W_hh [H, H]
    batch_sizes_ptr,
    offsets_ptr,
    stride_y,
    t,
    B,
    H,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_b = rb < B
    in_n = rn < H
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, H, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        in_k = rk < H
        h = tl.load(
            h_in_ptr + rb[:, None] * H + rk[None, :], mask=in_b[:, None] & in_k[None, :], other=0.0
        )
        wt = tl.load(
            w_ptr + rn[None, :] * H + rk[:, None], mask=in_k[:, None] & in_n[None, :], other=0.0
        )
        acc += tl.dot(h.to(wt.dtype), wt, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
    active = rb < tl.load(batch_sizes_ptr + t)
    rows = tl.load(offsets_ptr + t) + rb.to(tl.int64)
    mask = active[:, None] & in_n[None, :]
    xp = tl.load(xp_ptr + rows[:, None] * H + rn[None, :], mask=mask, other=0.0)
    y = _activation(acc + xp.to(ACC_DTYPE), RELU)
    tl.store(
        y_ptr + rows[:, None] * stride_y + rn[None, :], y.to(y_ptr.dtype.element_ty), mask=mask
    )
    state_mask = in_b[:, None] & in_n[None, :]
    h_old = tl.load(h_in_ptr + rb[:, None] * H + rn[None, :], mask=state_mask, other=0.0)
    h_new = tl.where(active[:, None], y, h_old)
    tl.store(h_out_ptr + rb[:, None] * H + rn[None, :], h_new, mask=state_mask)


@triton.jit(do_not_specialize=["t"])
def rnn_backward_step_kernel(
    dy_ptr,  # gradient of this direction's output rows, row stride stride_y
    y_ptr,  # saved output rows, row stride stride_y
    dz_ptr,  # [N, H] out
    dh_in_ptr,  # [B, H] gradient of the state after step t (ACC_DTYPE)
    dh_out_ptr,  # [B, H] gradient of the state before step t
    w_ptr,  # W_hh [H, H]
    batch_sizes_ptr,
    offsets_ptr,
    stride_y,
    t,
    B,
    H,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_b = rb < B
    in_n = rn < H
    active = rb < tl.load(batch_sizes_ptr + t)
    rows = tl.load(offsets_ptr + t) + rb.to(tl.int64)
    # dz for this program's columns, stored once.
    mask_n = active[:, None] & in_n[None, :]
    dy = tl.load(dy_ptr + rows[:, None] * stride_y + rn[None, :], mask=mask_n, other=0.0)
    y = tl.load(y_ptr + rows[:, None] * stride_y + rn[None, :], mask=mask_n, other=0.0)
    dh_n = tl.load(
        dh_in_ptr + rb[:, None] * H + rn[None, :], mask=in_b[:, None] & in_n[None, :], other=0.0
    )
    dz_n = _activation_grad(dy.to(ACC_DTYPE) + dh_n, y.to(ACC_DTYPE), RELU)
    tl.store(
        dz_ptr + rows[:, None] * H + rn[None, :], dz_n.to(dz_ptr.dtype.element_ty), mask=mask_n
    )
    # dh_prev[:, n] = sum_k dz[:, k] W_hh[k, n], dz recomputed per K tile from its inputs.
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, H, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        in_k = rk < H
        mask_k = active[:, None] & in_k[None, :]
        dy_k = tl.load(dy_ptr + rows[:, None] * stride_y + rk[None, :], mask=mask_k, other=0.0)
        y_k = tl.load(y_ptr + rows[:, None] * stride_y + rk[None, :], mask=mask_k, other=0.0)
        dh_k = tl.load(dh_in_ptr + rb[:, None] * H + rk[None, :], mask=mask_k, other=0.0)
        dz_k = tl.where(
            mask_k, _activation_grad(dy_k.to(ACC_DTYPE) + dh_k, y_k.to(ACC_DTYPE), RELU), 0.0
        )
        w = tl.load(
            w_ptr + rk[:, None] * H + rn[None, :], mask=in_k[:, None] & in_n[None, :], other=0.0
        )
        acc += tl.dot(dz_k.to(w.dtype), w, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
    dh_new = tl.where(active[:, None], acc, dh_n)
    tl.store(dh_out_ptr + rb[:, None] * H + rn[None, :], dh_new, mask=in_b[:, None] & in_n[None, :])
