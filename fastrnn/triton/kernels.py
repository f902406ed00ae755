"""Fused Triton kernels of the Elman RNN recurrence, forward and backward.

Design
------
The input projection of every step, X @ W_ih^T + b_ih, is one large GEMM (cuBLAS, or
for fp32 on TF32 gemm_tf32_kernel: launch.TF32_GEMMS) before the recurrence, and the
weight gradients are large GEMMs after it; only the sequential part,
h_t = act(xp_t + b_hh + h_{t-1} W_hh^T), needs custom kernels.  The exceptions are
short sequences, whose calls are bound by host time, of which the GEMMs' launches are a
large part: on the persistent tier's FMA programs the forward projects each step's
input itself (PROJECT_INPUT, launch.input_block), and a backward on one program per
direction computes the layer's weight gradients after its time loop, from the dz it
stored (WEIGHT_GRADS, launch.weight_grads_rows), and for one direction the input
gradient too (INPUT_GRAD).  Both tiers run a whole layer in one launch, the time loop
inside the kernel; grid axis 1 is the direction (0 forward in time, 1 reverse), so a
bidirectional layer's two independent recurrences run side by side:

* persistent: each program owns BLOCK_B batch rows and the whole hidden dimension, keeps
  W_hh on chip and its rows' state h in registers for the whole sequence.  Programs
  never read each other's state, so no barrier.  With 16 rows the product is a tl.dot
  on tensor cores (Triton stages W_hh in shared memory; FMAs below sm_80); with fewer rows
  (launch.persistent_rows: one per program while the grid fits the SMs) it is a
  broadcast product summed with FMAs in ACC_DTYPE (_product), whose step is far
  shorter than a chain of tensor-core products; a one-row program that runs the
  recurrence alone has its threads each sum whole columns (launch.persistent_program),
  so that h's broadcast is its step's one exchange between threads.  Used while W_hh
  fits one program (launch.MAX_PERSISTENT_H; python tools/cubin_report.py shows shared
  memory, registers and spills), and in one-row programs while a thread's column of
  W_hh fits its registers (launch.one_row_plan: up to H=256, each batch row a program).
* cooperative: any H.  The state is split in (batch tile, column tile) pieces, each
  owned by one program at a time (a program loops over the tiles id, id + G, ...); per
  step a program reads all of h_{t-1} for its rows from a global (L2) workspace,
  multiplies it by its W_hh columns and writes its piece of h_t.  Where those columns
  fit the program's shared memory (W_ON_CHIP; launch.cooperative_shared_memory) and G
  is a multiple of the column-tile count, so that a program's tiles share columns, they
  are loaded once and stay on chip; otherwise they are streamed from L2 along K every
  step.  The product runs in SPLIT_K parts of K, one batched tl.dot whose parts are
  summed (_split_product): one product's tensor-core instructions form a single chain
  through its accumulator, the parts independent shorter ones (launch.split_k).  Where
  W_hh streams, fp32 tf32x3 products may take its TF32 parts split once (W_LOW_PARTS;
  _tf32_parts), by the programs into a workspace before the first product
  (_store_low_parts), rather than split by Triton at every chunk.  Plain TF32 products
  (launch.COOP_STREAMED_TF32) round both operands to nearest TF32 first
  (_tf32_operand), as the TF32 GEMM does: a tensor core reading fp32 drops the low bits.
  A grid-wide barrier separates the steps, so the grid is launched cooperatively
  (all programs of both directions resident, or the launch fails instead of
  deadlocking); each direction has its own barrier counter and G programs.  The state
  ping-pongs between two workspace buffers, so one barrier per step is enough: a
  program writes buffer t % 2 only after every program has finished reading it at step
  t - 1.  With G = 1 (the interpreter, which runs programs one after another) the
  barrier is trivially satisfied.  With TAGGED (launch.COOP_TAGGED_EXCHANGE) there is
  no barrier: the exchanged state (h_t; the backward's dz_t) is stored as fp32 values
  each tagged with its step in one 64-bit word (_tagged_words), and a program reads the
  words it needs again until all carry the step it waits for (_load_tagged), as
  NCCL's low-latency protocol does: one store carries value and flag, so no fence
  orders them.  The ping-pong stays safe: a program overwrites a half only after
  reading every column of its rows' next state, which each writer stored after its
  own last read of that half.

Backward mirrors both: dz_t = (dy_t + dh) * act'(y_t) from the saved outputs (tanh'
= 1 - y^2, relu' = [y > 0]), dh = dz_t @ W_hh, in reverse processing order.  In the
cooperative tier a program computes its columns of dh from every column of dz_t (stored
before the barrier), then at once its columns of the next step's dz.  A gradient that
did not reach the loss (dy or dh_n: HAS_DY, HAS_DHN) is zeros that no kernel reads or
anyone fills, and where no gradient of h0 is wanted (DH0) none is written.  dy and dh_n
are read with their own strides, so an expanded one (a sum's gradient: strides 0) needs
no copy.

Latency: loads that do not depend on the previous step are issued before the work that
does.  The persistent tier's one-row programs summing whole columns load a step's xp,
or dy and y, STEPS_AHEAD = 4 steps before it on padded input, since their step is
shorter than a load from L2 (launch.PERSISTENT_STEPS_AHEAD); its other programs load
step t+1's while step t computes, and where such a load would wait all the same (an fp32
one-row backward past 128 columns spills the registers it loads into: PREFETCH) they
prefetch step t+2's into L1 first.  The cooperative tier loads its tile's xp, bias and
own state before the product with W_hh.

Padded input (PADDED) addresses step t's rows as t * B + b, and the tensors a kernel
reads with their own strides (x, xp, dy) at t * stride_t + b * stride_b, so that a
batch_first input (a transposed view) and its output's gradient need no copy; packed
input (a PackedSequence) loads per-step batch sizes and row offsets: at step t rows
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
def _of_direction(direction, forward_ptr, reverse_ptr):
    """The tensor of this program's direction (0: forward, 1: reverse)."""
    ptr = forward_ptr
    if direction == 1:
        ptr = reverse_ptr
    return ptr


@triton.jit
def _forward_operands(direction, xp_ptr, b_ptr, b_rev_ptr, y_ptr, h0_ptr, hn_ptr, w_ptr,
                      w_rev_ptr, N, B, H):  # fmt: skip
    """This direction's (xp, b_hh, y, h0, h_n, W_hh) of the forward kernels' arguments."""
    block = direction.to(tl.int64)
    return (
        xp_ptr + block * N * H,
        _of_direction(direction, b_ptr, b_rev_ptr),
        y_ptr + direction * H,
        h0_ptr + block * B * H,
        hn_ptr + block * B * H,
        _of_direction(direction, w_ptr, w_rev_ptr),
    )


@triton.jit
def _backward_operands(direction, dy_ptr, y_ptr, dz_ptr, dhn_ptr, dh0_ptr, w_ptr, w_rev_ptr,
                       B, H, stride_dy_col, stride_dhn_cell):  # fmt: skip
    """This direction's (dy, y, dz, dh_n, dh0, W_hh) of the backward kernels' arguments."""
    block = direction.to(tl.int64)
    return (
        dy_ptr + direction * H * stride_dy_col,
        y_ptr + direction * H,
        dz_ptr + direction * H,
        dhn_ptr + block * stride_dhn_cell,
        dh0_ptr + block * B * H,
        _of_direction(direction, w_ptr, w_rev_ptr),
    )


@triton.jit
def _time_order(direction, T, BACKWARD: tl.constexpr):
    """(first step, increment) of t for this direction's pass: forward, direction 0 runs
    t = 0, 1, ... and direction 1 t = T - 1, T - 2, ...; the backward pass runs each in
    reverse."""
    backwards_in_time = direction
    if BACKWARD:
        backwards_in_time = 1 - direction
    return backwards_in_time * (T - 1), 1 - 2 * backwards_in_time


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
def _steps_rows(s, t0, step, T, batch_sizes_ptr, offsets_ptr, rb, B, PADDED: tl.constexpr,
                PAST_END: tl.constexpr):  # fmt: skip
    """(t, active, rows) of the s-th step processed (t = t0 + s * step: _time_order); past
    the last step (s >= T), the last step's (a valid address whose data goes unused),
    and where PAST_END no row active (their loads and stores masked off, their state
    kept)."""
    t = t0 + tl.minimum(s, T - 1) * step
    active, rows = _step_rows(batch_sizes_ptr, offsets_ptr, t, rb, B, PADDED)
    if PAST_END:
        active = active & (s + 0 * rb < T)  # s + 0 * rb: a tensor in the interpreter too
    return t, active, rows


@triton.jit
def _step_offsets(t, rows, rb, stride_t, stride_b, PADDED: tl.constexpr):
    """Where step t's rows start in a tensor with its own strides: in a padded [T, B, *]
    one t * stride_t + b * stride_b (rb: the rows' batch indices), so that a batch_first
    input's transposed view needs no copy; in a packed [N, *] one row * stride_b (rows:
    their row indices, _step_rows)."""
    if PADDED:
        offsets = t.to(tl.int64) * stride_t + rb.to(tl.int64) * stride_b
    else:
        offsets = rows * stride_b
    return offsets


