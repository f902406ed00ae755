"""Launch functions: the whole multi-layer RNN forward / backward on the kernels of
kernels.py, with the signatures of the fastrnn::rnn_forward / rnn_backward ops whose CUDA
kernels they are (registration.py).  The GEMMs outside the recurrence are torch ops
(cuBLAS on a GPU).

Nothing here copies between host and device for padded input, so a forward and backward
on CUDA tensors can be captured in a CUDA graph.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import triton
from torch import Tensor
from triton import knobs

from fastrnn.layout import step_layout
from fastrnn.triton import kernels

# Largest padded H of the persistent tier, per dtype.  Each compiles for sm_80 and sm_90
# within shared memory and with no local memory (python tools/cubin_report.py); at
# fp16/bf16 H=256 it beat the cooperative tier's inference on an H200 and tied its
# training (docs/performance.md).
MAX_PERSISTENT_H = {torch.float32: 128, torch.float64: 64, torch.float16: 256, torch.bfloat16: 256}
# Cooperative tier tiles: 32 hidden columns per tile up to padded H=512 (more programs
# share the work; at fp32 H=256 64-wide tiles spilled), 64 above (fewer passes over h),
# as measured on an H200 (docs/performance.md); a program's W_hh columns held on chip
# where they fit (cooperative_shared_memory), else streamed from L2 32 rows at a time.
COOP_BLOCK_N: int | None = None  # overrides the choice by H (tools/gpu_tier_ab.py, tests)
COOP_BLOCK_K = 32
COOP_W_ON_CHIP = True  # tools/gpu_tier_ab.py turns it off to time the streamed kernels
# Batch rows per program: tl.dot needs at least 16.  A persistent program may instead
# take fewer rows and multiply with FMAs, where that [rows, H, H] product stays within
# FMA_PRODUCT_ELEMENTS (persistent_rows): a shorter step than tl.dot's, as measured on
# an H200 (docs/performance.md).
BLOCK_B = 16
FMA_PRODUCT_ELEMENTS = 8 * 64 * 64
# A short sequence's call is host-bound, and the input projection's GEMM is a large part
# of its host time: up to PROJECT_INPUT_MAX_STEPS steps the persistent forward projects
# each step's input itself, on FMA programs whose [rows, I, H] product is within
# PROJECT_INPUT_ELEMENTS (input_block; docs/performance.md).
PROJECT_INPUT_MAX_STEPS = 32
PROJECT_INPUT_ELEMENTS = 64 * 128

ACC_DTYPE = {
    torch.float64: triton.language.float64,
    torch.float32: triton.language.float32,
    torch.float16: triton.language.float32,
    torch.bfloat16: triton.language.float32,
}
STATE_DTYPE = {torch.float64: torch.float64}  # else float32

# Tests set these: the tier regardless of H, and the cooperative grid's size.
FORCE_TIER: str | None = None
FORCE_PROGRAMS: int | None = None


# On a GPU each kernel is launched from its compiled form, kept per specialisation
# (launch_kernel); False: every launch goes through JITFunction.run, as the tools' A/B
# runs time it.
DIRECT_LAUNCH = True
_COMPILED: dict[tuple, tuple] = {}


def _cdiv(a: int, b: int) -> int:
    # Not triton.cdiv: on the host, Triton 3.9's constexpr functions cost ~2 us a call.
    return -(-a // b)


def _block(size: int) -> int:
    """A kernel's block for `size` elements: the next power of two, at least 16 (tl.dot)."""
    return max(16, 1 << (size - 1).bit_length())


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which tier and tiles run hidden size H in dtype, with which dot precision."""

    tier: str  # "persistent" or "cooperative"
    block_h: int
    num_warps: int
    precision: str  # tl.dot's input_precision, which the shared-memory sizing assumed
    block_n: int = 0  # cooperative: hidden columns per tile
    w_on_chip: bool = False  # cooperative: a program's W_hh columns fit its shared memory


def persistent_shared_memory(block_h: int, dtype: torch.dtype, precision: str,
                             block_i: int = 0) -> int:  # fmt: skip
    """Bytes of shared memory a persistent-tier kernel needs at most: W_hh (twice for
    tf32x3, its high and low parts), a [BLOCK_B, block_h] operand tile, 1 KB of
    Triton's own scratch, and for a forward projecting an input of block_i (padded)
    features a [block_i, block_h] accumulator-precision reduction scratch.  An upper
    bound of what Triton allocates; tools/cubin_report.py checks it on every kernel."""
    element = dtype.itemsize
    copies = 2 if precision == "tf32x3" else 1
    recurrence = copies * (block_h * block_h * element + BLOCK_B * block_h * max(element, 4))
    return recurrence + block_i * block_h * max(element, 4) + 1024


def cooperative_shared_memory(block_h: int, dtype: torch.dtype, precision: str,
                              block_n: int) -> int:  # fmt: skip
    """Bytes of shared memory a cooperative-tier kernel needs at most with its W_hh
    columns on chip: [block_h, block_n] of W_hh and two [BLOCK_B, block_h] operand
    tiles (all twice for tf32x3) and 8 KB of Triton's own scratch; checked as above."""
    element = dtype.itemsize
    copies = 2 if precision == "tf32x3" else 1
    per_row = block_n * element + 2 * BLOCK_B * max(element, 4)
    return copies * block_h * per_row + 8192


