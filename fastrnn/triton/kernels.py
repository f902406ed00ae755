"""Fused Triton kernels of the Elman RNN recurrence, forward and backward.

Design
------
The input projection of every step, X @ W_ih^T + b_ih, is one large GEMM (cuBLAS) before
the recurrence, and the weight gradients are large GEMMs after it; only the sequential
part, h_t = act(xp_t + b_hh + h_{t-1} W_hh^T), needs custom kernels.  Both tiers run a
whole (layer, direction) in one launch, the time loop inside the kernel:

* persistent: each program owns BLOCK_B batch rows and the whole hidden dimension, keeps
  W_hh and its rows' state h in registers for the whole sequence.  Programs never read
  each other's state, so no barrier.  Used while W_hh fits a program's registers without
  spills (launch.MAX_PERSISTENT_H; python tools/cubin_report.py shows the budget).
* cooperative: any H.  The state is split in (batch tile, column tile) pieces, each
  owned by one program at a time (a program loops over the tiles id, id + G, ...); per
  step a program reads all of h_{t-1} for its rows from a global (L2) workspace, streams
  its W_hh columns along K, and writes its piece of h_t.  A grid-wide barrier separates
  the steps, so the grid is launched cooperatively (all G programs resident, or the
  launch fails instead of deadlocking).  The state ping-pongs between two workspace
  buffers, so one barrier per step is enough: a program writes buffer t % 2 only after
  every program has finished reading it at step t - 1.  With G = 1 (the interpreter,
  which runs programs one after another) the barrier is trivially satisfied.

Backward mirrors both: dz_t = (dy_t + dh) * act'(y_t) from the saved outputs (tanh'
= 1 - y^2, relu' = [y > 0]), dh = dz_t @ W_hh, in reverse processing order.  In the
cooperative tier a program computes its columns of dh from every column of dz_t (stored
before the barrier), then at once its columns of the next step's dz.

Padded input (PADDED) addresses step t's rows as t * B + b; packed input (a
PackedSequence) loads per-step batch sizes and row offsets: at step t rows
b < batch_sizes[t] advance and the others keep their state, which gives both the final
state of sequences that ended and the initial state of reverse-direction rows that have
not started.  Accumulation is fp32 (fp64 for fp64 inputs), and so is the state.  tanh
uses exp (1 - e^{-2|z|}) / (1 + e^{-2|z|}), which neither overflows nor needs libdevice.
Offsets are int64 (N*H can pass 2^31).  T is not specialised, so a new sequence length
reuses the compiled kernel.
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


@triton.jit
def _step_rows(batch_sizes_ptr, offsets_ptr, t, rb, B, PADDED: tl.constexpr):
    """(active, rows): which of the rows rb take part in step t, and their row indices."""
    if PADDED:
        active = rb < B
        rows = t.to(tl.int64) * B + rb.to(tl.int64)
    else:
        active = rb < tl.load(batch_sizes_ptr + t)
        rows = tl.load(offsets_ptr + t) + rb.to(tl.int64)
    return active, rows


@triton.jit
def _tile(tile, col_tiles, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """(batch rows, hidden columns) of tile number `tile` of the cooperative tier."""
    rb = (tile // col_tiles) * BLOCK_B + tl.arange(0, BLOCK_B)
    rn = (tile % col_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    return rb, rn


@triton.jit
def _store_dz(dy_ptr, y_ptr, dz_ptr, rows, active, rn, dh, stride_y, H,
              ACC_DTYPE: tl.constexpr, RELU: tl.constexpr):  # fmt: skip
    """dz = (dy + dh) * act'(y) for the given rows (those in their step) and columns rn."""
    mask = active[:, None] & (rn < H)[None, :]
    dy = tl.load(dy_ptr + rows[:, None] * stride_y + rn[None, :], mask=mask, other=0.0)
    y = tl.load(y_ptr + rows[:, None] * stride_y + rn[None, :], mask=mask, other=0.0)
    dz = _activation_grad(dy.to(ACC_DTYPE) + dh, y.to(ACC_DTYPE), RELU)
    tl.store(dz_ptr + rows[:, None] * H + rn[None, :], dz.to(dz_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grid_barrier(counter_ptr, target):
    """Wait until `target` arrivals (this one included) are counted at counter_ptr."""
    tl.debug_barrier()  # this program's stores all happen before its arrival
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    while tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu") < target:
        pass
    tl.debug_barrier()


@triton.jit(do_not_specialize=["T"])
def rnn_forward_persistent_kernel(
    xp_ptr,  # [N, H] input projection incl. b_ih, row stride H
    b_ptr,  # [H] b_hh (unused without HAS_BIAS)
    y_ptr,  # output rows of this direction, row stride stride_y
    h0_ptr,  # [B, H] (unused without HAS_H0: zeros)
    hn_ptr,  # [B, H]
    w_ptr,  # W_hh [H, H]
    batch_sizes_ptr,  # [T] int64 (packed only)
    offsets_ptr,  # [T] int64, first row of each step (packed only)
    stride_y,
    T,
    B,
    H,
    PADDED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr,
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
    bias = tl.zeros((BLOCK_H,), dtype=ACC_DTYPE)
    if HAS_BIAS:
        bias = tl.load(b_ptr + rh, mask=in_h, other=0.0).to(ACC_DTYPE)
    state_mask = in_b[:, None] & in_h[None, :]
    h = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE)
    if HAS_H0:
        h = tl.load(h0_ptr + rb[:, None] * H + rh[None, :], mask=state_mask, other=0.0)
        h = h.to(ACC_DTYPE)
    for i in range(T):
        t = T - 1 - i if REVERSE else i
        active, rows = _step_rows(batch_sizes_ptr, offsets_ptr, t, rb, B, PADDED)
        mask = active[:, None] & in_h[None, :]
        xp = tl.load(xp_ptr + rows[:, None] * H + rh[None, :], mask=mask, other=0.0)
        z = tl.dot(h.to(wt.dtype), wt, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
        y = _activation(z + xp.to(ACC_DTYPE) + bias[None, :], RELU)
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
    PADDED: tl.constexpr,
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
        active, rows = _step_rows(batch_sizes_ptr, offsets_ptr, t, rb, B, PADDED)
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


@triton.jit(do_not_specialize=["T"])
def rnn_forward_cooperative_kernel(
    xp_ptr,  # [N, H] input projection incl. b_ih, row stride H
    b_ptr,  # [H] b_hh (unused without HAS_BIAS)
    y_ptr,  # output rows of this direction, row stride stride_y
    h0_ptr,  # [B, H] (unused without HAS_H0: zeros)
    hn_ptr,  # [B, H]
    w_ptr,  # W_hh [H, H]
    batch_sizes_ptr,  # [T] int64 (packed only)
    offsets_ptr,  # [T] int64 (packed only)
    state_ptr,  # [2, B, H] ACC_DTYPE workspace: h ping-pongs between its halves, h_t in t % 2
    counter_ptr,  # int32, zero at launch: the grid barrier's arrivals
    stride_y,
    T,
    B,
    H,
    PADDED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr,
    REVERSE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    programs = tl.num_programs(0)
    col_tiles = tl.cdiv(H, BLOCK_N)
    tiles = tl.cdiv(B, BLOCK_B) * col_tiles
    state_size = B * H
    arrivals = 0
    if HAS_H0:  # h0 into the half that step 0 reads, in the state's precision
        for tile in range(tl.program_id(0), tiles, programs):
            rb, rn = _tile(tile, col_tiles, BLOCK_B, BLOCK_N)
            offs = rb[:, None] * H + rn[None, :]
            state_mask = (rb < B)[:, None] & (rn < H)[None, :]
            h0 = tl.load(h0_ptr + offs, mask=state_mask, other=0.0)
            tl.store(state_ptr + state_size + offs, h0.to(ACC_DTYPE), mask=state_mask)
        arrivals = programs
        _grid_barrier(counter_ptr, arrivals)
    for i in range(T):
        t = T - 1 - i if REVERSE else i
        h_prev_ptr = state_ptr + ((i + 1) % 2) * state_size
        h_next_ptr = state_ptr + (i % 2) * state_size
        for tile in range(tl.program_id(0), tiles, programs):
            rb, rn = _tile(tile, col_tiles, BLOCK_B, BLOCK_N)
            in_b = rb < B
            in_n = rn < H
            acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
            if i > 0 or HAS_H0:
                for k0 in range(0, H, BLOCK_K):
                    rk = k0 + tl.arange(0, BLOCK_K)
                    in_k = rk < H
                    h = tl.load(
                        h_prev_ptr + rb[:, None] * H + rk[None, :],
                        mask=in_b[:, None] & in_k[None, :],
                        other=0.0,
                    )
                    wt = tl.load(
                        w_ptr + rn[None, :] * H + rk[:, None],
                        mask=in_k[:, None] & in_n[None, :],
                        other=0.0,
                    )
                    acc += tl.dot(
                        h.to(wt.dtype), wt, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE
                    )
            active, rows = _step_rows(batch_sizes_ptr, offsets_ptr, t, rb, B, PADDED)
            mask = active[:, None] & in_n[None, :]
            xp = tl.load(xp_ptr + rows[:, None] * H + rn[None, :], mask=mask, other=0.0)
            z = acc + xp.to(ACC_DTYPE)
            if HAS_BIAS:
                z += tl.load(b_ptr + rn, mask=in_n, other=0.0).to(ACC_DTYPE)[None, :]
            y = _activation(z, RELU)
            tl.store(
                y_ptr + rows[:, None] * stride_y + rn[None, :],
                y.to(y_ptr.dtype.element_ty),
                mask=mask,
            )
            state_mask = in_b[:, None] & in_n[None, :]
            if PADDED:
                h_new = y
            else:  # rows outside step t keep their state
                h_old = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
                if i > 0 or HAS_H0:
                    h_old = tl.load(
                        h_prev_ptr + rb[:, None] * H + rn[None, :], mask=state_mask, other=0.0
                    )
                h_new = tl.where(active[:, None], y, h_old)
            tl.store(h_next_ptr + rb[:, None] * H + rn[None, :], h_new, mask=state_mask)
            if i == T - 1:
                tl.store(
                    hn_ptr + rb[:, None] * H + rn[None, :],
                    h_new.to(hn_ptr.dtype.element_ty),
                    mask=state_mask,
                )
        if i < T - 1:
            _grid_barrier(counter_ptr, arrivals + (i + 1) * programs)


@triton.jit(do_not_specialize=["T"])
def rnn_backward_cooperative_kernel(
    dy_ptr,  # gradient of this direction's output rows, row stride stride_y
    y_ptr,  # saved output rows, row stride stride_y
    dz_ptr,  # [N, H] out: pre-activation gradients
    dhn_ptr,  # [B, H] gradient of h_n
    dh0_ptr,  # [B, H] out: gradient of h0
    w_ptr,  # W_hh [H, H]
    batch_sizes_ptr,
    offsets_ptr,
    state_ptr,  # [B, H] ACC_DTYPE workspace: dh of the rows outside the current step
    counter_ptr,  # int32, zero at launch
    stride_y,
    T,
    B,
    H,
    PADDED: tl.constexpr,
    REVERSE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    programs = tl.num_programs(0)
    col_tiles = tl.cdiv(H, BLOCK_N)
    tiles = tl.cdiv(B, BLOCK_B) * col_tiles
    # Step i of the loop processes time step t(i); first, dz of t(0) from dh_n.
    t_first = 0 if REVERSE else T - 1
    for tile in range(tl.program_id(0), tiles, programs):
        rb, rn = _tile(tile, col_tiles, BLOCK_B, BLOCK_N)
        state_mask = (rb < B)[:, None] & (rn < H)[None, :]
        dh = tl.load(dhn_ptr + rb[:, None] * H + rn[None, :], mask=state_mask, other=0.0)
        dh = dh.to(ACC_DTYPE)
        active, rows = _step_rows(batch_sizes_ptr, offsets_ptr, t_first, rb, B, PADDED)
        _store_dz(dy_ptr, y_ptr, dz_ptr, rows, active, rn, dh, stride_y, H, ACC_DTYPE, RELU)
        tl.store(state_ptr + rb[:, None] * H + rn[None, :], dh, mask=state_mask)
    _grid_barrier(counter_ptr, programs)
    for i in range(T):
        t = i if REVERSE else T - 1 - i
        for tile in range(tl.program_id(0), tiles, programs):
            rb, rn = _tile(tile, col_tiles, BLOCK_B, BLOCK_N)
            in_b = rb < B
            in_n = rn < H
            state_mask = in_b[:, None] & in_n[None, :]
            active, rows = _step_rows(batch_sizes_ptr, offsets_ptr, t, rb, B, PADDED)
            # dh[:, n] = sum_k dz_t[:, k] W_hh[k, n], every column of dz_t stored already.
            acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
            for k0 in range(0, H, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                in_k = rk < H
                dz_k = tl.load(
                    dz_ptr + rows[:, None] * H + rk[None, :],
                    mask=active[:, None] & in_k[None, :],
                    other=0.0,
                )
                w = tl.load(
                    w_ptr + rk[:, None] * H + rn[None, :],
                    mask=in_k[:, None] & in_n[None, :],
                    other=0.0,
                )
                acc += tl.dot(
                    dz_k.to(w.dtype), w, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE
                )
            dh_old = tl.load(state_ptr + rb[:, None] * H + rn[None, :], mask=state_mask, other=0.0)
            dh = tl.where(active[:, None], acc, dh_old)
            if i < T - 1:
                t_next = t + 1 if REVERSE else t - 1
                active_n, rows_n = _step_rows(batch_sizes_ptr, offsets_ptr, t_next, rb, B, PADDED)
                _store_dz(dy_ptr, y_ptr, dz_ptr, rows_n, active_n, rn, dh, stride_y, H, ACC_DTYPE,
                          RELU)  # fmt: skip
                tl.store(state_ptr + rb[:, None] * H + rn[None, :], dh, mask=state_mask)
            else:
                tl.store(
                    dh0_ptr + rb[:, None] * H + rn[None, :],
                    dh.to(dh0_ptr.dtype.element_ty),
                    mask=state_mask,
                )
        if i < T - 1:
            _grid_barrier(counter_ptr, (i + 2) * programs)