@triton.jit
def _load_block(ptr, rows, active, cols, stride, stride_col, H):
    """ptr[rows, cols] of a matrix with strides (stride, stride_col) and H columns in
    use, 0 where inactive, for index tensors that broadcast to the block's shape (rows
    and active alike)."""
    offsets = rows * stride + cols * stride_col
    return tl.load(ptr + offsets, mask=active & (cols < H), other=0.0)


@triton.jit
def _load_rows(ptr, rows, active, cols, stride, H):
    """ptr[rows, cols] of a row-major matrix with H columns in use; 0 where inactive."""
    return _load_block(ptr, rows[:, None], active[:, None], cols[None, :], stride, 1, H)


@triton.jit
def _load_at(ptr, offsets, active, cols, stride_col, H):
    """Rows starting at offsets (_step_offsets), their columns cols of H in use at
    stride_col; 0 where inactive."""
    return _load_block(ptr, offsets[:, None], active[:, None], cols[None, :], 1, stride_col, H)


@triton.jit
def _gradient_rows(ptr, offsets, active, cols, stride_col, H, GIVEN: tl.constexpr):
    """A gradient's rows starting at offsets (_load_at), with any strides (an expanded
    one's are 0); or zeros without a load where it is not GIVEN (its output did not
    reach the loss)."""
    if GIVEN:
        block = _load_at(ptr, offsets, active, cols, stride_col, H)
    else:
        block = tl.zeros((offsets.shape[0], cols.shape[0]), dtype=ptr.dtype.element_ty)
    return block


@triton.jit
def _store_rows(ptr, rows, active, cols, stride, H, value):
    mask = active[:, None] & (cols < H)[None, :]
    tl.store(
        ptr + rows[:, None] * stride + cols[None, :], value.to(ptr.dtype.element_ty), mask=mask
    )


@triton.jit
def _tagged_words(value, tag):
    """fp32 values each with its step's tag in one int64 word (the tag in the high half):
    one store makes both visible at once, so a reader that sees the tag sees the value."""
    bits = value.to(tl.float32).to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
    return bits | (tl.cast(tag, tl.int64) << 32)


@triton.jit
def _store_state(ptr, rows, active, cols, H, value, tag):
    """_store_rows of the cooperative tier's exchanged state (rows of H): in ACC_DTYPE, or
    into an exchange of tagged words (int64) tagged `tag` (_tagged_words)."""
    if ptr.dtype.element_ty == tl.int64:
        mask = active[:, None] & (cols < H)[None, :]
        tl.store(ptr + rows[:, None] * H + cols[None, :], _tagged_words(value, tag), mask=mask)
    else:
        _store_rows(ptr, rows, active, cols, H, H, value)