@functools.cache
def plan(hidden: int, dtype: torch.dtype, precision: str = "ieee",
         shared_memory: int | None = None, force_tier: str | None = None,
         block_n: int | None = None) -> Plan:  # fmt: skip
    """The persistent tier up to MAX_PERSISTENT_H where its kernel fits shared_memory
    (bytes per block; None: no limit, as in the interpreter), else the cooperative one
    with block_n-column tiles (None: chosen by H, see COOP_BLOCK_N), their W_hh columns
    on chip where they fit."""
    block_h = _block(hidden)
    fits = block_h <= MAX_PERSISTENT_H[dtype] and (
        shared_memory is None
        or persistent_shared_memory(block_h, dtype, precision) <= shared_memory
    )
    tier = force_tier or ("persistent" if fits else "cooperative")
    if tier == "persistent":
        # 8 warps at the larger tiles, the configuration measured on a GPU; 4 also
        # compile without spills with Triton 3.9 (docs/performance.md).
        wide = block_h >= 128 or (dtype == torch.float32 and block_h == 64)
        return Plan("persistent", block_h, 8 if wide else 4, precision)
    block_n = block_n or (32 if block_h <= 512 else 64)
    on_chip = shared_memory is None or (
        cooperative_shared_memory(block_h, dtype, precision, block_n) <= shared_memory
    )
    return Plan("cooperative", block_h, 4, precision, block_n, on_chip)


@functools.cache
def device_shared_memory(device: torch.device) -> int | None:
    """Shared memory a block may opt in to on a CUDA device (None: the interpreter)."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


@functools.cache
def device_sms(device: torch.device) -> int:  # a CUDA device's streaming multiprocessors
    return torch.cuda.get_device_properties(device).multi_processor_count


def persistent_rows(batch: int, block_h: int, programs: int | None = None) -> int:
    """Batch rows per persistent program: for FMA products the fewest (a power of two)
    that keep the grid within `programs` (one per SM; None: no limit), since a step's
    latency grows with a program's rows; BLOCK_B rows for tl.dot where that product
    would not fit registers."""
    rows = 1
    while programs is not None and rows < BLOCK_B and _cdiv(batch, rows) > programs:
        rows *= 2
    if rows < BLOCK_B and rows * block_h * block_h <= FMA_PRODUCT_ELEMENTS:
        return rows
    return BLOCK_B


def plan_for(w_hh: Tensor) -> Plan:  # w_hh [H, H]
    """plan() for this recurrence: its dtype, dot precision and device."""
    return plan(w_hh.shape[0], w_hh.dtype, dot_precision(w_hh.dtype),
                device_shared_memory(w_hh.device), FORCE_TIER, COOP_BLOCK_N)  # fmt: skip


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 follows nn.RNN's flag on a GPU: tensor cores when cuDNN may use TF32, else
    IEEE FMA.  tf32x3 (three TF32 products) rather than plain TF32: over many steps
    plain TF32 drifted to 1e-3 from fp64 where cuDNN stayed near 1e-5 (docs/performance.md)."""
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        return "tf32x3"
    return "ieee"