@triton.jit
def _load_tagged(ptr, rows, active, cols, stride, H, tag):
    """fp32 ptr[rows, cols] of an exchange of tagged words (_tagged_words; as _load_block,
    0 where inactive), read again where they do not carry `tag` yet until all do: a wait
    for the step that writes them with no barrier, fence or atomic (volatile loads reach
    L2 past this SM's L1)."""
    offsets = rows * stride + cols
    mask = active & (cols < H)
    words = tl.load(ptr + offsets, mask=mask, other=0, volatile=True)
    while tl.max((mask & ((words >> 32) != tag)).to(tl.int32)) > 0:
        words = tl.load(ptr + offsets, mask=mask, other=0, volatile=True)
    return words.to(tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def _load_state(ptr, rows, active, cols, H, tag):
    """_load_rows of the cooperative tier's exchanged state (rows of H), from an exchange
    of tagged words (int64) once they carry `tag` (_load_tagged)."""
    if ptr.dtype.element_ty == tl.int64:
        state = _load_tagged(ptr, rows[:, None], active[:, None], cols[None, :], H, H, tag)
    else:
        state = _load_rows(ptr, rows, active, cols, H, H)
    return state


@triton.jit
def _tile(tile, col_tiles, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """(batch rows, hidden columns) of tile number `tile` of the cooperative tier."""
    rb = (tile // col_tiles) * BLOCK_B + tl.arange(0, BLOCK_B)
    rn = (tile % col_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    return rb, rn


@triton.jit
def _weight_block(w_ptr, k, n, K, N, TRANSPOSED: tl.constexpr):
    """M[k, n], 0 outside K x N, for index tensors k and n that broadcast to the block's
    shape (rk[:, None] and rn[None, :] for a [len(rk), len(rn)] block), of a row-major
    W: M = W^T of a W [N, K] (TRANSPOSED: W_hh^T, W_ih^T) or M = W of a W [K, N] (W_hh)."""
    if TRANSPOSED:
        offsets = n * K + k
    else:
        offsets = k * N + n
    return tl.load(w_ptr + offsets, mask=(k < K) & (n < N), other=0.0)


@triton.jit
def _split_k(k0, SPLIT_K: tl.constexpr, PART: tl.constexpr):
    """Indices k0 + [0, SPLIT_K * PART) as [SPLIT_K, PART]: K in SPLIT_K parts."""
    return k0 + tl.arange(0, SPLIT_K)[:, None] * PART + tl.arange(0, PART)[None, :]


@triton.jit
def _tf32_high(x):
    """fp32 x rounded to TF32 (its last 13 mantissa bits cleared, to nearest, ties away
    from zero, as cvt.rna.tf32.f32), which a tensor core reads exactly."""
    bits = x.to(tl.uint32, bitcast=True)
    return ((bits + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def _tf32_operand(x, DOT_PRECISION: tl.constexpr):
    """fp32 x as a cooperative plain TF32 product takes it: rounded to nearest
    (_tf32_high), not truncated as a tensor core reading fp32 would (1.3-3x the error of
    rounding over 50-100 steps at H=1024: tools/tf32_emulation.py)."""
    if DOT_PRECISION == "tf32":
        return _tf32_high(x)
    return x


@triton.jit
def _tf32_parts(x):
    """(high, low) of fp32 x, both TF32: _tf32_high(x) and the rest rounded so (0 where
    x is infinite), the parts of a tf32x3 product as Triton's tf32x3 splits them."""
    high = _tf32_high(x)
    return high, _tf32_high(tl.where(high == x, 0.0, x - high))


@triton.jit
def _store_low_parts(w_ptr, w_low_ptr, H, BLOCK: tl.constexpr = 4096):
    """This program's share of W_hh [H, H], a run of its elements, as their low TF32
    parts (_tf32_parts) into w_low_ptr, laid out alike: BLOCK elements at a time, so
    that a program's loads are few and wide."""
    size = tl.cast(H, tl.int64) * H
    share = tl.cdiv(size, tl.num_programs(0))
    start = tl.program_id(0) * share
    for offset in range(0, share, BLOCK):
        offsets = start + offset + tl.arange(0, BLOCK)
        mask = (offsets < start + share) & (offsets < size)
        w = tl.load(w_ptr + offsets, mask=mask, other=0.0)
        tl.store(w_low_ptr + offsets, _tf32_parts(w)[1], mask=mask)


@triton.jit
def _part_rows(a_ptr, rows, active, stride, H, k, tag):
    """A[rows, k[s]] for each part s of k [SPLIT_K, PART] (_split_k): [SPLIT_K, rows, PART];
    from an exchange of tagged words (int64: _tagged_words) once they carry `tag`."""
    if a_ptr.dtype.element_ty == tl.int64:
        part = _load_tagged(a_ptr, rows[None, :, None], active[None, :, None], k[:, None, :],
                            stride, H, tag)  # fmt: skip
    else:
        part = _load_block(a_ptr, rows[None, :, None], active[None, :, None], k[:, None, :],
                           stride, 1, H)  # fmt: skip
    return part


@triton.jit
def _split_product(a_ptr, rows, active, stride, H, k, tag, m, DOT_PRECISION: tl.constexpr,
                   ACC_DTYPE: tl.constexpr):  # fmt: skip
    """[SPLIT_K, rows, BLOCK_N]: A[rows, k[s]] @ M[k[s], :] for each part s of k
    [SPLIT_K, PART] (_split_k), with m [SPLIT_K, PART, BLOCK_N] M's rows in the same
    parts: one batched tl.dot, whose parts the caller sums (the design notes above)."""
    a = _tf32_operand(_part_rows(a_ptr, rows, active, stride, H, k, tag), DOT_PRECISION)
    return tl.dot(a.to(m.dtype), m, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)


@triton.jit
def _split_tf32x3_product(acc, a_ptr, rows, active, stride, H, k, tag, m_high, m_low,
                          ACC_DTYPE: tl.constexpr):  # fmt: skip
    """acc + _split_product's tf32x3 product, with M given as its TF32 parts
    (_tf32_parts): three plain TF32 products of the parts, small ones first, low times
    low left out, as Triton's tf32x3 does, which would split M again at every product
    (docs/performance.md)."""
    a_high, a_low = _tf32_parts(_part_rows(a_ptr, rows, active, stride, H, k, tag))
    acc = tl.dot(a_low, m_high, acc, input_precision="tf32", out_dtype=ACC_DTYPE)
    acc = tl.dot(a_high, m_low, acc, input_precision="tf32", out_dtype=ACC_DTYPE)
    return tl.dot(a_high, m_high, acc, input_precision="tf32", out_dtype=ACC_DTYPE)


@triton.jit
def _own_columns(w_ptr, col_tiles, H, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
                 SPLIT_K: tl.constexpr, TRANSPOSED: tl.constexpr):  # fmt: skip
    """The cooperative tier's columns of M (_weight_block) for this program, in a grid
    whose program count is a multiple of col_tiles (a program's tiles then share their
    columns): [SPLIT_K, BLOCK_H // SPLIT_K, BLOCK_N], its rows in parts (_split_k)."""
    rn = (tl.program_id(0) % col_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    k = _split_k(0, SPLIT_K, BLOCK_H // SPLIT_K)
    return _weight_block(w_ptr, k[:, :, None], rn[None, None, :], H, H, TRANSPOSED)


@triton.jit
def _times_columns(acc, a_ptr, rows, active, stride, H, tag, w_ptr, w_low_ptr, w_chip, rn,
                   TRANSPOSED: tl.constexpr, W_ON_CHIP: tl.constexpr, BLOCK_H: tl.constexpr,
                   SPLIT_K: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
                   ACC_DTYPE: tl.constexpr, W_LOW_PARTS: tl.constexpr):  # fmt: skip
    """acc + A[rows, :H] @ M[:, rn], A row-major (row stride `stride`; an exchange of
    tagged words read once they carry `tag`: _part_rows), M as in
    _weight_block: forward h_{t-1} W_hh^T, backward dz_t W_hh; K in SPLIT_K parts
    (_split_product).  M's columns come from w_chip (_own_columns) when W_ON_CHIP, with
    all of A's row in one load; else they are streamed from L2 BLOCK_K rows at a time,
    each part accumulating across the chunks; with W_LOW_PARTS (tf32x3) as M's TF32 parts,
    the low ones split once into w_low_ptr (_store_low_parts), else split by Triton at
    each chunk (on chip Triton keeps its split of M out of the time loop itself)."""
    if W_ON_CHIP:
        k = _split_k(0, SPLIT_K, BLOCK_H // SPLIT_K)
        parts = _split_product(a_ptr, rows, active, stride, H, k, tag, w_chip, DOT_PRECISION,
                               ACC_DTYPE)  # fmt: skip
    else:
        parts = tl.zeros((SPLIT_K, rows.shape[0], rn.shape[0]), dtype=ACC_DTYPE)
        for k0 in range(0, H, BLOCK_K):
            k = _split_k(k0, SPLIT_K, BLOCK_K // SPLIT_K)
            w = _weight_block(w_ptr, k[:, :, None], rn[None, None, :], H, H, TRANSPOSED)
            if W_LOW_PARTS:
                w_low = _weight_block(w_low_ptr, k[:, :, None], rn[None, None, :], H, H,
                                      TRANSPOSED)  # fmt: skip
                parts = _split_tf32x3_product(parts, a_ptr, rows, active, stride, H, k, tag,
                                              _tf32_high(w), w_low, ACC_DTYPE)  # fmt: skip
            else:
                parts += _split_product(a_ptr, rows, active, stride, H, k, tag,
                                        _tf32_operand(w, DOT_PRECISION), DOT_PRECISION,
                                        ACC_DTYPE)  # fmt: skip
    return acc + tl.sum(parts, axis=0)


@triton.jit
def _product_operand(w_ptr, rk, rn, K, N, TRANSPOSED: tl.constexpr, BLOCK_B: tl.constexpr,
                     ACC_DTYPE: tl.constexpr):  # fmt: skip
    """The persistent tier's M (_weight_block), loaded once: as stored for tl.dot, in
    ACC_DTYPE for the FMA products of fewer than 16 rows (_product)."""
    m = _weight_block(w_ptr, rk[:, None], rn[None, :], K, N, TRANSPOSED)
    if BLOCK_B < 16:
        m = m.to(ACC_DTYPE)
    return m


@triton.jit
def _step_input(xp_ptr, x_ptr, offsets, active, rh, ri, H, IN, PROJECT_INPUT: tl.constexpr):
    """A step's rows of input to the persistent forward, starting at offsets
    (_step_offsets): x (PROJECT_INPUT: projected with W_ih in the kernel) or xp."""
    if PROJECT_INPUT:
        step_input = _load_at(x_ptr, offsets, active, ri, 1, IN)
    else:
        step_input = _load_at(xp_ptr, offsets, active, rh, 1, H)
    return step_input


@triton.jit
def _product(a, m, DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
             SUM_IN_PARTS: tl.constexpr, DOT_PARTS: tl.constexpr):  # fmt: skip
    """a @ m in ACC_DTYPE for the persistent tier: tl.dot on tensor cores for 16 rows of
    a or more, over K in DOT_PARTS parts (one batched tl.dot whose parts are summed;
    launch.dot_parts); for fewer, a broadcast product summed over k with FMAs (m already
    in ACC_DTYPE).  SUM_IN_PARTS (one row, a thread summing whole columns): over k in
    interleaved parts, then over the parts, so that a thread's sum is independent FMA
    chains where Triton 3.6 would build one (docs/performance.md)."""
    # if/else, not an early return: Triton would build the code after it too, and the
    # broadcast product of 32 rows at H=256 is over its largest tensor.
    if a.shape[0] >= 16 and DOT_PARTS > 1:
        PART: tl.constexpr = a.shape[1] // DOT_PARTS
        a_parts = tl.permute(tl.reshape(a, (a.shape[0], DOT_PARTS, PART)), (1, 0, 2))
        m_parts = tl.reshape(m, (DOT_PARTS, PART, m.shape[1]))
        parts = tl.dot(a_parts.to(m.dtype), m_parts, input_precision=DOT_PRECISION,
                       out_dtype=ACC_DTYPE)  # fmt: skip
        product = tl.sum(parts, axis=0)
    elif a.shape[0] >= 16:
        product = tl.dot(a.to(m.dtype), m, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
    else:
        terms = a.to(ACC_DTYPE)[:, :, None] * m[None, :, :]  # [rows, K, N]
        K: tl.constexpr = a.shape[1]
        if SUM_IN_PARTS and K >= 32:
            PARTS: tl.constexpr = 8 if K >= 64 else 4
            terms = tl.reshape(terms, (a.shape[0], PARTS, K // PARTS, m.shape[1]))
            product = tl.sum(tl.sum(terms, axis=2), axis=1)
        else:
            product = tl.sum(terms, axis=1)
    return product


@triton.jit
def _forward_input(s, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr, offsets_ptr, rb, rh, ri,
                   B, H, IN, stride_t, stride_b, PADDED: tl.constexpr,
                   PROJECT_INPUT: tl.constexpr, PAST_END: tl.constexpr):  # fmt: skip
    """(input, active, rows) of the persistent forward's s-th step (t = t0 + s * step:
    _time_order; _step_input, _steps_rows); past the last step, no row active."""
    t, active, rows = _steps_rows(
        s, t0, step, T, batch_sizes_ptr, offsets_ptr, rb, B, PADDED, PAST_END
    )
    at = _step_offsets(t, rows, rb, stride_t, stride_b, PADDED)
    return _step_input(xp_ptr, x_ptr, at, active, rh, ri, H, IN, PROJECT_INPUT), active, rows


@triton.jit
def _forward_slot(h, step_input, active, rows, s_next, t0, step, T, xp_ptr, x_ptr,
                  batch_sizes_ptr, offsets_ptr, rb, rh, ri, B, H, IN, stride_t, stride_b, wt,
                  wt_ih, bias, y_ptr, stride_y, PADDED: tl.constexpr, RELU: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
                  SUM_IN_PARTS: tl.constexpr, DOT_PARTS: tl.constexpr,
                  PROJECT_INPUT: tl.constexpr, LOAD_FIRST: tl.constexpr):  # fmt: skip
    """One persistent forward step of the active `rows` on its slot's input
    (_forward_input): y = act(input + b + h W_hh^T) stored; then (LOAD_FIRST: before)
    the slot loaded with step s_next's.  (new state, the slot's input, active, rows)."""
    if LOAD_FIRST:  # one step ahead: the load as early as it can be
        next_input, next_active, next_rows = _forward_input(
            s_next, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr, offsets_ptr, rb, rh, ri, B,
            H, IN, stride_t, stride_b, PADDED, PROJECT_INPUT, False,
        )  # fmt: skip
    z = _product(h, wt, DOT_PRECISION, ACC_DTYPE, SUM_IN_PARTS, DOT_PARTS)
    if PROJECT_INPUT:
        z += _product(step_input, wt_ih, DOT_PRECISION, ACC_DTYPE, SUM_IN_PARTS, 1)
    else:
        z += step_input.to(ACC_DTYPE)
    y = _activation(z + bias[None, :], RELU)
    _store_rows(y_ptr, rows, active, rh, stride_y, H, y)
    if not LOAD_FIRST:  # after the step has read the slot: the same registers, no copy
        next_input, next_active, next_rows = _forward_input(
            s_next, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr, offsets_ptr, rb, rh, ri, B,
            H, IN, stride_t, stride_b, PADDED, PROJECT_INPUT, True,
        )  # fmt: skip
    return tl.where(active[:, None], y, h), next_input, next_active, next_rows


@triton.jit
def _grid_barrier(counter_ptr, target):
    """Wait until `target` arrivals (this one included) are counted at counter_ptr."""
    tl.debug_barrier()  # this program's stores all happen before its arrival
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    while tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu") < target:
        pass
    tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "N"])
def rnn_forward_persistent_kernel(
    xp_ptr,  # [D, N, H] input projections incl. b_ih, one [N, H] block per direction,
    # its rows at strides stride_in_t, stride_in_b (_step_offsets)
    b_ptr,  # [H] b_hh of direction 0 (unused without HAS_BIAS)
    b_rev_ptr,  # [H] b_hh of direction 1 (bidirectional)
    y_ptr,  # [N, D*H] layer output, row stride stride_y; direction d owns columns d*H + [0, H)
    h0_ptr,  # [D, B, H] (unused without HAS_H0: zeros)
    hn_ptr,  # [D, B, H]
    w_ptr,  # W_hh [H, H] of direction 0
    w_rev_ptr,  # W_hh [H, H] of direction 1 (bidirectional)
    batch_sizes_ptr,  # [T] int64 (packed only)
    offsets_ptr,  # [T] int64, first row of each step (packed only)
    x_ptr,  # [N, IN] layer input, rows at strides stride_in_t, stride_in_b (PROJECT_INPUT only)
    w_ih_ptr,  # W_ih [H, IN] of direction 0 (PROJECT_INPUT only)
    w_ih_rev_ptr,  # W_ih [H, IN] of direction 1 (bidirectional)
    b_ih_ptr,  # [H] b_ih of direction 0 (PROJECT_INPUT with HAS_BIAS only)
    b_ih_rev_ptr,  # [H] b_ih of direction 1 (bidirectional)
    stride_y,
    T,
    N,
    B,
    H,
    stride_in_t,  # the read input's (x or xp) step and batch strides (_step_offsets)
    stride_in_b,
    IN,  # input features (PROJECT_INPUT only)
    PADDED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    PROJECT_INPUT: tl.constexpr,  # x_t W_ih^T + b_ih here, not read from xp
    BLOCK_I: tl.constexpr,  # PROJECT_INPUT: IN padded to a power of two
    SUM_IN_PARTS: tl.constexpr,  # one row: FMA sums in parts (_product)
    DOT_PARTS: tl.constexpr,  # 16 rows or more: tl.dot's K parts (_product)
    STEPS_AHEAD: tl.constexpr,  # 1 or 4: how many steps before its use a step's input loads
):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    direction = tl.program_id(1)
    xp_ptr, b_ptr, y_ptr, h0_ptr, hn_ptr, w_ptr = _forward_operands(
        direction, xp_ptr, b_ptr, b_rev_ptr, y_ptr, h0_ptr, hn_ptr, w_ptr, w_rev_ptr, N, B, H
    )
    rh = tl.arange(0, BLOCK_H)
    in_b = rb < B
    in_h = rh < H
    wt = _product_operand(w_ptr, rh, rh, H, H, True, BLOCK_B, ACC_DTYPE)  # W_hh^T, all steps
    bias = tl.zeros((BLOCK_H,), dtype=ACC_DTYPE)
    if HAS_BIAS:
        bias = tl.load(b_ptr + rh, mask=in_h, other=0.0).to(ACC_DTYPE)
    ri = tl.arange(0, BLOCK_I)
    wt_ih = 0.0  # W_ih^T, for all steps (PROJECT_INPUT)
    if PROJECT_INPUT:
        w_ih_ptr = _of_direction(direction, w_ih_ptr, w_ih_rev_ptr)
        wt_ih = _product_operand(w_ih_ptr, ri, rh, IN, H, True, BLOCK_B, ACC_DTYPE)
        if HAS_BIAS:
            b_ih_ptr = _of_direction(direction, b_ih_ptr, b_ih_rev_ptr)
            bias += tl.load(b_ih_ptr + rh, mask=in_h, other=0.0).to(ACC_DTYPE)
    h = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE)
    if HAS_H0:
        h = _load_rows(h0_ptr, rb, in_b, rh, H, H).to(ACC_DTYPE)
    t0, step = _time_order(direction, T, False)
    # Slot j: the input of step s + j of each pass of the loop (slots 1-3: 4 steps ahead
    # only), loaded STEPS_AHEAD steps before its step (_forward_slot).
    x0, a0, r0 = _forward_input(0, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr, offsets_ptr,
                                rb, rh, ri, B, H, IN, stride_in_t, stride_in_b, PADDED,
                                PROJECT_INPUT, False)  # fmt: skip
    if STEPS_AHEAD == 4:
        x1, a1, r1 = _forward_input(1, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr,
                                    offsets_ptr, rb, rh, ri, B, H, IN, stride_in_t,
                                    stride_in_b, PADDED, PROJECT_INPUT, True)  # fmt: skip
        x2, a2, r2 = _forward_input(2, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr,
                                    offsets_ptr, rb, rh, ri, B, H, IN, stride_in_t,
                                    stride_in_b, PADDED, PROJECT_INPUT, True)  # fmt: skip
        x3, a3, r3 = _forward_input(3, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr,
                                    offsets_ptr, rb, rh, ri, B, H, IN, stride_in_t,
                                    stride_in_b, PADDED, PROJECT_INPUT, True)  # fmt: skip
    for s in range(0, T, STEPS_AHEAD):
        h, x0, a0, r0 = _forward_slot(
            h, x0, a0, r0, s + STEPS_AHEAD, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr,
            offsets_ptr, rb, rh, ri, B, H, IN, stride_in_t, stride_in_b, wt, wt_ih, bias,
            y_ptr, stride_y, PADDED, RELU, DOT_PRECISION, ACC_DTYPE, SUM_IN_PARTS, DOT_PARTS,
            PROJECT_INPUT, STEPS_AHEAD == 1,
        )  # fmt: skip
        if STEPS_AHEAD == 4:
            h, x1, a1, r1 = _forward_slot(
                h, x1, a1, r1, s + 5, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr,
                offsets_ptr, rb, rh, ri, B, H, IN, stride_in_t, stride_in_b, wt, wt_ih, bias,
                y_ptr, stride_y, PADDED, RELU, DOT_PRECISION, ACC_DTYPE, SUM_IN_PARTS,
                DOT_PARTS, PROJECT_INPUT, False,
            )  # fmt: skip
            h, x2, a2, r2 = _forward_slot(
                h, x2, a2, r2, s + 6, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr,
                offsets_ptr, rb, rh, ri, B, H, IN, stride_in_t, stride_in_b, wt, wt_ih, bias,
                y_ptr, stride_y, PADDED, RELU, DOT_PRECISION, ACC_DTYPE, SUM_IN_PARTS,
                DOT_PARTS, PROJECT_INPUT, False,
            )  # fmt: skip
            h, x3, a3, r3 = _forward_slot(
                h, x3, a3, r3, s + 7, t0, step, T, xp_ptr, x_ptr, batch_sizes_ptr,
                offsets_ptr, rb, rh, ri, B, H, IN, stride_in_t, stride_in_b, wt, wt_ih, bias,
                y_ptr, stride_y, PADDED, RELU, DOT_PRECISION, ACC_DTYPE, SUM_IN_PARTS,
                DOT_PARTS, PROJECT_INPUT, False,
            )  # fmt: skip
    _store_rows(hn_ptr, rb, in_b, rh, H, H, h)


@triton.jit
def _previous_rows(previous_ptr, r, direction, N, B, PADDED: tl.constexpr):
    """(from_y, row) of rows r (all < N): each row's h_prev is y's row `row` where from_y,
    else h0's row `row` (the row's first step in this direction's processing order).
    Padded: one step is B rows, direction 0 runs forwards in time; packed: a table."""
    if PADDED:
        forward = r >= B
        reverse = r < N - B
        from_y = tl.where(direction == 0, forward, reverse)
        row = tl.where(from_y, r + tl.where(direction == 0, -B, B), r % B)
    else:
        index = tl.load(previous_ptr + r)  # a row of cat([y, h0])
        from_y = index < N
        row = tl.where(from_y, index, index - N)
    return from_y, row


@triton.jit
def _weight_gradient(out_ptr, dz_ptr, a_ptr, h0_ptr, previous_ptr, direction, stride_y,
                     stride_a_t, stride_a_b, N, B, H, K, PREVIOUS: tl.constexpr,
                     PADDED: tl.constexpr, HAS_H0: tl.constexpr, BLOCK_H: tl.constexpr,
                     BLOCK_R: tl.constexpr, DOT_PRECISION: tl.constexpr,
                     ACC_DTYPE: tl.constexpr):  # fmt: skip
    """out [H, K] (row-major) = dZ^T A over all N rows, in [BLOCK_H, BLOCK_R] blocks (so
    the accumulator stays small at any H and K), BLOCK_R rows at a time: A = the layer
    input (its rows at strides stride_a_t, stride_a_b: _step_offsets), or where PREVIOUS
    each row's h_prev (_previous_rows; K = H; y's row stride stride_a_b)."""
    rh = tl.arange(0, BLOCK_H)
    for k0 in range(0, K, BLOCK_R):
        cols = k0 + tl.arange(0, BLOCK_R)
        acc = tl.zeros((BLOCK_H, BLOCK_R), dtype=ACC_DTYPE)
        for r0 in range(0, N, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            in_r = r < N
            dz = _load_rows(dz_ptr, r, in_r, rh, stride_y, H)
            if PREVIOUS:
                from_y, row = _previous_rows(previous_ptr, tl.where(in_r, r, 0), direction, N,
                                             B, PADDED)  # fmt: skip
                a = _load_rows(a_ptr, row, in_r & from_y, cols, stride_a_b, K)
                if HAS_H0:
                    a += _load_rows(h0_ptr, row, in_r & ~from_y, cols, K, K)
            else:
                # Padded: row t * B + b.  Divided in 32 bits (64: a call): such programs
                # take at most launch.WEIGHT_GRADS_MAX_STEPS steps of _MAX_BATCH rows.
                at = _step_offsets(r // B, r.to(tl.int64), r % B, stride_a_t, stride_a_b,
                                   PADDED)  # fmt: skip
                a = _load_at(a_ptr, at, in_r, cols, 1, K)
            acc += tl.dot(tl.trans(dz), a.to(dz.dtype), input_precision=DOT_PRECISION,
                          out_dtype=ACC_DTYPE)  # fmt: skip
        _store_rows(out_ptr, rh, rh < H, cols, K, K, acc)


@triton.jit
def _weight_gradients(dz_ptr, y_ptr, x_ptr, h0_ptr, previous_ptr, dw_ih_ptr, dw_hh_ptr,
                      db_ih_ptr, db_hh_ptr, direction, stride_y, stride_x_t, stride_x_b, N, B,
                      H, IN,
                      PADDED: tl.constexpr, HAS_H0: tl.constexpr, HAS_BIAS: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr,
                      DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr):  # fmt: skip
    """This direction's dW_hh = dZ^T H_prev, dW_ih = dZ^T X and (HAS_BIAS) db_ih = db_hh =
    the column sums of dZ, from every row of dz this program stored; x's rows at strides
    stride_x_t, stride_x_b (_step_offsets)."""
    _weight_gradient(dw_hh_ptr, dz_ptr, y_ptr, h0_ptr, previous_ptr, direction, stride_y,
                     0, stride_y, N, B, H, H, True, PADDED, HAS_H0, BLOCK_H, BLOCK_R,
                     DOT_PRECISION, ACC_DTYPE)  # fmt: skip
    _weight_gradient(dw_ih_ptr, dz_ptr, x_ptr, h0_ptr, previous_ptr, direction, stride_y,
                     stride_x_t, stride_x_b, N, B, H, IN, False, PADDED, HAS_H0, BLOCK_H,
                     BLOCK_R, DOT_PRECISION, ACC_DTYPE)  # fmt: skip
    if HAS_BIAS:
        rh = tl.arange(0, BLOCK_H)
        db = tl.zeros((BLOCK_H,), dtype=ACC_DTYPE)
        for r0 in range(0, N, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            db += tl.sum(_load_rows(dz_ptr, r, r < N, rh, stride_y, H).to(ACC_DTYPE), axis=0)
        tl.store(db_ih_ptr + rh, db.to(db_ih_ptr.dtype.element_ty), mask=rh < H)
        tl.store(db_hh_ptr + rh, db.to(db_hh_ptr.dtype.element_ty), mask=rh < H)


@triton.jit
def _input_gradient(dx_ptr, dz_ptr, w_ih_ptr, stride_y, N, H, IN, BLOCK_H: tl.constexpr,
                    BLOCK_R: tl.constexpr, DOT_PRECISION: tl.constexpr,
                    ACC_DTYPE: tl.constexpr):  # fmt: skip
    """dx [N, IN] (row-major) = dZ W_ih of a one-direction layer, in [BLOCK_R, BLOCK_R]
    blocks."""
    rh = tl.arange(0, BLOCK_H)
    for r0 in range(0, N, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        in_r = r < N
        dz = _load_rows(dz_ptr, r, in_r, rh, stride_y, H)
        for i0 in range(0, IN, BLOCK_R):
            cols = i0 + tl.arange(0, BLOCK_R)
            w = _weight_block(w_ih_ptr, rh[:, None], cols[None, :], H, IN, False)
            dx = tl.dot(dz, w.to(dz.dtype), input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
            _store_rows(dx_ptr, r, in_r, cols, IN, IN, dx)


@triton.jit
def _backward_input(s, t0, step, T, dy_ptr, y_ptr, batch_sizes_ptr, offsets_ptr, rb, rh, B, H,
                    stride_y, stride_dy_t, stride_dy_b, stride_dy_col, PADDED: tl.constexpr,
                    HAS_DY: tl.constexpr, PAST_END: tl.constexpr):  # fmt: skip
    """(dy, y, active, rows) of the persistent backward's s-th step, as _forward_input."""
    t, active, rows = _steps_rows(
        s, t0, step, T, batch_sizes_ptr, offsets_ptr, rb, B, PADDED, PAST_END
    )
    at = _step_offsets(t, rows, rb, stride_dy_t, stride_dy_b, PADDED)
    dy = _gradient_rows(dy_ptr, at, active, rh, stride_dy_col, H, HAS_DY)
    return dy, _load_rows(y_ptr, rows, active, rh, stride_y, H), active, rows


@triton.jit
def _prefetch(ptr, offsets, mask):
    """Fetches ptr + offsets (where mask; elsewhere ptr, a valid address) into L1 and
    goes on: PTX prefetch, which writes no register that an instruction waits on."""
    tl.inline_asm_elementwise("{ prefetch.global.L1 [$1]; mov.u32 $0, 0; }", "=r,l",
                              [tl.where(mask, ptr + offsets, ptr)], dtype=tl.int32,
                              is_pure=False, pack=1)  # fmt: skip


@triton.jit
def _backward_prefetch(s, t0, step, T, dy_ptr, y_ptr, rb, rh, B, H, stride_y, stride_dy_t,
                       stride_dy_b, stride_dy_col, HAS_DY: tl.constexpr):  # fmt: skip
    """_prefetch of what _backward_input loads for the s-th step, on padded input."""
    t, active, rows = _steps_rows(s, t0, step, T, y_ptr, y_ptr, rb, B, True, False)
    mask = active[:, None] & (rh < H)[None, :]
    _prefetch(y_ptr, rows[:, None] * stride_y + rh[None, :], mask)
    if HAS_DY:
        at = _step_offsets(t, rows, rb, stride_dy_t, stride_dy_b, True)
        _prefetch(dy_ptr, at[:, None] + rh[None, :] * stride_dy_col, mask)


@triton.jit
def _backward_slot(dh, dy, y, active, rows, s_next, t0, step, T, dy_ptr, y_ptr,
                   batch_sizes_ptr, offsets_ptr, rb, rh, B, H, stride_y, stride_dy_t,
                   stride_dy_b, stride_dy_col, w, dz_ptr, PADDED: tl.constexpr,
                   HAS_DY: tl.constexpr, RELU: tl.constexpr, DOT_PRECISION: tl.constexpr,
                   ACC_DTYPE: tl.constexpr, SUM_IN_PARTS: tl.constexpr,
                   DOT_PARTS: tl.constexpr, LOAD_FIRST: tl.constexpr,
                   PREFETCH: tl.constexpr):  # fmt: skip
    """One persistent backward step of the active `rows` on its slot's dy and y
    (_backward_input): dz = (dy + dh) act'(y) stored, dh = dz W_hh; then (LOAD_FIRST:
    before) the slot loaded with step s_next's, as _forward_slot, and with PREFETCH step
    s_next + 1's prefetched before that.  (dh, the slot's dy, y, active, rows)."""
    if LOAD_FIRST:
        if PREFETCH:
            _backward_prefetch(s_next + 1, t0, step, T, dy_ptr, y_ptr, rb, rh, B, H,
                               stride_y, stride_dy_t, stride_dy_b, stride_dy_col,
                               HAS_DY)  # fmt: skip
        next_dy, next_y, next_active, next_rows = _backward_input(
            s_next, t0, step, T, dy_ptr, y_ptr, batch_sizes_ptr, offsets_ptr, rb, rh, B, H,
            stride_y, stride_dy_t, stride_dy_b, stride_dy_col, PADDED, HAS_DY, False,
        )  # fmt: skip
    dz = _activation_grad(dy.to(ACC_DTYPE) + dh, y.to(ACC_DTYPE), RELU)
    dz = tl.where(active[:, None] & (rh < H)[None, :], dz, 0.0)
    _store_rows(dz_ptr, rows, active, rh, stride_y, H, dz)
    dh_prev = _product(dz, w, DOT_PRECISION, ACC_DTYPE, SUM_IN_PARTS, DOT_PARTS)
    if not LOAD_FIRST:
        next_dy, next_y, next_active, next_rows = _backward_input(
            s_next, t0, step, T, dy_ptr, y_ptr, batch_sizes_ptr, offsets_ptr, rb, rh, B, H,
            stride_y, stride_dy_t, stride_dy_b, stride_dy_col, PADDED, HAS_DY, True,
        )  # fmt: skip
    return tl.where(active[:, None], dh_prev, dh), next_dy, next_y, next_active, next_rows


@triton.jit(do_not_specialize=["T", "N"])
def rnn_backward_persistent_kernel(
    dy_ptr,  # [N, D*H] gradient of the layer output, strides stride_dy_* (_step_offsets)
    y_ptr,  # [N, D*H] saved layer output; direction d owns columns d*H + [0, H)
    dz_ptr,  # [N, D*H] out: pre-activation gradients, laid out as y
    dhn_ptr,  # [D, B, H] gradient of h_n, strides stride_dhn_* (HAS_DHN only)
    dh0_ptr,  # [D, B, H] out: gradient of h0 (DH0 only)
    w_ptr,  # W_hh [H, H] of direction 0
    w_rev_ptr,  # W_hh [H, H] of direction 1 (bidirectional)
    batch_sizes_ptr,
    offsets_ptr,
    x_ptr,  # [N, IN] layer input, rows at strides stride_x_t, stride_x_b (WEIGHT_GRADS only)
    h0_ptr,  # [D, B, H] (WEIGHT_GRADS with HAS_H0 only)
    previous_ptr,  # [N] int64: each row's h_prev in cat([y, h0]), direction 0 (packed)
    previous_rev_ptr,  # the same of direction 1 (bidirectional)
    dw_ih_ptr,  # out: [H, IN] gradient of W_ih of direction 0 (WEIGHT_GRADS only)
    dw_ih_rev_ptr,  # of direction 1 (bidirectional)
    dw_hh_ptr,  # out: [H, H] gradient of W_hh of direction 0 (WEIGHT_GRADS only)
    dw_hh_rev_ptr,
    db_ih_ptr,  # out: [H] gradient of b_ih of direction 0 (WEIGHT_GRADS with HAS_BIAS)
    db_ih_rev_ptr,
    db_hh_ptr,  # out: [H] gradient of b_hh of direction 0 (WEIGHT_GRADS with HAS_BIAS)
    db_hh_rev_ptr,
    w_ih_ptr,  # W_ih [H, IN] (INPUT_GRAD only)
    dx_ptr,  # out: [N, IN] gradient of the layer input (INPUT_GRAD only)
    stride_y,
    T,
    B,
    H,
    N,
    stride_x_t,
    stride_x_b,
    IN,  # input features (WEIGHT_GRADS only)
    stride_dy_t,
    stride_dy_b,
    stride_dy_col,
    stride_dhn_cell,
    stride_dhn_row,
    stride_dhn_col,
    PADDED: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    HAS_DY: tl.constexpr,  # dy given (else zeros: the output did not reach the loss)
    HAS_DHN: tl.constexpr,  # dh_n given (else zeros)
    HAS_H0: tl.constexpr,  # h0 given (read with WEIGHT_GRADS)
    DH0: tl.constexpr,  # dh0 wanted (h0 given and needing a gradient): written
    WEIGHT_GRADS: tl.constexpr,  # one program per direction: the weight gradients here too
    HAS_BIAS: tl.constexpr,
    INPUT_GRAD: tl.constexpr,  # WEIGHT_GRADS of one direction: the input gradient too
    SUM_IN_PARTS: tl.constexpr,  # one row: FMA sums in parts (_product)
    DOT_PARTS: tl.constexpr,  # 16 rows or more: tl.dot's K parts (_product)
    STEPS_AHEAD: tl.constexpr,  # 1 or 4: how many steps before its use a step's dy and y load
    PREFETCH: tl.constexpr,  # one step ahead, padded: the step after's prefetched into L1
):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    direction = tl.program_id(1)
    dy_ptr, y_ptr, dz_ptr, dhn_ptr, dh0_ptr, w_ptr = _backward_operands(
        direction, dy_ptr, y_ptr, dz_ptr, dhn_ptr, dh0_ptr, w_ptr, w_rev_ptr, B, H,
        stride_dy_col, stride_dhn_cell,
    )  # fmt: skip
    rh = tl.arange(0, BLOCK_H)
    in_b = rb < B
    w = _product_operand(w_ptr, rh, rh, H, H, False, BLOCK_B, ACC_DTYPE)
    dh = _gradient_rows(dhn_ptr, rb.to(tl.int64) * stride_dhn_row, in_b, rh, stride_dhn_col,
                        H, HAS_DHN).to(ACC_DTYPE)  # fmt: skip
    t0, step = _time_order(direction, T, True)
    # Slot j: dy and y of step s + j of each pass of the loop, as the forward's slots
    # (_backward_slot).
    dy0, y0, a0, r0 = _backward_input(0, t0, step, T, dy_ptr, y_ptr, batch_sizes_ptr,
                                      offsets_ptr, rb, rh, B, H, stride_y, stride_dy_t,
                                      stride_dy_b, stride_dy_col, PADDED, HAS_DY,
                                      False)  # fmt: skip
    if STEPS_AHEAD == 4:
        dy1, y1, a1, r1 = _backward_input(1, t0, step, T, dy_ptr, y_ptr, batch_sizes_ptr,
                                          offsets_ptr, rb, rh, B, H, stride_y, stride_dy_t,
                                          stride_dy_b, stride_dy_col, PADDED,
                                          HAS_DY, True)  # fmt: skip
        dy2, y2, a2, r2 = _backward_input(2, t0, step, T, dy_ptr, y_ptr, batch_sizes_ptr,
                                          offsets_ptr, rb, rh, B, H, stride_y, stride_dy_t,
                                          stride_dy_b, stride_dy_col, PADDED,
                                          HAS_DY, True)  # fmt: skip
        dy3, y3, a3, r3 = _backward_input(3, t0, step, T, dy_ptr, y_ptr, batch_sizes_ptr,
                                          offsets_ptr, rb, rh, B, H, stride_y, stride_dy_t,
                                          stride_dy_b, stride_dy_col, PADDED,
                                          HAS_DY, True)  # fmt: skip
    for s in range(0, T, STEPS_AHEAD):
        dh, dy0, y0, a0, r0 = _backward_slot(
            dh, dy0, y0, a0, r0, s + STEPS_AHEAD, t0, step, T, dy_ptr, y_ptr,
            batch_sizes_ptr, offsets_ptr, rb, rh, B, H, stride_y, stride_dy_t, stride_dy_b,
            stride_dy_col, w, dz_ptr, PADDED, HAS_DY, RELU, DOT_PRECISION, ACC_DTYPE,
            SUM_IN_PARTS, DOT_PARTS, STEPS_AHEAD == 1, PREFETCH,
        )  # fmt: skip
        if STEPS_AHEAD == 4:
            dh, dy1, y1, a1, r1 = _backward_slot(
                dh, dy1, y1, a1, r1, s + 5, t0, step, T, dy_ptr, y_ptr, batch_sizes_ptr,
                offsets_ptr, rb, rh, B, H, stride_y, stride_dy_t, stride_dy_b, stride_dy_col,
                w, dz_ptr, PADDED, HAS_DY, RELU, DOT_PRECISION, ACC_DTYPE, SUM_IN_PARTS,
                DOT_PARTS, False, False,
            )  # fmt: skip
            dh, dy2, y2, a2, r2 = _backward_slot(
                dh, dy2, y2, a2, r2, s + 6, t0, step, T, dy_ptr, y_ptr, batch_sizes_ptr,
                offsets_ptr, rb, rh, B, H, stride_y, stride_dy_t, stride_dy_b, stride_dy_col,
                w, dz_ptr, PADDED, HAS_DY, RELU, DOT_PRECISION, ACC_DTYPE, SUM_IN_PARTS,
                DOT_PARTS, False, False,
            )  # fmt: skip
            dh, dy3, y3, a3, r3 = _backward_slot(
                dh, dy3, y3, a3, r3, s + 7, t0, step, T, dy_ptr, y_ptr, batch_sizes_ptr,
                offsets_ptr, rb, rh, B, H, stride_y, stride_dy_t, stride_dy_b, stride_dy_col,
                w, dz_ptr, PADDED, HAS_DY, RELU, DOT_PRECISION, ACC_DTYPE, SUM_IN_PARTS,
                DOT_PARTS, False, False,
            )  # fmt: skip
    if DH0:
        _store_rows(dh0_ptr, rb, in_b, rh, H, H, dh)
    if WEIGHT_GRADS:
        tl.debug_barrier()  # every thread's dz stores before any thread reads them back
        d = direction
        _weight_gradients(
            dz_ptr, y_ptr, x_ptr, h0_ptr + d.to(tl.int64) * B * H,
            _of_direction(d, previous_ptr, previous_rev_ptr),
            _of_direction(d, dw_ih_ptr, dw_ih_rev_ptr), _of_direction(d, dw_hh_ptr, dw_hh_rev_ptr),
            _of_direction(d, db_ih_ptr, db_ih_rev_ptr), _of_direction(d, db_hh_ptr, db_hh_rev_ptr),
            d, stride_y, stride_x_t, stride_x_b, N, B, H, IN, PADDED, HAS_H0, HAS_BIAS, BLOCK_H,
            16,
            DOT_PRECISION, ACC_DTYPE,
        )  # fmt: skip
        if INPUT_GRAD:
            _input_gradient(dx_ptr, dz_ptr, w_ih_ptr, stride_y, N, H, IN, BLOCK_H, 16,
                            DOT_PRECISION, ACC_DTYPE)  # fmt: skip


@triton.jit(do_not_specialize=["T", "N"])
def rnn_forward_cooperative_kernel(
    xp_ptr,  # [D, N, H] input projections incl. b_ih, one [N, H] block per direction,
    # its rows at strides stride_xp_t, stride_xp_b (_step_offsets)
    b_ptr,  # [H] b_hh of direction 0 (unused without HAS_BIAS)
    b_rev_ptr,  # [H] b_hh of direction 1 (bidirectional)
    y_ptr,  # [N, D*H] layer output, row stride stride_y; direction d owns columns d*H + [0, H)
    h0_ptr,  # [D, B, H] (unused without HAS_H0: zeros)
    hn_ptr,  # [D, B, H]
    w_ptr,  # W_hh [H, H] of direction 0
    w_rev_ptr,  # W_hh [H, H] of direction 1 (bidirectional)
    batch_sizes_ptr,  # [T] int64 (packed only)
    offsets_ptr,  # [T] int64 (packed only)
    state_ptr,  # [D, 2, B, H] ACC_DTYPE workspace: h ping-pongs between a direction's halves
    # (unused with TAGGED: the state is exchanged in sync_ptr's)
    sync_ptr,  # zero at launch: [D] int32, each direction's grid-barrier arrivals; TAGGED:
    # [D, 2, B, H] int64, h ping-ponging as tagged words (_tagged_words), h0 tagged 1, h_t t + 2
    w_low_ptr,  # [D, H, H] fp32 workspace: W_hh's low TF32 parts (W_LOW_PARTS only)
    stride_y,
    T,
    N,
    B,
    H,
    stride_xp_t,
    stride_xp_b,
    PADDED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    W_ON_CHIP: tl.constexpr,
    BLOCK_H: tl.constexpr,
    SPLIT_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    W_LOW_PARTS: tl.constexpr,  # tf32x3 on streamed W_hh: its parts split once (w_low_ptr)
    PIPELINE_TILES: tl.constexpr,  # the tile loop pipelined (False: a program has one tile)
    TAGGED: tl.constexpr,  # h exchanged as tagged words, read when written: no grid barrier
):
    programs = tl.num_programs(0)  # per direction; the directions never wait on each other
    direction = tl.program_id(1)
    xp_ptr, b_ptr, y_ptr, h0_ptr, hn_ptr, w_ptr = _forward_operands(
        direction, xp_ptr, b_ptr, b_rev_ptr, y_ptr, h0_ptr, hn_ptr, w_ptr, w_rev_ptr, N, B, H
    )
    state_size = B * H
    if TAGGED:
        state_ptr = sync_ptr + direction.to(tl.int64) * 2 * state_size
    else:
        state_ptr += direction.to(tl.int64) * 2 * state_size
        sync_ptr += direction
    w_low_ptr += direction.to(tl.int64) * H * H
    col_tiles = tl.cdiv(H, BLOCK_N)
    tiles = tl.cdiv(B, BLOCK_B) * col_tiles
    wt_chip = 0.0  # W_hh^T's columns of this program when on chip (unused when streamed)
    if W_ON_CHIP:
        wt_chip = _tf32_operand(_own_columns(w_ptr, col_tiles, H, BLOCK_N, BLOCK_H, SPLIT_K,
                                             True), DOT_PRECISION)  # fmt: skip
    elif W_LOW_PARTS:
        # Read by every program from the first product on, which a grid barrier precedes.
        _store_low_parts(w_ptr, w_low_ptr, H)
    arrivals = 0
    if HAS_H0:  # h0 into the half that step 0 reads, in the state's precision
        for tile in range(tl.program_id(0), tiles, programs):
            rb, rn = _tile(tile, col_tiles, BLOCK_B, BLOCK_N)
            h0 = _load_rows(h0_ptr, rb, rb < B, rn, H, H)
            _store_state(state_ptr + state_size, rb, rb < B, rn, H, h0.to(ACC_DTYPE), 1)
        if not TAGGED:
            arrivals = programs
            _grid_barrier(sync_ptr, arrivals)
    t_first, step = _time_order(direction, T, False)
    for i in range(T):
        t = t_first + i * step
        h_prev_ptr = state_ptr + ((i + 1) % 2) * state_size
        h_next_ptr = state_ptr + (i % 2) * state_size
        # Pipelined, a next tile's rows of h_{t-1} are staged through cp.async buffers:
        # with one tile a program, instructions for nothing (docs/performance.md).
        for tile in tl.range(
            tl.program_id(0), tiles, programs, num_stages=None if PIPELINE_TILES else 1
        ):
            rb, rn = _tile(tile, col_tiles, BLOCK_B, BLOCK_N)
            in_b = rb < B
            in_n = rn < H
            # Loads that do not need h_{t-1} first: their latency overlaps the product.
            active, rows = _step_rows(batch_sizes_ptr, offsets_ptr, t, rb, B, PADDED)
            at = _step_offsets(t, rows, rb, stride_xp_t, stride_xp_b, PADDED)
            z = _load_at(xp_ptr, at, active, rn, 1, H).to(ACC_DTYPE)
            if HAS_BIAS:
                z += tl.load(b_ptr + rn, mask=in_n, other=0.0).to(ACC_DTYPE)[None, :]
            h_old = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
            if not PADDED:  # rows outside step t keep their state (this program's tile)
                if i > 0 or HAS_H0:
                    h_old = _load_state(h_prev_ptr, rb, in_b, rn, H, i + 1)
            if i > 0 or HAS_H0:
                z = _times_columns(
                    z, h_prev_ptr, rb, in_b, H, H, i + 1, w_ptr, w_low_ptr, wt_chip, rn, True,
                    W_ON_CHIP, BLOCK_H, SPLIT_K, BLOCK_K, DOT_PRECISION, ACC_DTYPE, W_LOW_PARTS,
                )  # fmt: skip
            y = _activation(z, RELU)
            _store_rows(y_ptr, rows, active, rn, stride_y, H, y)
            h_new = tl.where(active[:, None], y, h_old)
            _store_state(h_next_ptr, rb, in_b, rn, H, h_new, i + 2)
            if i == T - 1:
                _store_rows(hn_ptr, rb, in_b, rn, H, H, h_new)
        if i < T - 1 and not TAGGED:
            _grid_barrier(sync_ptr, arrivals + (i + 1) * programs)


@triton.jit(do_not_specialize=["T"])
def rnn_backward_cooperative_kernel(
    dy_ptr,  # [N, D*H] gradient of the layer output, strides stride_dy_* (_step_offsets)
    y_ptr,  # [N, D*H] saved layer output; direction d owns columns d*H + [0, H)
    dz_ptr,  # [N, D*H] out: pre-activation gradients, laid out as y
    dhn_ptr,  # [D, B, H] gradient of h_n, strides stride_dhn_* (HAS_DHN only)
    dh0_ptr,  # [D, B, H] out: gradient of h0 (DH0 only)
    w_ptr,  # W_hh [H, H] of direction 0
    w_rev_ptr,  # W_hh [H, H] of direction 1 (bidirectional)
    batch_sizes_ptr,
    offsets_ptr,
    state_ptr,  # [D, B, H] ACC_DTYPE workspace: dh of the rows outside the current step
    sync_ptr,  # zero at launch: [D] int32, grid-barrier arrivals; TAGGED: [D, 2, B, H] int64,
    # dz ping-ponging as tagged words (_tagged_words) by batch row, the i-th step processed's
    # tagged i + 1
    w_low_ptr,  # [D, H, H] fp32 workspace: W_hh's low TF32 parts (W_LOW_PARTS only)
    stride_y,
    T,
    B,
    H,
    stride_dy_t,
    stride_dy_b,
    stride_dy_col,
    stride_dhn_cell,
    stride_dhn_row,
    stride_dhn_col,
    PADDED: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    W_ON_CHIP: tl.constexpr,
    BLOCK_H: tl.constexpr,
    SPLIT_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    W_LOW_PARTS: tl.constexpr,  # tf32x3 on streamed W_hh: its parts split once (w_low_ptr)
    HAS_DY: tl.constexpr,  # dy given (else zeros: the output did not reach the loss)
    HAS_DHN: tl.constexpr,  # dh_n given (else zeros)
    DH0: tl.constexpr,  # dh0 wanted (h0 given and needing a gradient): written
    TAGGED: tl.constexpr,  # dz exchanged as tagged words, read when written: no grid barrier
):
    programs = tl.num_programs(0)  # per direction
    direction = tl.program_id(1)
    dy_ptr, y_ptr, dz_ptr, dhn_ptr, dh0_ptr, w_ptr = _backward_operands(
        direction, dy_ptr, y_ptr, dz_ptr, dhn_ptr, dh0_ptr, w_ptr, w_rev_ptr, B, H,
        stride_dy_col, stride_dhn_cell,
    )  # fmt: skip
    state_ptr += direction.to(tl.int64) * B * H
    if TAGGED:
        exchange_ptr = sync_ptr + direction.to(tl.int64) * 2 * B * H
    else:
        sync_ptr += direction
    w_low_ptr += direction.to(tl.int64) * H * H
    col_tiles = tl.cdiv(H, BLOCK_N)
    tiles = tl.cdiv(B, BLOCK_B) * col_tiles
    w_chip = 0.0  # W_hh's columns of this program when on chip (unused when streamed)
    if W_ON_CHIP:
        w_chip = _tf32_operand(_own_columns(w_ptr, col_tiles, H, BLOCK_N, BLOCK_H, SPLIT_K,
                                            False), DOT_PRECISION)  # fmt: skip
    elif W_LOW_PARTS:  # read after the grid barrier below
        _store_low_parts(w_ptr, w_low_ptr, H)
    t_first, step = _time_order(direction, T, True)
    # dz of the first step processed, from dh_n.
    for tile in range(tl.program_id(0), tiles, programs):
        rb, rn = _tile(tile, col_tiles, BLOCK_B, BLOCK_N)
        dh = _gradient_rows(dhn_ptr, rb.to(tl.int64) * stride_dhn_row, rb < B, rn,
                            stride_dhn_col, H, HAS_DHN).to(ACC_DTYPE)  # fmt: skip
        active, rows = _step_rows(batch_sizes_ptr, offsets_ptr, t_first, rb, B, PADDED)
        at = _step_offsets(t_first, rows, rb, stride_dy_t, stride_dy_b, PADDED)
        dy = _gradient_rows(dy_ptr, at, active, rn, stride_dy_col, H, HAS_DY)
        y = _load_rows(y_ptr, rows, active, rn, stride_y, H)
        dz = _activation_grad(dy.to(ACC_DTYPE) + dh, y.to(ACC_DTYPE), RELU)
        _store_rows(dz_ptr, rows, active, rn, stride_y, H, dz)
        _store_rows(state_ptr, rb, rb < B, rn, H, H, dh)
        if TAGGED:  # rows outside the step too: their product is not used
            _store_state(exchange_ptr, rb, rb < B, rn, H, dz, 1)
    if TAGGED:
        tl.debug_barrier()  # this program's own dh state: stored before it is read
    else:
        _grid_barrier(sync_ptr, programs)
    for i in range(T):
        t = t_first + i * step
        for tile in range(tl.program_id(0), tiles, programs):
            rb, rn = _tile(tile, col_tiles, BLOCK_B, BLOCK_N)
            in_b = rb < B
            active, rows = _step_rows(batch_sizes_ptr, offsets_ptr, t, rb, B, PADDED)
            # Loads that do not need dz_t first: their latency overlaps the product.
            dh_old = _load_rows(state_ptr, rb, in_b, rn, H, H)  # this program's own tile
            t_next, active_next, rows_next = _steps_rows(
                i + 1, t_first, step, T, batch_sizes_ptr, offsets_ptr, rb, B, PADDED, False
            )
            at = _step_offsets(t_next, rows_next, rb, stride_dy_t, stride_dy_b, PADDED)
            dy_next = _gradient_rows(dy_ptr, at, active_next, rn, stride_dy_col, H, HAS_DY)
            y_next = _load_rows(y_ptr, rows_next, active_next, rn, stride_y, H)
            # dh[:, n] = sum_k dz_t[:, k] W_hh[k, n], every column of dz_t stored already.
            if TAGGED:  # dz_t by batch row, as tagged words
                a_ptr, a_rows, a_active, a_stride = exchange_ptr + (i % 2) * B * H, rb, in_b, H
            else:
                a_ptr, a_rows, a_active, a_stride = dz_ptr, rows, active, stride_y
            acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
            acc = _times_columns(
                acc, a_ptr, a_rows, a_active, a_stride, H, i + 1, w_ptr, w_low_ptr, w_chip,
                rn, False, W_ON_CHIP, BLOCK_H, SPLIT_K, BLOCK_K, DOT_PRECISION, ACC_DTYPE,
                W_LOW_PARTS,
            )  # fmt: skip
            dh = tl.where(active[:, None], acc, dh_old)
            if i < T - 1:
                dz = _activation_grad(dy_next.to(ACC_DTYPE) + dh, y_next.to(ACC_DTYPE), RELU)
                _store_rows(dz_ptr, rows_next, active_next, rn, stride_y, H, dz)
                _store_rows(state_ptr, rb, in_b, rn, H, H, dh)
                if TAGGED:
                    _store_state(exchange_ptr + ((i + 1) % 2) * B * H, rb, in_b, rn, H, dz,
                                 i + 2)  # fmt: skip
            elif DH0:
                _store_rows(dh0_ptr, rb, in_b, rn, H, H, dh)
        if i < T - 1:
            if TAGGED:
                tl.debug_barrier()  # this program's own dh state: stored before it is read
            else:
                _grid_barrier(sync_ptr, (i + 2) * programs)


@triton.jit
def gemm_tf32_kernel(
    a_ptr,  # [M, K] at strides stride_am, stride_ak (a transposed view too)
    b_ptr,  # [K, N] at strides stride_bk, stride_bn
    bias_ptr,  # [N], added to C (unused without HAS_BIAS)
    c_ptr,  # [S, M, N] at strides stride_cs, stride_cm, stride_cn: split s's part of A @ B
    M, N, K,
    SPLIT_BLOCKS,  # BLOCK_K blocks of K per split (grid axis 1)
    stride_am, stride_ak, stride_bk, stride_bn, stride_cs, stride_cm, stride_cn,
    HAS_BIAS: tl.constexpr,
    ACCUMULATE: tl.constexpr,  # C += A @ B (one split)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    """C = A @ B (+ bias) in fp32 on TF32 tensor cores, the precision cuDNN's fp32 GEMMs
    take under nn.RNN's TF32 flag: one [BLOCK_M, BLOCK_N] tile of C per program, its K
    split over grid axis 1 (each split's sum into its own part of C, summed by the
    launcher: deterministic).  Tiles run GROUP_M rows of tiles at a time, so that
    neighbouring programs share A's and B's blocks in L2.  A split starts at a multiple
    of BLOCK_K and the masks compare with M, N and K alone, so that where Triton knows
    those and the strides to be multiples of 16 it loads an operand stored along K 16
    bytes at a time (TF32 tensor cores read only such operands; others it copies 4
    bytes at a time: docs/performance.md).  Offsets are int64."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    pid = tl.program_id(0)
    group = pid // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    group_m = tl.minimum(tiles_m - first_m, GROUP_M)
    tile_m = first_m + (pid % (GROUP_M * tiles_n)) % group_m
    tile_n = (pid % (GROUP_M * tiles_n)) // group_m
    rm = (tile_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = (tile_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    split = tl.program_id(1)
    k_first = split.to(tl.int64) * SPLIT_BLOCKS * BLOCK_K
    k_end = tl.minimum(k_first + SPLIT_BLOCKS * BLOCK_K, K)
    rk = tl.arange(0, BLOCK_K).to(tl.int64)
    a_ptrs = a_ptr + rm[:, None] * stride_am + (k_first + rk)[None, :] * stride_ak
    b_ptrs = b_ptr + (k_first + rk)[:, None] * stride_bk + rn[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_first, k_end, BLOCK_K):
        in_k = k + rk < K  # a split's blocks end where the next one's begin
        a = tl.load(a_ptrs, mask=(rm[:, None] < M) & in_k[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=in_k[:, None] & (rn[None, :] < N), other=0.0)
        # Rounded to TF32 as cuBLAS's TF32 does: the tensor cores would drop the low bits
        # (truncation, twice cuBLAS's error on an H200: docs/performance.md).
        acc = tl.dot(_tf32_high(a), _tf32_high(b), acc, input_precision="tf32")
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if HAS_BIAS:
        bias = tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
        acc += tl.where(split == 0, bias, 0.0)[None, :]  # once, in split 0's part
    c_ptr += split.to(tl.int64) * stride_cs
    c_ptrs = c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn
    in_c = (rm[:, None] < M) & (rn[None, :] < N)
    if ACCUMULATE:
        acc += tl.load(c_ptrs, mask=in_c, other=0.0)
    tl.store(c_ptrs, acc, mask=in_c)