def interpreting(tensor: Tensor) -> bool:
    return tensor.device.type == "cpu"  # CPU tensors reach these kernels only interpreted


def cooperative_programs(tiles: int, directions: int, device: torch.device) -> int:
    """Programs per direction of a cooperative grid: one per SM at most over all
    directions, so all are resident at once."""
    if FORCE_PROGRAMS is not None:
        return min(tiles, FORCE_PROGRAMS)
    if device.type != "cuda":
        return 1  # the interpreter runs programs one after another: a barrier needs one
    return min(tiles, max(1, device_sms(device) // directions))


def _specialization(pointers: tuple[Tensor, ...], scalars: tuple[int, ...]) -> tuple:
    """What Triton specialises runtime arguments on, or more: a tensor's dtype and 16-byte
    alignment; an integer's being 1, a multiple of 16 and its width."""
    return (
        *[p.dtype for p in pointers],
        *[p.data_ptr() & 15 == 0 for p in pointers],
        *[(s == 1, s & 15 == 0, s >> 31) for s in scalars],
    )


def launch_kernel(kernel, grid: tuple[int, int], pointers: tuple[Tensor, ...],
                  scalars: tuple[int, ...], meta: dict) -> None:  # fmt: skip
    """kernel[grid](*pointers, *scalars, **meta): the kernel's tensor arguments, then its
    integer ones, in signature order; meta: its constexprs and launch options.  On a GPU
    the compiled kernel of each specialisation is kept and handed straight to its
    launcher, skipping the argument binding, cache-key building and option parsing that
    JITFunction.run does on every call (docs/performance.md).  The first launch of a
    specialisation, the interpreter, wrapped kernels and registered launch hooks take
    JITFunction.run."""
    hooks = knobs.runtime
    if (
        not DIRECT_LAUNCH
        or not isinstance(kernel, triton.runtime.JITFunction)
        or interpreting(pointers[0])
        or hooks.launch_enter_hook.calls
        or hooks.launch_exit_hook.calls
    ):
        kernel[grid](*pointers, *scalars, **meta)
        return
    device = torch.cuda.current_device()  # where Triton compiles and launches
    # id(kernel): kernels live as long as the module; a JITFunction's hash takes a lock.
    key = (id(kernel), device, *meta.items(), *_specialization(pointers, scalars))
    entry = _COMPILED.get(key)
    if entry is None:
        compiled = kernel[grid](*pointers, *scalars, **meta)
        # The launcher takes every parameter, constexprs too (it ignores their values).
        constexprs = [meta[name] for name in kernel.arg_names[len(pointers) + len(scalars) :]]
        _COMPILED[key] = (compiled.run, compiled.function, compiled.packed_metadata, constexprs)
        return
    run, function, packed_metadata, constexprs = entry
    stream = torch._C._cuda_getCurrentRawStream(device)
    run(grid[0], grid[1], 1, stream, function, packed_metadata, None, None, None,
        *pointers, *scalars, *constexprs)  # fmt: skip


@dataclasses.dataclass
class Steps:
    """The rows of each step, as the kernels take them (fastrnn.layout)."""

    steps: int
    batch: int
    rows: int
    padded: bool
    batch_sizes: Tensor | None  # [T] int64 on the device (packed only)
    offsets: Tensor | None  # [T] int64 on the device (packed only)

    def tables(self, placeholder: Tensor) -> tuple[Tensor, Tensor]:
        """The kernels' batch-size and offset arguments (padded input: never read; Triton
        needs a tensor there, not None)."""
        if self.padded:
            return placeholder, placeholder
        return self.batch_sizes, self.offsets


def make_steps(input: Tensor, batch_sizes: Tensor | None, batch: int) -> Steps:
    if batch_sizes is None:  # padded: no tables, nothing copied to the device
        steps, batch = input.shape[0], input.shape[1]
        return Steps(steps, batch, steps * batch, True, None, None)
    layout = step_layout(input, batch_sizes)
    as_tensor = lambda v: torch.tensor(v, dtype=torch.int64).to(input.device)  # noqa: E731
    return Steps(layout.steps, batch, layout.rows, False,
                 as_tensor(layout.batch_sizes), as_tensor(layout.offsets))  # fmt: skip


def barrier_counters(weights: list[Tensor], cells: int) -> Tensor | None:  # [cells] int32
    """Zeroed grid-barrier counters, one per (layer, direction), for an op call whose
    recurrences run on the cooperative tier (None for the persistent tier): one fill
    kernel per call rather than one per launch."""
    w_hh = weights[1]
    if plan_for(w_hh).tier != "cooperative":
        return None
    return torch.zeros(cells, dtype=torch.int32, device=w_hh.device)


def persistent_grid(steps: Steps, p: Plan, w_hh: Tensor, directions: int):
    """(batch rows per program, grid) of the persistent tier for this recurrence."""
    programs = None if interpreting(w_hh) else max(1, device_sms(w_hh.device) // directions)
    rows = persistent_rows(steps.batch, p.block_h, programs)
    return rows, (_cdiv(steps.batch, rows), directions)


def input_block(steps: Steps, w_hh: Tensor, input_size: int, directions: int) -> int:
    """BLOCK_I where the persistent forward projects the layer's input itself, else 0:
    at most PROJECT_INPUT_MAX_STEPS steps, on FMA programs (fewer than BLOCK_B rows)
    whose [rows, BLOCK_I, BLOCK_H] product is within PROJECT_INPUT_ELEMENTS."""
    p = plan_for(w_hh)
    if p.tier != "persistent" or steps.steps > PROJECT_INPUT_MAX_STEPS:
        return 0
    rows, _ = persistent_grid(steps, p, w_hh, directions)
    block_i = _block(input_size)
    if rows >= BLOCK_B or rows * block_i * p.block_h > PROJECT_INPUT_ELEMENTS:
        return 0
    shared = device_shared_memory(w_hh.device)
    needed = persistent_shared_memory(p.block_h, w_hh.dtype, p.precision, block_i)
    return block_i if shared is None or needed <= shared else 0


def _launch(kernel_pair, steps: Steps, w_hh: list[Tensor], counters, state_shape, pointers,
            scalars, relu: bool, persistent_extra=((), (), {}), **constexprs):  # fmt: skip
    """Runs (persistent, cooperative) kernel_pair's kernel for the tier plan() picks, one
    program column per direction (len(w_hh)); the cooperative kernel also takes a state
    workspace of state_shape per direction and the directions' barrier counters, the
    persistent one persistent_extra's (pointers, scalars, constexprs)."""
    directions, hidden = len(w_hh), w_hh[0].shape[0]
    p = plan_for(w_hh[0])
    persistent, cooperative = kernel_pair
    meta = dict(constexprs, PADDED=steps.padded, RELU=relu,
                ACC_DTYPE=ACC_DTYPE[w_hh[0].dtype], DOT_PRECISION=p.precision)  # fmt: skip
    if p.tier == "persistent":
        rows, grid = persistent_grid(steps, p, w_hh[0], directions)
        extra_pointers, extra_scalars, extra_constexprs = persistent_extra
        meta.update(extra_constexprs, BLOCK_B=rows, BLOCK_H=p.block_h, num_warps=p.num_warps)
        launch_kernel(persistent, grid, (*pointers, *extra_pointers),
                      (*scalars, *extra_scalars), meta)  # fmt: skip
        return
    col_tiles = _cdiv(hidden, p.block_n)
    tiles = _cdiv(steps.batch, BLOCK_B) * col_tiles
    programs = cooperative_programs(tiles, directions, w_hh[0].device)
    on_chip = COOP_W_ON_CHIP and p.w_on_chip
    if on_chip and programs < tiles and programs >= col_tiles:
        programs -= programs % col_tiles  # so each program's tiles share their columns
    on_chip = on_chip and programs % col_tiles == 0
    state = w_hh[0].new_empty((directions, *state_shape),
                              dtype=STATE_DTYPE.get(w_hh[0].dtype, torch.float32))  # fmt: skip
    meta.update(BLOCK_B=BLOCK_B, BLOCK_N=p.block_n, BLOCK_K=COOP_BLOCK_K, W_ON_CHIP=on_chip,
                BLOCK_H=p.block_h if on_chip else 0, num_warps=4)  # fmt: skip
    if not interpreting(w_hh[0]):
        meta["launch_cooperative_grid"] = True
    launch_kernel(cooperative, (programs, directions), (*pointers, state, counters), scalars,
                  meta)  # fmt: skip


def _both(tensors: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The kernels' (direction 0, direction 1) arguments; one direction: the same twice."""
    return tensors[0], tensors[-1]


def recurrence_forward(xp, b_hh, y, h0, h_n, w_hh, counters, steps: Steps, relu: bool,
                       projection=None):  # fmt: skip
    """One layer, every direction in one launch: y[rows, direction d's columns] =
    act(xp[d] + b_hh[d] + h_prev @ W_hh[d]^T) for every step, direction 1 running
    backwards in time; h_n = final states.
    xp: [D, N, H] (one direction: [N, H]); b_hh: D tensors [H] or None;
    y: [N, D*H] (row stride y.stride(0)); h0: [D, B, H] or None for zeros;
    h_n: [D, B, H]; w_hh: D tensors [H, H];
    counters: [D] barrier counters (barrier_counters) or None;
    projection: (x [N, I] with unit column stride, W_ih: D tensors [H, I], b_ih: D
    tensors [H] or None, BLOCK_I from input_block) where the persistent kernel computes
    xp = x W_ih^T + b_ih itself; xp is then None."""
    if steps.batch == 0:
        return
    if steps.steps == 0:
        if h0 is not None:
            h_n.copy_(h0)
        else:
            h_n.zero_()
        return
    x, w_ih, b_ih, block_i = projection or (xp, [xp], None, 16)
    xp = x if xp is None else xp  # a placeholder where the kernel projects x itself
    pointers = (xp, *_both(b_hh if b_hh is not None else [xp]), y,
                h0 if h0 is not None else xp, h_n, *_both(w_hh), *steps.tables(xp))  # fmt: skip
    scalars = (y.stride(0), steps.steps, steps.rows, steps.batch, w_hh[0].shape[0])
    persistent_extra = (
        (x, *_both(w_ih), *_both(b_ih if b_ih is not None else [x])),
        (x.stride(0), x.shape[1]),
        {"PROJECT_INPUT": projection is not None, "BLOCK_I": block_i},
    )
    kernel_pair = (kernels.rnn_forward_persistent_kernel, kernels.rnn_forward_cooperative_kernel)
    state_shape = (2, steps.batch, w_hh[0].shape[0])
    _launch(kernel_pair, steps, w_hh, counters, state_shape, pointers, scalars, relu,
            persistent_extra, HAS_BIAS=b_hh is not None, HAS_H0=h0 is not None)  # fmt: skip


def recurrence_backward(dy, y, dz, dh_n, dh0, w_hh, counters, steps: Steps, relu: bool):
    """One layer, every direction in one launch: dz[rows] = (dy + dh) * act'(y),
    dh = dz @ W_hh, through time in reverse order of processing; dh0 receives the
    gradient of the initial state.  dy, y, dz: [N, D*H], one row stride; dh_n, dh0:
    [D, B, H]; w_hh: D tensors [H, H]."""
    if steps.batch == 0:
        return
    if steps.steps == 0:
        dh0.copy_(dh_n)
        return
    assert dy.stride(0) == y.stride(0) == dz.stride(0), "dy, y and dz share one row stride"
    pointers = (dy, y, dz, dh_n, dh0, *_both(w_hh), *steps.tables(dz))
    scalars = (y.stride(0), steps.steps, steps.batch, w_hh[0].shape[0])
    kernel_pair = (kernels.rnn_backward_persistent_kernel, kernels.rnn_backward_cooperative_kernel)
    state_shape = (steps.batch, w_hh[0].shape[0])
    _launch(kernel_pair, steps, w_hh, counters, state_shape, pointers, scalars, relu)


def previous_rows(steps: Steps, reverse: bool) -> Tensor:  # [N] int64
    """Packed input: where each row's h_prev lives in cat([y, h0]), a y row or N + b."""
    sizes = steps.batch_sizes
    step_of_row = torch.repeat_interleave(torch.arange(steps.steps, device=sizes.device), sizes)
    index_in_step = torch.arange(steps.rows, device=sizes.device) - steps.offsets[step_of_row]
    from_h0 = steps.rows + index_in_step
    if not reverse:
        prev_step = (step_of_row - 1).clamp(min=0)
        return torch.where(step_of_row > 0, steps.offsets[prev_step] + index_in_step, from_h0)
    next_step = (step_of_row + 1).clamp(max=steps.steps - 1)
    next_size = torch.where(step_of_row + 1 < steps.steps, sizes[next_step], 0)
    return torch.where(index_in_step < next_size, steps.offsets[next_step] + index_in_step, from_h0)


def recurrent_weight_grad(dz, y, h0, steps: Steps, reverse: bool) -> Tensor:  # [H, H]
    """dW_hh = dZ^T H_prev, H_prev holding each row's previous state (h0 None: zeros)."""
    hidden = dz.shape[1]
    if steps.padded and steps.steps > 0:
        # H_prev is y shifted by one step, plus h0 for the first step processed.
        batch, carried = steps.batch, steps.rows - steps.batch
        dz_carried = dz[:carried] if reverse else dz[batch:]
        y_prev = y[batch:] if reverse else y[:carried]
        grad = dz_carried.t() @ y_prev
        if h0 is not None:
            grad.addmm_((dz[carried:] if reverse else dz[:batch]).t(), h0)
        return grad
    if steps.steps == 0:
        return dz.new_zeros(hidden, hidden)
    h0 = h0 if h0 is not None else dz.new_zeros(steps.batch, hidden)
    h_prev = torch.cat([y, h0]).index_select(0, previous_rows(steps, reverse))
    return dz.t() @ h_prev


def layer_cells(weights: list[Tensor], layer: int, directions: int, per_cell: int):
    """(slice of the layer's cells in h0 / h_n order, [w_ih, w_hh(, b_ih, b_hh)] of each)."""
    cells = slice(layer * directions, (layer + 1) * directions)
    return cells, [
        weights[c * per_cell : (c + 1) * per_cell] for c in range(cells.start, cells.stop)
    ]


def input_projections(layer_input: Tensor, layer_weights) -> Tensor:  # [D, N, H]
    """layer_input @ W_ih^T + b_ih for each direction (b_hh joins the recurrence kernel);
    one direction: [N, H], the same memory, from a GEMM that allocates it."""
    if len(layer_weights) == 1:
        w_ih, _, *biases = layer_weights[0]
        if biases:
            return torch.addmm(biases[0], layer_input, w_ih.t())
        return torch.mm(layer_input, w_ih.t())
    hidden = layer_weights[0][1].shape[0]
    xp = layer_input.new_empty((len(layer_weights), layer_input.shape[0], hidden))
    for d, (w_ih, _, *biases) in enumerate(layer_weights):
        if biases:
            torch.addmm(biases[0], layer_input, w_ih.t(), out=xp[d])
        else:
            torch.mm(layer_input, w_ih.t(), out=xp[d])
    return xp


def rnn_forward_triton(input, hx, weights, batch_sizes, num_layers, bidirectional, relu):
    """fastrnn::rnn_forward on Triton: (output, h_n, layer_outputs); hx None: zeros."""
    directions = 2 if bidirectional else 1
    hidden = weights[1].shape[0]
    batch = hx.shape[1] if hx is not None else input.shape[1]
    steps = make_steps(input, batch_sizes, batch)
    per_cell = len(weights) // (num_layers * directions)
    out_shape = (*input.shape[:-1], directions * hidden)
    output = input.new_empty(out_shape)
    layer_outputs = input.new_empty((num_layers - 1, *out_shape))
    h_n = input.new_empty((num_layers * directions, batch, hidden))
    h0 = hx.contiguous() if hx is not None else None
    layer_input = input.reshape(steps.rows, input.shape[-1])
    counters = barrier_counters(weights, num_layers * directions)
    for layer in range(num_layers):
        target = output if layer == num_layers - 1 else layer_outputs[layer]
        y_all = target.view(steps.rows, directions * hidden)
        cells, layer_weights = layer_cells(weights, layer, directions, per_cell)
        block_i = input_block(steps, weights[1], layer_input.shape[1], directions)
        xp, projection = None, None
        if block_i:  # the recurrence kernel projects the input: no separate GEMM
            projection = (
                layer_input if layer_input.stride(1) == 1 else layer_input.contiguous(),
                [w[0].contiguous() for w in layer_weights],
                [w[2].contiguous() for w in layer_weights] if per_cell == 4 else None,
                block_i,
            )
        else:
            xp = input_projections(layer_input, layer_weights)
        recurrence_forward(
            xp,
            [w[3].contiguous() for w in layer_weights] if per_cell == 4 else None,
            y_all,
            h0[cells] if h0 is not None else None,
            h_n[cells],
            [w[1].contiguous() for w in layer_weights],
            counters[cells] if counters is not None else None,
            steps,
            relu,
            projection,
        )
        layer_input = y_all
    return output, h_n, layer_outputs


def rnn_backward_triton(
    grad_output, grad_h_n, input, hx, weights, batch_sizes, output, layer_outputs,
    num_layers, bidirectional, relu, need_input_grad,
):  # fmt: skip
    """fastrnn::rnn_backward on Triton: (grad_input, grad_hx, grad_weights); grad_hx is
    [0] when hx is None (zeros are no input)."""
    directions = 2 if bidirectional else 1
    hidden = weights[1].shape[0]
    steps = make_steps(input, batch_sizes, grad_h_n.shape[1])
    per_cell = len(weights) // (num_layers * directions)
    x = input.reshape(steps.rows, input.shape[-1])
    h0 = hx.contiguous() if hx is not None else None
    grad_hn = grad_h_n.contiguous()
    grad_hx = torch.empty_like(grad_hn)
    grad_weights: list[Tensor] = [None] * len(weights)  # each filled below
    grad_y = grad_output.reshape(steps.rows, directions * hidden).contiguous()
    dz = x.new_empty((steps.rows, directions * hidden))  # laid out as the layer's output
    counters = barrier_counters(weights, num_layers * directions)
    for layer in reversed(range(num_layers)):
        layer_in = x if layer == 0 else layer_outputs[layer - 1].reshape(steps.rows, -1)
        saved = output if layer == num_layers - 1 else layer_outputs[layer]
        y_all = saved.reshape(steps.rows, directions * hidden)
        cells, layer_weights = layer_cells(weights, layer, directions, per_cell)
        w_hh = [w[1].contiguous() for w in layer_weights]
        counter = counters[cells] if counters is not None else None
        recurrence_backward(grad_y, y_all, dz, grad_hn[cells], grad_hx[cells], w_hh, counter,
                            steps, relu)  # fmt: skip
        # Layer 0's input gradient is one more GEMM; skipped when nothing needs it.
        need_below = layer > 0 or need_input_grad
        grad_below = None
        # Per direction: gradients of distinct parameters must not share storage.
        for d, (w_ih, *_) in enumerate(layer_weights):
            cell = cells.start + d
            dz_cell = dz[:, d * hidden : (d + 1) * hidden]  # [N, H], row stride D*H
            base = cell * per_cell
            grad_weights[base] = dz_cell.t() @ layer_in
            grad_weights[base + 1] = recurrent_weight_grad(
                dz_cell, y_all[:, d * hidden : (d + 1) * hidden],
                h0[cell] if h0 is not None else None, steps, d == 1,
            )  # fmt: skip
            if per_cell == 4:
                grad_weights[base + 2] = dz_cell.sum(0)  # accumulates in fp32 for fp16/bf16
                grad_weights[base + 3] = grad_weights[base + 2].clone()
            if need_below:
                if grad_below is None:
                    grad_below = dz_cell @ w_ih
                else:
                    grad_below.addmm_(dz_cell, w_ih)
        grad_y = grad_below
    grad_input = grad_y.reshape(input.shape) if need_input_grad else input.new_empty(0)
    return grad_input, grad_hx if hx is not None else grad_hn.new_empty(0), grad_weights
