"""Launch functions: the whole multi-layer RNN forward / backward on the kernels of
kernels.py, with the signatures of the fastrnn::rnn_forward / rnn_backward ops whose CUDA
kernels they are (registration.py).  The GEMMs outside the recurrence are torch ops
(cuBLAS on a GPU) or, for fp32 on TF32, kernels.gemm_tf32_kernel (gemm, TF32_GEMMS),
except where a short sequence's kernels do them (input_block, weight_grads_rows).
Everything a layer's kernel launch takes besides its tensors (tier, grid, integer
arguments, constexprs) is worked out once per layer shape and kept (forward_launch,
backward_launch), since at small shapes a call's host time is its cost.

Nothing here copies between host and device for padded input, so a forward and backward
on CUDA tensors can be captured in a CUDA graph; nothing waits for the device either, for
packed input too (its tables go to the device in one asynchronous copy).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import sys
import threading
import types
from typing import NamedTuple

import torch
import triton
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from triton import knobs

from fastrnn import _C
from fastrnn.triton import kernels

# Largest padded H of the persistent tier, per dtype.  Each compiles for sm_80 and sm_90
# within shared memory (python tools/cubin_report.py, which also shows spills); at
# fp16/bf16 H=256 it beat the cooperative tier's inference on an H200 and tied its
# training (docs/performance.md).  One-row programs go further (ONE_ROW_MAX_H).
MAX_PERSISTENT_H = {torch.float32: 128, torch.float64: 64, torch.float16: 256, torch.bfloat16: 256}
# Cooperative tier tiles (cooperative_block_n): up to padded H=512, 16 hidden columns
# per tile where each tile gets a program of its own (more programs share a step's work:
# faster than 32 at fp32 and fp16 H=256 and 512 on an H200), else 32 (fewer passes over
# h for a program of several tiles: at B=1024, H=256 faster than 16 and 64 on an H200);
# 64 above H=512 (docs/performance.md).  A program's W_hh columns held on chip where
# they fit (cooperative_shared_memory), else streamed from L2 COOP_BLOCK_K rows at a
# time: 64, in 4 parts (split_k), on which Triton 3.6 builds half the tensor-core
# instructions per row of K that 32 rows in 2 parts take (offline SASS,
# docs/performance.md; tools/gpu_tier_ab.py times 32).
COOP_BLOCK_N: int | None = None  # overrides cooperative_block_n (tools/gpu_tier_ab.py, tests)
COOP_BLOCK_K = 64
COOP_W_ON_CHIP = True  # tools/gpu_tier_ab.py turns it off to time the streamed kernels
# A cooperative program's product in K parts of at least 16 rows (tl.dot), independent
# chains of tensor-core instructions (kernels.py; offline SASS in docs/performance.md).
COOP_SPLIT_K = 4
COOP_NUM_WARPS = 4  # tools/gpu_tier_ab.py times 8
# A forward cooperative program with one tile (as many programs as tiles) runs its tile
# loop pipelined, as with several tiles: on an H200 1-3% faster than unpipelined at fp32
# medium and bi2L and fp16 fastrnns and wide, in 7 of 8 timings, though unpipelined
# builds take 4-16% fewer SASS instructions a step and 16-48 KB less shared memory
# (docs/performance.md).  False: unpipelined (tools/gpu_tier_ab.py times both).
COOP_PIPELINE_ONE_TILE = True
# fp32 tf32x3 on streamed W_hh multiplies W_hh's TF32 parts split once per launch into a
# workspace (kernels._store_low_parts): 27-46% fewer instructions a chunk than Triton's
# split at every chunk, for twice W_hh's bytes from L2 a step (offline SASS,
# docs/performance.md).  False: Triton's split (tools/gpu_tier_ab.py times both).
COOP_W_LOW_PARTS = True
# fp32 under nn.RNN's TF32 flag multiplies W_hh in plain TF32, not tf32x3, where tf32x3's
# would stream: on an H200 25-41% off large, H2048 and 1000 steps at H=1024, inference
# and training, at 1.3-1.8x cuDNN's error against fp64 with Triton's truncated operands
# (rounded since: kernels._tf32_operand), no drift over 1000 steps (docs/performance.md).
# On chip tf32x3 stays: plain TF32 took up to 2.2x cuDNN's error there (wide) for 0-20%.
# False: tf32x3 (tools/gpu_tier_ab.py times both: option "x3").
COOP_STREAMED_TF32 = True
# Where the batch has at least COOP_STREAMED_TF32_MIN_BATCH rows: at B=64 (H=1024) its
# error was within twice cuDNN's (a GPU test), at B=1 six times cuDNN's (4.8e-4 against
# 8.1e-5); batches between were not measured.
COOP_STREAMED_TF32_MIN_BATCH = 64
# The cooperative tier's programs exchange the state (forward h_t, backward dz_t) as fp32
# values tagged with their step in one 64-bit word, and read a step's when its tags show
# (kernels._load_tagged): no grid barrier a step, whose fence and two atomic round trips
# cost ~1 us a step on an H200, for twice the bytes of the exchange.  Where the state is
# fp32 (not fp64, which fills the word), and not with W_LOW_PARTS, whose parts all
# programs write before the first product, behind a barrier.  False: the grid barrier
# (tools/gpu_tier_ab.py times both).
COOP_TAGGED_EXCHANGE = False
# Warps of a persistent program at the larger tiles (plan); tools/gpu_tier_ab.py times 16.
PERSISTENT_NUM_WARPS = 8
# Batch rows per program: tl.dot needs at least 16.  A persistent program may instead
# take fewer rows and multiply with FMAs, where that [rows, H, H] product stays within
# FMA_PRODUCT_ELEMENTS (persistent_rows): a shorter step than tl.dot's, as measured on
# an H200 (docs/performance.md).
BLOCK_B = 16
FMA_PRODUCT_ELEMENTS = 8 * 64 * 64
# A one-row FMA program's threads each sum whole columns of its product: one warp per
# 32 padded columns, the sums in parts (kernels._product).  h's broadcast is then a
# step's one exchange through shared memory: 2 barriers a step where the plan's warps,
# splitting K, need 5-6 (offline SASS, docs/performance.md).  Only for the recurrence
# alone: a program that also projects its input or computes the weight gradients
# spills registers so (the offline build).  False: the plan's warps, one sum
# (tools/gpu_tier_ab.py times both).
FMA_WHOLE_COLUMNS = True
# A one-row program summing whole columns (FMA_WHOLE_COLUMNS) loads each step's input
# (forward xp, backward dy and y) this many steps before the step, on padded input (1 or
# 4): one step ahead, each step waited within itself for a load from L2 (offline SASS,
# docs/performance.md).  Not on packed input, whose loads first wait for the step's
# table loads, nor on programs of more rows, whose fp16 builds spill kilobytes so.  GPU
# speed unmeasured; "ahead1": one step ahead (tools/gpu_tier_ab.py times both).
PERSISTENT_STEPS_AHEAD = 4
# A one-row program summing whole columns holds its thread's column of W_hh^T (the
# backward's: of W_hh) in fp32 registers, so it needs neither W_hh in shared memory nor
# a grid barrier: up to padded H=256 (8 warps of 255 registers, told ptxas it may take
# them; 24 values reloaded from local memory a step, Triton 3.6 sm_90), past
# FMA_PRODUCT_ELEMENTS and fp32's MAX_PERSISTENT_H.  Where every batch row of a layer
# gets a program of its own (B x D within the SMs), fp32, fp16 and bf16 run them there
# (one_row_plan), in place of the cooperative tier, whose barrier cost ~1 us a step, or
# fp16's 16-row programs, which read all of W_hh from shared memory a step (offline
# SASS, docs/performance.md).  GPU speed unmeasured; "onerow128": no such programs past
# padded H=128, as before (tools/gpu_tier_ab.py times both).
ONE_ROW_MAX_H = 256
ONE_ROW_REGISTERS = 255
# Such a backward program past fma_rows' bound in fp32 spills the dy and y it loads for
# the next step as the loads issue, so every step waits for L2 (Triton 3.6 and 3.9,
# sm_90: load cover 0.04, docs/performance.md).  With ONE_ROW_PREFETCH it first
# prefetches the step after's into L1 (kernels._prefetch; one_row_prefetch), so that
# the wait is L1's.  GPU speed unmeasured; "noprefetch": none (tools/gpu_tier_ab.py
# times both).
ONE_ROW_PREFETCH = True
# A persistent program's tl.dot on 16 rows with fp32 IEEE products, which Triton builds
# of FMAs, runs over K in this many parts at padded H=128 (dot_parts): as one product the
# forward keeps 32 registers a thread and spills over 3 KB (Triton 3.6 and 3.9, sm_80
# and sm_90), in four parts neither direction spills and a step's longest FMA chain is a
# quarter as deep (tools/sass_report.py, docs/performance.md).  1: one product
# (tools/gpu_tier_ab.py times both).
IEEE_DOT_PARTS = 4
# A short sequence's call is host-bound, and the input projection's GEMM is a large part
# of its host time: up to PROJECT_INPUT_MAX_STEPS steps the persistent forward projects
# each step's input itself, on FMA programs whose [rows, I, H] product is within
# PROJECT_INPUT_ELEMENTS (input_block; docs/performance.md).
PROJECT_INPUT_MAX_STEPS = 32
PROJECT_INPUT_ELEMENTS = 64 * 128
# Likewise the backward of up to WEIGHT_GRADS_MAX_STEPS steps and WEIGHT_GRADS_MAX_BATCH
# batch rows runs one program per direction, which also computes the layer's weight
# gradients (weight_grads_rows), and for one direction the input gradient: no GEMMs,
# reduction or copy after the recurrence.  One program does the GEMMs' work, so at most
# WEIGHT_GRADS_ELEMENTS multiply-adds of it.
WEIGHT_GRADS_MAX_STEPS = 32
WEIGHT_GRADS_MAX_BATCH = 2 * BLOCK_B
WEIGHT_GRADS_ELEMENTS = 1 << 22
# fp32 GEMMs outside the recurrence (input projections, weight and input gradients) on
# TF32 tensor cores where nn.RNN's flag allows TF32 (tf32_gemms), as cuDNN's run under
# it: on kernels.gemm_tf32_kernel, whose precision is its own, since cuBLAS's TF32
# follows torch's global matmul flag, which one call cannot set for itself alone.  On an
# H200 faster than cuBLAS in IEEE fp32 at every timed fp32 shape, inference and
# training, at cuDNN's own error (docs/performance.md).  None: on a GPU (the
# interpreter, whose tests check fp32 accuracy, keeps torch's GEMMs unless one asks);
# False: cuBLAS in IEEE fp32 (tools/gpu_tier_ab.py times both).
TF32_GEMMS: bool | None = None
# With TF32_GEMMS, the weight gradients' GEMMs too (K the batch's rows; both operands
# stored along M or N, which TF32 tensor cores cannot read as they are).
TF32_WEIGHT_GRAD_GEMMS = True
# A GEMM with a side under GEMM_TF32_MIN_SIDE (tl.dot's least) stays on torch's in IEEE
# fp32: at H=1 cuDNN's own error under the TF32 flag was IEEE fp32's, which TF32
# products exceeded 12-fold (a GPU test, docs/performance.md).
GEMM_TF32_MIN_SIDE = 16
# So does a GEMM of fewer multiply-adds than GEMM_TF32_MIN_WORK, for which TF32 saves
# microseconds at most: at fp32 long-B1 (T=1000, B=1, I=64, H=128) cuDNN's error under
# the TF32 flag was IEEE fp32's (8e-6) and fastrnn's with a TF32 input projection
# (1000 x 128 x 64) 6.7e-4, where at small (3,200 x 128 x 64) both were TF32's (an H200,
# docs/performance.md).
GEMM_TF32_MIN_WORK = 1 << 24
# The GEMM's tiles: up to 128 x 128 (gemm_tile), K 32 rows a block, 3 blocks in flight
# (96 KB of shared memory at the largest tile on sm_90: python tools/cubin_report.py),
# GEMM_GROUP_M rows of tiles at a time.  Where the tiles are fewer than the SMs, K is
# split (gemm_splits) into parts of at least GEMM_MIN_SPLIT_K rows.
GEMM_BLOCK = 128
GEMM_BLOCK_K = 32
GEMM_STAGES = 3
GEMM_GROUP_M = 8
GEMM_MIN_SPLIT_K = 256
# SMs the interpreter's GEMM splits K for: a few, so that small tests split it too.
GEMM_INTERPRETER_SMS = 4
# The TF32 GEMM loads an operand stored along K 16 bytes at a time and any other 4 bytes
# at a time (TF32 tensor cores read K-major operands only; docs/performance.md): the
# weight gradients' (dZ^T, x) and the input gradient's W_ih.  With GEMM_K_MAJOR such an
# operand of a GEMM of at least GEMM_K_MAJOR_WORK multiply-adds is first copied along K
# (one transpose).  Off: on an H200 it took 5-7% off large and H2048 training and added
# 13-16% to fastrnns, bi2L and bigbatch training (docs/performance.md; option "kmajor").
GEMM_K_MAJOR = False
GEMM_K_MAJOR_WORK = 1 << 28

ACC_DTYPE = {
    torch.float64: triton.language.float64,
    torch.float32: triton.language.float32,
    torch.float16: triton.language.float32,
    torch.bfloat16: triton.language.float32,
}
STATE_DTYPE = {torch.float64: torch.float64}  # else float32
# Compile options of every kernel.  Products and sums contracted to FMAs: Triton's default
# through 3.9, which warns that 3.10 turns it off; the kernels were built and timed so.
COMPILE_OPTIONS = {"enable_fp_fusion": True}

# A padded call of the ops whose launches are kept kernels' and whose ATen ops a replay
# can redo (_replayable_op) is recorded once per call signature (recorded) and then
# replayed by the ops' C++ kernels (csrc/python/triton_op_kernels.cpp,
# launch_replay.cpp): its allocations, launches and ops with no Python between them; the
# launch functions here are the Python path.  Plans are recorded under the settings of
# their first call (a setting changed drops them: apply_settings).  Off: unmeasured on a
# GPU (option "replay"; docs/performance.md, "Replayed launches" and "Replayed ATen ops").
REPLAY_LAUNCHES = False
# Tests set these: the tier regardless of H, and the cooperative grid's size.
FORCE_TIER: str | None = None
FORCE_PROGRAMS: int | None = None
# tools/gpu_tier_ab.py sets this: fp32 tl.dot products in this precision whatever the
# TF32 flag ("tf32": plain TF32, timed against cuDNN's own error); None: dot_precision.
FP32_DOT_PRECISION: str | None = None
# Variants of the plan that tests and tools/gpu_tier_ab.py run, named "<tier>-<option>"
# (tier "fastrnn": the plan's; options may be left out or several): the settings above
# that each option changes; a number as option sets the cooperative tile width.
VARIANT_OPTIONS = {
    "dot": {"FMA_PRODUCT_ELEMENTS": 0, "ONE_ROW_MAX_H": 0},  # tl.dot on 16 rows, no FMAs
    "onesum": {"FMA_WHOLE_COLUMNS": False},  # one-row programs on the plan's warps
    "ahead1": {"PERSISTENT_STEPS_AHEAD": 1},  # one-row programs' inputs a step ahead
    "onerow128": {"ONE_ROW_MAX_H": 128},  # one-row programs up to padded H=128
    "noprefetch": {"ONE_ROW_PREFETCH": False},  # no one-row backward prefetches
    "wholedot": {"IEEE_DOT_PARTS": 1},  # fp32 IEEE tl.dot of 16 rows in one K part
    "xp": {"PROJECT_INPUT_MAX_STEPS": 0},  # input projections from a GEMM
    "project128": {"PROJECT_INPUT_MAX_STEPS": 128},  # in the kernel up to 128 steps
    "gemm": {"WEIGHT_GRADS_MAX_STEPS": 0},  # weight gradients from GEMMs
    "streamed": {"COOP_W_ON_CHIP": False},  # W_hh's columns streamed where they would fit
    "unsplit": {"COOP_SPLIT_K": 1},  # cooperative products in one K part
    "w8": {"COOP_NUM_WARPS": 8},
    "unpipelined": {"COOP_PIPELINE_ONE_TILE": False},  # a forward program's one tile
    "chunksplit": {"COOP_W_LOW_PARTS": False},  # streamed W_hh split by Triton each chunk
    "x3": {"COOP_STREAMED_TF32": False},  # streamed W_hh's fp32 products in tf32x3
    "pw16": {"PERSISTENT_NUM_WARPS": 16},  # persistent programs at the larger tiles
    "k32": {"COOP_BLOCK_K": 32},  # streamed W_hh 32 rows a chunk
    "tagged": {"COOP_TAGGED_EXCHANGE": True},  # the cooperative state tagged, no barrier
    "tf32": {"FP32_DOT_PRECISION": "tf32"},  # fp32 tensor-core products in plain TF32
    "tritongemm": {"TF32_GEMMS": True},  # fp32 GEMMs on TF32 (kernels.gemm_tf32_kernel)
    "cublas": {"TF32_GEMMS": False},  # fp32 GEMMs on torch's (cuBLAS), as its flag says
    "wgieee": {"TF32_WEIGHT_GRAD_GEMMS": False},  # but the weight gradients' on cuBLAS
    "gk64": {"GEMM_BLOCK_K": 64},  # that GEMM 64 rows of K a block
    "gs4": {"GEMM_STAGES": 4},  # 4 blocks in flight
    "nosplit": {"GEMM_MIN_SPLIT_K": 1 << 62},  # K never split
    "kmajor": {"GEMM_K_MAJOR": True},  # operands copied along K first
    "anywork": {"GEMM_TF32_MIN_WORK": 0},  # TF32 GEMMs however few their multiply-adds
    "replay": {"REPLAY_LAUNCHES": True},  # a padded call's launches and ops from C++
}


# Every setting a variant may change, at its default.
VARIANT_DEFAULTS = {
    setting: globals()[setting]
    for option in [{"FORCE_TIER": None, "COOP_BLOCK_N": None}, *VARIANT_OPTIONS.values()]
    for setting in option
}


def variant_settings(name: str | None) -> dict:
    """{setting: value} of variant `name`, "<tier>-<option>-<option>..." (VARIANT_OPTIONS;
    None: the plan's own) for every setting in VARIANT_DEFAULTS, so that setting them all
    undoes any other variant."""
    tier, *options = (name or "").split("-")
    settings = {**VARIANT_DEFAULTS, "FORCE_TIER": None if tier in ("", "fastrnn") else tier}
    for option in options:
        if option.isdigit():
            settings["COOP_BLOCK_N"] = int(option)
        else:
            settings.update(VARIANT_OPTIONS[option])
    return settings


def apply_settings(settings: dict) -> None:
    """Sets these settings (variant_settings), dropping the replayed launches' plans,
    recorded under the old ones, where any that a plan depends on changes."""
    if any(globals().get(setting) != value for setting, value in settings.items()
           if setting != "REPLAY_LAUNCHES"):  # fmt: skip
        _C.clear_launch_plans()
    globals().update(settings)


class _SettingsModule(types.ModuleType):
    """This module, whose settings (upper-case names) assigned from outside, as tests
    and tools do (`launch.FORCE_TIER = ...`, monkeypatch.setattr), go through
    apply_settings: no plan recorded under a setting's old value is replayed."""

    def __setattr__(self, name: str, value) -> None:
        if name.isupper() and not name.startswith("_"):
            apply_settings({name: value})
        else:
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _SettingsModule


# On a GPU each kernel is launched from its compiled form, kept per specialisation
# (launch_kernel); False: every launch goes through JITFunction.run, as the tools' A/B
# runs time it.
DIRECT_LAUNCH = True
_COMPILED: dict[tuple, tuple] = {}
# forward_launch / backward_launch entries kept: one per layer shape a program runs.
LAUNCHES_CACHED = 1024


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
    tensor_core_dots: bool = True  # the device's (device_tensor_core_dots)
    dot_rows: bool = True  # persistent: programs of BLOCK_B rows on tl.dot fit the device
    one_row: bool = False  # persistent: one-row programs past fma_rows' bound (one_row_plan)


def persistent_shared_memory(block_h: int, dtype: torch.dtype, precision: str,
                             block_i: int = 0, weight_grads: bool = False,
                             tensor_core_dots: bool = True) -> int:  # fmt: skip
    """Bytes of shared memory a persistent-tier kernel needs at most: W_hh (twice for
    tf32x3, its high and low parts; in fp32 where tl.dot is built from FMAs, see
    device_tensor_core_dots), two [BLOCK_B, block_h] operand tiles (Triton 3.6
    stages two for the backward's IEEE tl.dot), 1 KB of Triton's own scratch; for a
    forward projecting an input of block_i (padded) features a [block_i, block_h]
    accumulator-precision reduction scratch; for a backward computing the weight
    gradients, operand tiles of up to WEIGHT_GRADS_MAX_BATCH rows and two tiles of its
    [block_h + 16, 16] operands.  An upper bound of what Triton (3.6 and 3.9) allocates;
    tools/cubin_report.py checks it on every kernel."""
    element = dtype.itemsize
    w_element = element if tensor_core_dots else max(element, 4)
    copies = 2 if precision == "tf32x3" else 1
    rows = WEIGHT_GRADS_MAX_BATCH if weight_grads else BLOCK_B
    recurrence = copies * (block_h * block_h * w_element + 2 * rows * block_h * max(element, 4))
    gradients = 2 * (block_h + 16) * 16 * max(element, 4) if weight_grads else 0
    return recurrence + block_i * block_h * max(element, 4) + gradients + 1024


def cooperative_shared_memory(block_h: int, dtype: torch.dtype, precision: str,
                              block_n: int, parts: int) -> int:  # fmt: skip
    """Bytes of shared memory a cooperative-tier kernel needs at most with its W_hh
    columns on chip: [block_h, block_n] of W_hh and two [BLOCK_B, block_h] operand
    tiles (all twice for tf32x3), the [parts, BLOCK_B, block_n] accumulator-precision
    products of its K parts (split_k; summed across warps, Triton 3.6 stages them) and
    8 KB of Triton's own scratch; checked as above."""
    element = dtype.itemsize
    copies = 2 if precision == "tf32x3" else 1
    per_row = block_n * element + 2 * BLOCK_B * max(element, 4)
    products = parts * BLOCK_B * block_n * max(element, 4)
    return copies * block_h * per_row + products + 8192


@functools.cache
def plan(hidden: int, dtype: torch.dtype, precision: str = "ieee",
         shared_memory: int | None = None, force_tier: str | None = None,
         block_n: int | None = None, cooperative_warps: int = COOP_NUM_WARPS,
         most_parts: int = COOP_SPLIT_K, tensor_core_dots: bool = True,
         persistent_warps: int = PERSISTENT_NUM_WARPS,
         streamed_tf32: bool = False) -> Plan:  # fmt: skip
    """The persistent tier up to MAX_PERSISTENT_H where its kernel fits shared_memory
    (bytes per block; None: no limit, as in the interpreter) on a device with or
    without tensor_core_dots, on persistent_warps warps at the larger tiles; else the
    cooperative one on cooperative_warps warps with block_n-column tiles (None: chosen
    by H, see COOP_BLOCK_N), their W_hh columns on chip where they fit with products in
    at most most_parts K parts (split_k).  Without tensor_core_dots the persistent tier
    may fit on FMA rows only (dot_rows False), whose broadcast products stage no dot
    operand.  With streamed_tf32, tf32x3 products where tf32x3's W_hh would stream run in
    plain TF32 (COOP_STREAMED_TF32)."""
    block_h = _block(hidden)

    def fits(needed: int) -> bool:
        return shared_memory is None or needed <= shared_memory

    dot_rows = fits(persistent_shared_memory(block_h, dtype, precision,
                                             tensor_core_dots=tensor_core_dots))  # fmt: skip
    fma_rows_only = fma_rows(1, block_h) and fits(persistent_shared_memory(block_h, dtype,
                                                                           precision))  # fmt: skip
    persistent = block_h <= MAX_PERSISTENT_H[dtype] and (dot_rows or fma_rows_only)
    tier = force_tier or ("persistent" if persistent else "cooperative")
    if tier == "persistent":
        # persistent_warps (8) at the larger tiles, the configuration measured on a GPU
        # (docs/performance.md).  One-row programs take their own (persistent_program).
        wide = block_h >= 128 or (dtype == torch.float32 and block_h == 64)
        return Plan("persistent", block_h, persistent_warps if wide else 4, precision,
                    tensor_core_dots=tensor_core_dots, dot_rows=dot_rows)  # fmt: skip
    block_n = block_n or cooperative_block_n(hidden)
    parts = split_k(dtype, precision, block_h, most_parts, tensor_core_dots)
    on_chip = fits(cooperative_shared_memory(block_h, dtype, precision, block_n, parts))
    if streamed_tf32 and precision == "tf32x3" and not on_chip:
        precision = "tf32"  # one copy of W_hh: on chip where that fits
        on_chip = fits(cooperative_shared_memory(block_h, dtype, precision, block_n, parts))
    return Plan("cooperative", block_h, cooperative_warps, precision, block_n, on_chip,
                tensor_core_dots)  # fmt: skip


def cooperative_block_n(hidden: int, batch: int | None = None,
                        programs: int | None = None) -> int:  # fmt: skip
    """Hidden columns of a cooperative tile (COOP_BLOCK_N): 64 above padded H=512; up to
    it 16, or 32 where `batch`'s 16-column tiles would outnumber the `programs` of a
    direction (None: no bound), so that each program would take several."""
    if _block(hidden) > 512:
        return 64
    if batch is not None and programs is not None:
        if _cdiv(batch, BLOCK_B) * _cdiv(hidden, 16) > programs:
            return 32
    return 16


def w_low_parts(precision: str, on_chip: bool, enabled: bool | None = None) -> bool:
    """Whether a cooperative kernel multiplies W_hh's TF32 parts split once into a
    workspace (its W_LOW_PARTS; KernelLaunch.cooperative_arguments): tf32x3 on streamed
    W_hh, where enabled (None: COOP_W_LOW_PARTS)."""
    enabled = COOP_W_LOW_PARTS if enabled is None else enabled
    return enabled and precision == "tf32x3" and not on_chip


def split_k(dtype: torch.dtype, precision: str, block_h: int, most: int | None = None,
            tensor_core_dots: bool = True) -> int:  # fmt: skip
    """K parts (at most `most`, None: COOP_SPLIT_K) of a cooperative program's product
    with W_hh's columns on chip (block_h: the padded H) or streamed (0: BLOCK_K rows at
    a time); 1 for FMA products: fp32 IEEE, and on chip on a device without
    tensor_core_dots (there in parts the fp16/bf16/fp64 builds spill up to 4 KB a
    thread and in one none; streamed, one part spills more: docs/performance.md)."""
    if (dtype == torch.float32 and precision == "ieee") or (block_h and not tensor_core_dots):
        return 1
    return min(COOP_SPLIT_K if most is None else most, (block_h or COOP_BLOCK_K) // 16)


def interpreting(device: torch.device) -> bool:
    return device.type == "cpu"  # CPU tensors reach these kernels only interpreted


def runs_ptx(device: torch.device) -> bool:
    """Whether kernels on device may hold inline PTX: an NVIDIA GPU's (not the
    interpreter's, nor a ROCm build's)."""
    return not interpreting(device) and torch.version.hip is None


@functools.cache
def device_shared_memory(device: torch.device) -> int | None:
    """Shared memory a block may opt in to on a CUDA device (None: the interpreter)."""
    if interpreting(device):
        return None
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


TENSOR_CORE_DOTS_MAJOR = 8  # compute capability (major) of device_tensor_core_dots


@functools.cache
def device_tensor_core_dots(device: torch.device) -> bool:
    """Whether Triton builds tl.dot on a CUDA device's tensor cores: from compute
    capability 8.0.  Below (V100, T4) it builds every dtype's from FMAs, with W_hh
    staged in shared memory as fp32: twice the bytes at fp16 (offline builds for sm_70
    and sm_75, Triton 3.6 and 3.9; docs/performance.md).  True in the interpreter."""
    if interpreting(device):
        return True
    return device_major(device) >= TENSOR_CORE_DOTS_MAJOR


@functools.cache
def device_major(device: torch.device) -> int:  # a CUDA device's compute capability, major
    return torch.cuda.get_device_capability(device)[0]


@functools.cache
def device_sms(device: torch.device) -> int:  # a CUDA device's streaming multiprocessors
    return torch.cuda.get_device_properties(device).multi_processor_count


def fma_rows(rows: int, block_h: int) -> bool:
    """Whether a persistent program of `rows` batch rows, whatever it computes besides
    the recurrence, multiplies with FMAs: fewer than BLOCK_B rows, and its [rows, H, H]
    product within FMA_PRODUCT_ELEMENTS."""
    return rows < BLOCK_B and rows * block_h * block_h <= FMA_PRODUCT_ELEMENTS


def persistent_rows(batch: int, block_h: int, programs: int | None = None) -> int:
    """Batch rows per persistent program: for FMA products the fewest (a power of two)
    that keep the grid within `programs` (one per SM; None: no limit), since a step's
    latency grows with a program's rows; BLOCK_B rows for tl.dot where that product
    would not fit registers."""
    rows = 1
    while programs is not None and rows < BLOCK_B and _cdiv(batch, rows) > programs:
        rows *= 2
    return rows if fma_rows(rows, block_h) else BLOCK_B


def persistent_program(p: Plan, rows: int, recurrence_only: bool = True,
                       padded: bool = True) -> dict:  # fmt: skip
    """The warps, sums, loads and launch options of a persistent program of `rows`
    batch rows: a one-row (FMA) program that runs the recurrence alone (no input
    projection or weight gradients; a one_row plan's) on threads summing whole columns
    (FMA_WHOLE_COLUMNS), on padded input loading its inputs PERSISTENT_STEPS_AHEAD
    steps ahead within fma_rows' bound (past it Triton 3.6 spills the slots as they
    load: offline SASS, docs/performance.md); else the plan's warps, one step ahead."""
    whole_columns = rows == 1 and recurrence_only and FMA_WHOLE_COLUMNS
    warps = max(1, p.block_h // 32) if whole_columns else p.num_warps
    slots = whole_columns and padded and fma_rows(rows, p.block_h)
    ahead = PERSISTENT_STEPS_AHEAD if slots else 1
    program = {"num_warps": warps, "SUM_IN_PARTS": whole_columns, "STEPS_AHEAD": ahead}
    if whole_columns and p.one_row:  # else ptxas gives fp32 128 and spills 1,336 bytes
        program["maxnreg"] = ONE_ROW_REGISTERS
    return program


def one_row_shared_memory(block_h: int, dtype: torch.dtype, in_quarters: bool) -> int:
    """Bytes of shared memory a one-row program summing whole columns takes at most:
    W_hh^T passes through it once as it loads (Triton's change of layout), a quarter at
    a time where in_quarters (one_row_in_quarters), all of it else; checked by
    tools/cubin_report.py."""
    return block_h * block_h * dtype.itemsize // (4 if in_quarters else 1) + 1024


# Compute capability (major) from which Triton stages a one-row forward's W_hh^T a
# quarter at a time where H is a multiple of 16 (sm_90 builds do; sm_80's stage all of
# it: tools/cubin_report.py, Triton 3.6).
ONE_ROW_QUARTERS_MAJOR = 9


def one_row_in_quarters(device: torch.device, hidden: int) -> bool:
    """Whether a one-row forward stages W_hh^T in quarters (one_row_shared_memory): H a
    multiple of 16 (W_hh's rows 16-byte aligned, as contiguous_weights makes its
    address: Triton specialises on both) on a device of ONE_ROW_QUARTERS_MAJOR."""
    return (
        hidden % 16 == 0
        and not interpreting(device)
        and device_major(device) >= ONE_ROW_QUARTERS_MAJOR
    )


def one_row_plan(p: Plan, dtype: torch.dtype, shared_memory: int | None,
                 in_quarters: bool) -> Plan | None:  # fmt: skip
    """Persistent plan p (plan()'s with the tier forced) with one-row programs summing
    whole columns alone (Plan.one_row; programs of more rows, where p has them, still
    compute a short sequence's weight gradients), where fma_rows' bound stops FMA
    programs, below ONE_ROW_MAX_H, with an fp32 state (fp64's column would not fit
    registers), within shared_memory (None: no limit; one_row_shared_memory); else
    None."""
    needed = one_row_shared_memory(p.block_h, dtype, in_quarters)
    fits = shared_memory is None or needed <= shared_memory
    if (
        fma_rows(1, p.block_h)
        or p.block_h > ONE_ROW_MAX_H
        or not FMA_WHOLE_COLUMNS
        or STATE_DTYPE.get(dtype, torch.float32) != torch.float32
        or not fits
    ):
        return None
    return dataclasses.replace(p, one_row=True)


def one_row_prefetch(dtype: torch.dtype, one_row: bool, padded: bool) -> bool:
    """Whether a persistent backward program prefetches its inputs (ONE_ROW_PREFETCH):
    a one_row plan's program summing whole columns, fp32, on padded input (a packed
    step's addresses wait for loads of their own)."""
    return ONE_ROW_PREFETCH and one_row and dtype == torch.float32 and padded


def dot_parts(dtype: torch.dtype, precision: str, block_h: int, rows: int) -> int:
    """K parts of a persistent program's tl.dot (kernels._product): IEEE_DOT_PARTS for
    fp32 IEEE products at padded H >= 128 on BLOCK_B rows, else one (a backward's 32
    weight-gradient rows too: in parts their packed builds spill more, Triton 3.6)."""
    fp32_fma = dtype == torch.float32 and precision == "ieee"
    return IEEE_DOT_PARTS if fp32_fma and block_h >= 128 and rows == BLOCK_B else 1


# ATen's fp32 precision of an operator family (the new flags' getter; None on a torch
# with the legacy flags only).
_FP32_PRECISION = getattr(torch._C, "_get_fp32_precision_getter", None)


def tf32_allowed() -> bool:
    """Whether nn.RNN may run fp32 on TF32 tensor cores: the flag its cuDNN call reads,
    ATen's allowTF32CuDNN(RNN), torch.backends.cudnn.rnn.fp32_precision == "tf32" (on a
    torch without it, torch.backends.cudnn.allow_tf32).  Not the legacy allow_tf32 where
    both exist: that one follows conv too, and raises once conv's and RNN's flags differ."""
    if _FP32_PRECISION is None:
        return torch.backends.cudnn.allow_tf32
    return _FP32_PRECISION("cuda", "rnn") == "tf32"


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 follows nn.RNN's flag on a GPU (tf32_allowed): tensor cores when cuDNN may
    use TF32, else IEEE FMA.  tf32x3 (three TF32 products), which a layer's plan makes
    plain TF32 where W_hh streams and the batch has COOP_STREAMED_TF32_MIN_BATCH rows
    (COOP_STREAMED_TF32, _plan): elsewhere plain TF32 took up to 2.2x cuDNN's error for
    little time, and at long-B1 (H=128) drifted to 1e-3 from fp64 where cuDNN stayed
    near 1e-5 (docs/performance.md)."""
    if dtype != torch.float32:
        return "ieee"
    if FP32_DOT_PRECISION is not None:
        return FP32_DOT_PRECISION
    return "tf32x3" if tf32_allowed() else "ieee"


def cooperative_programs(tiles: int, directions: int, device: torch.device) -> int:
    """Programs per direction of a cooperative grid: one per SM at most over all
    directions, so all are resident at once."""
    if FORCE_PROGRAMS is not None:
        return min(tiles, FORCE_PROGRAMS)
    programs = direction_programs(device, directions)
    # The interpreter runs programs one after another: a barrier needs one.
    return 1 if programs is None else min(tiles, programs)


def _specialization(pointers: tuple[Tensor, ...], scalars: tuple[int, ...]) -> tuple:
    """What Triton specialises runtime arguments on, or more: a tensor's dtype and 16-byte
    alignment; an integer's being 1, a multiple of 16 and its width."""
    return (
        *[p.dtype for p in pointers],
        *[p.data_ptr() & 15 == 0 for p in pointers],
        *[(s == 1, s & 15 == 0, s >> 31) for s in scalars],
    )


def _direct_launches() -> bool:
    """DIRECT_LAUNCH, and no launch hooks registered (a kept kernel's launch, or a
    replayed one, would bypass them)."""
    hooks = knobs.runtime
    return DIRECT_LAUNCH and not hooks.launch_enter_hook.calls and not hooks.launch_exit_hook.calls


def _launches_directly(kernel, tensor: Tensor) -> bool:
    """Whether kernel launches from its kept compiled form (launch_kernel): on a GPU,
    with _direct_launches, a plain JITFunction."""
    return (
        isinstance(kernel, triton.runtime.JITFunction)
        and not interpreting(tensor.device)
        and _direct_launches()
    )


class _Recording(threading.local):
    """A call's steps while recorded() records them, in its thread, in order: ("launch",
    kept, grid, pointers, scalars) of each kept kernel's launch, _JIT_LAUNCH for each
    launch through JITFunction.run, and its ATen work (_CallWork)."""

    steps: list | None = None


_JIT_LAUNCH = "jit"
_RECORDING = _Recording()


def _run_kept(kept: tuple, grid: tuple[int, int], pointers: tuple[Tensor | int, ...],
              scalars: tuple[int, ...]) -> None:  # fmt: skip
    """Launch a kept compiled kernel (keep_compiled); pointers: tensors, or their
    addresses."""
    if _RECORDING.steps is not None:
        _RECORDING.steps.append(("launch", kept, grid, pointers, scalars))
    _launch_kept(kept, grid, pointers, scalars)


def _launch_kept(kept: tuple, grid: tuple[int, int], pointers: tuple[Tensor | int, ...],
                 scalars: tuple[int, ...]) -> None:  # fmt: skip
    device, run, function, packed_metadata, constexprs, _ = kept
    stream = torch._C._cuda_getCurrentRawStream(device)
    run(grid[0], grid[1], 1, stream, function, packed_metadata, None, None, None,
        *pointers, *scalars, *constexprs)  # fmt: skip


# A replayed launch parameter's kind, as csrc/python/launch_replay.cpp codes it: an
# address, an integer of 4 or 8 bytes, a null pointer.
_POINTER, _INT32, _INT64, _NULL = 0, 1, 2, 3
_INTEGER_KINDS = {"i32": _INT32, "i64": _INT64, "u64": _INT64}


def replay_layout(compiled) -> tuple | None:
    """How a compiled kernel's launcher hands the driver its parameters, where a replay
    (launch_replay.cpp, cuLaunchKernelEx) can do the same: (threads, shared memory,
    whether the launch is cooperative, each argument's kind, or None for a constexpr,
    which is not passed; how many null scratch pointers follow: Triton's global and
    profile scratch).  None where the launcher does more: a clustered or PDL launch,
    scratch memory, over 228 KB of shared memory (an attribute in Triton 3.9), an
    argument of another type."""
    metadata = compiled.metadata
    if (
        getattr(metadata, "launch_pdl", False)
        or getattr(metadata, "num_ctas", 1) != 1
        or getattr(metadata, "global_scratch_size", 0)
        or getattr(metadata, "profile_scratch_size", 0)
        or metadata.shared > 228 * 1024
    ):
        return None
    kinds = []
    for kind in compiled.src.signature.values():
        if kind == "constexpr":
            kinds.append(None)
        elif isinstance(kind, str) and kind.startswith("*"):
            kinds.append(_POINTER)
        elif kind in _INTEGER_KINDS:
            kinds.append(_INTEGER_KINDS[kind])
        else:
            return None
    scratch = sum(hasattr(metadata, f"{s}_scratch_size") for s in ("global", "profile"))
    cooperative = bool(getattr(metadata, "launch_cooperative_grid", False))
    return 32 * metadata.num_warps, metadata.shared, cooperative, tuple(kinds), scratch


def keep_compiled(compiled, device: int, constexprs: list) -> tuple:
    """What launch_kernel keeps of a compiled kernel: its device, launcher, CUfunction,
    launch metadata, constexpr values (the launcher takes every parameter, constexprs too,
    and ignores their values) and replay_layout."""
    return (device, compiled.run, compiled.function, compiled.packed_metadata, constexprs,
            replay_layout(compiled))  # fmt: skip


def replay_launch(kept: tuple, grid: tuple[int, int], pointers: tuple[Tensor | int, ...],
                  scalars: tuple[int, ...]) -> tuple | None:  # fmt: skip
    """A recorded launch (_RECORDING) as _C.store_plan takes it: ("launch", CUfunction,
    grid, threads, shared memory, cooperative, ((kind, value), ...) of the parameters the
    launcher passes); None where replay_layout has none."""
    _, _, function, _, constexprs, layout = kept
    if layout is None:
        return None
    threads, shared, cooperative, kinds, scratch = layout
    addresses = [p if isinstance(p, int) else p.data_ptr() for p in pointers]
    arguments = (*addresses, *scalars, *constexprs)
    params = [(k, value) for k, value in zip(kinds, arguments, strict=True) if k is not None]
    params = (*params, *[(_NULL, 0)] * scratch)
    return "launch", function, grid[0], grid[1], threads, shared, cooperative, params


def _record_jit_launch() -> None:
    if _RECORDING.steps is not None:
        _RECORDING.steps.append(_JIT_LAUNCH)


def launch_kernel(kernel, grid: tuple[int, int], pointers: tuple[Tensor, ...],
                  scalars: tuple[int, ...], meta: dict) -> tuple | None:  # fmt: skip
    """kernel[grid](*pointers, *scalars, **meta): the kernel's tensor arguments, then its
    integer ones, in signature order; meta: its constexprs and launch options.  On a GPU
    the compiled kernel of each specialisation is kept and handed straight to its
    launcher, skipping the argument binding, cache-key building and option parsing that
    JITFunction.run does on every call (docs/performance.md).  The first launch of a
    specialisation, the interpreter, wrapped kernels and registered launch hooks take
    JITFunction.run.  Returns the kept kernel it launched or kept (None: none)."""
    if not _launches_directly(kernel, pointers[0]):
        _record_jit_launch()
        kernel[grid](*pointers, *scalars, **meta)
        return None
    device = torch.cuda.current_device()  # where Triton compiles and launches
    # id(kernel): kernels live as long as the module; a JITFunction's hash takes a lock.
    key = (id(kernel), device, *meta.items(), *_specialization(pointers, scalars))
    kept = _COMPILED.get(key)
    if kept is None:
        _record_jit_launch()
        compiled = kernel[grid](*pointers, *scalars, **meta)
        constexprs = [meta[name] for name in kernel.arg_names[len(pointers) + len(scalars) :]]
        kept = keep_compiled(compiled, device, constexprs)
        _COMPILED[key] = kept
        return kept
    _run_kept(kept, grid, pointers, scalars)
    return kept


@dataclasses.dataclass(eq=False)
class KernelLaunch:
    """One recurrence kernel's launch with everything but its tensors fixed by the call's
    shapes, dtypes and settings (forward_launch, backward_launch), so that a call
    computes none of it again."""

    kernel_name: str  # in kernels.py, looked up at launch (tests watch the kernels there)
    grid: tuple[int, int]
    scalars: tuple[int, ...]  # the kernel's integer arguments, after its tensors
    meta: dict  # its constexprs and launch options
    state: tuple | None = None  # cooperative: (shape, dtype) of a direction's state workspace
    block_i: int = 0  # forward: BLOCK_I where the kernel projects the input (input_block)
    weight_grads: bool = False  # backward: the kernel computes the weight gradients
    input_grad: bool = False  # backward with weight_grads: and the input gradient
    kept: tuple | None = None  # launch_kernel's kept kernel for 16-byte aligned pointers

    def __call__(self, pointers: tuple[Tensor, ...]) -> None:
        kernel = getattr(kernels, self.kernel_name)
        addresses = tuple(map(Tensor.data_ptr, pointers))
        aligned = not functools.reduce(operator.or_, addresses) & 15
        kept = self.kept
        if (
            aligned
            and kept is not None
            and _launches_directly(kernel, pointers[0])
            and kept[0] == torch.cuda.current_device()
        ):
            # Addresses, not tensors: Triton's launcher then skips a data_ptr() call and a
            # cuPointerGetAttribute per pointer (docs/performance.md); the argument checks
            # (_C.rnn_forward_outputs) have made sure that they are the device's memory.
            _run_kept(kept, self.grid, addresses, self.scalars)
            return
        kept = launch_kernel(kernel, self.grid, pointers, self.scalars, self.meta)
        if aligned:
            self.kept = kept

    def cooperative_arguments(self, like: Tensor, directions: int,
                              sync: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """A cooperative kernel's last arguments: its state workspace, one per direction
        (a TAGGED forward's state is in sync: `like`, a placeholder never read); what its
        programs synchronise through (call_sync); and where its tf32x3 products stream
        W_hh, the workspace of W_hh's low TF32 parts, [H, H] fp32 per direction
        (kernels._store_low_parts), else `like`."""
        shape, dtype = self.state
        state = low_parts = like
        if not (self.meta["TAGGED"] and self.kernel_name == "rnn_forward_cooperative_kernel"):
            state = like.new_empty((directions, *shape), dtype=dtype)
        if self.meta["W_LOW_PARTS"]:
            low_parts = like.new_empty((directions, shape[-1], shape[-1]), dtype=torch.float32)
        return state, sync, low_parts


class CallKey(NamedTuple):
    """What every launch of an op call depends on besides its shapes."""

    device: torch.device
    dtype: torch.dtype  # every tensor argument's (_C.rnn_forward_outputs): the plan's
    precision: str  # dot_precision(dtype)
    settings: tuple  # this module's settings, which tests and tools change


def call_key(weights: list[Tensor]) -> CallKey:
    """The CallKey of an op call on weights (their dtype is every tensor argument's)."""
    dtype = weights[1].dtype
    settings = (FORCE_TIER, FORCE_PROGRAMS, COOP_BLOCK_N, COOP_BLOCK_K, COOP_W_ON_CHIP,
                COOP_SPLIT_K, COOP_NUM_WARPS, COOP_PIPELINE_ONE_TILE, COOP_W_LOW_PARTS,
                COOP_STREAMED_TF32, COOP_STREAMED_TF32_MIN_BATCH, FP32_DOT_PRECISION,
                COOP_TAGGED_EXCHANGE,
                PERSISTENT_NUM_WARPS, FMA_PRODUCT_ELEMENTS, FMA_WHOLE_COLUMNS,
                PERSISTENT_STEPS_AHEAD, ONE_ROW_MAX_H, ONE_ROW_PREFETCH, IEEE_DOT_PARTS,
                PROJECT_INPUT_MAX_STEPS, PROJECT_INPUT_ELEMENTS, WEIGHT_GRADS_MAX_STEPS,
                WEIGHT_GRADS_ELEMENTS, TF32_GEMMS, TF32_WEIGHT_GRAD_GEMMS)  # fmt: skip
    return CallKey(weights[1].device, dtype, dot_precision(dtype), settings)


def _plan(call: CallKey, hidden: int, batch: int, tier: str | None = None,
          block_n: int | None = None) -> Plan:  # fmt: skip
    tensor_core_dots = device_tensor_core_dots(call.device)
    # Where Triton builds tl.dot from FMAs, that is what it builds whatever it is told.
    precision = call.precision if tensor_core_dots else "ieee"
    # A precision asked for (FP32_DOT_PRECISION) is the one every product runs in.
    streamed_tf32 = (COOP_STREAMED_TF32 and FP32_DOT_PRECISION is None
                     and batch >= COOP_STREAMED_TF32_MIN_BATCH)  # fmt: skip
    return plan(hidden, call.dtype, precision, device_shared_memory(call.device),
                tier or FORCE_TIER, COOP_BLOCK_N or block_n, COOP_NUM_WARPS, COOP_SPLIT_K,
                tensor_core_dots, PERSISTENT_NUM_WARPS, streamed_tf32)  # fmt: skip


def _layer_plan(call: CallKey, hidden: int, batch: int, directions: int) -> Plan:
    """_plan's, but one-row programs past fma_rows' bound where each batch row gets a
    program (one_row_plan; not with a tier forced), and the cooperative tier where the
    persistent one would need programs of BLOCK_B rows on tl.dot, which do not fit the
    device (Plan.dot_rows), and there its tiles as wide as the batch and the grid's
    programs make them (cooperative_block_n)."""
    programs = direction_programs(call.device, directions)
    if not FORCE_TIER and (programs is None or batch <= programs):
        forced = _plan(call, hidden, batch, "persistent")
        one_row = one_row_plan(forced, call.dtype, device_shared_memory(call.device),
                               one_row_in_quarters(call.device, hidden))  # fmt: skip
        if one_row:
            return one_row
    p = _plan(call, hidden, batch)
    if (
        p.tier == "persistent"
        and not p.dot_rows
        and _persistent_grid(call, p, batch, directions)[0] == BLOCK_B
    ):
        p = _plan(call, hidden, batch, "cooperative")
    if p.tier == "cooperative":
        block_n = cooperative_block_n(hidden, batch, programs)
        if block_n != p.block_n:
            p = _plan(call, hidden, batch, "cooperative", block_n)
    return p


def direction_programs(device: torch.device, directions: int) -> int | None:
    """The most programs of a direction that all run at once: one per SM, shared by the
    directions (None: the interpreter, which runs them one after another)."""
    return None if interpreting(device) else max(1, device_sms(device) // directions)


def _persistent_grid(call: CallKey, p: Plan, batch: int, directions: int):
    """(batch rows per program, grid) of the persistent tier."""
    programs = direction_programs(call.device, directions)
    rows = 1 if p.one_row else persistent_rows(batch, p.block_h, programs)
    return rows, (_cdiv(batch, rows), directions)


def _fits_shared_memory(call: CallKey, needed: int) -> bool:
    """Whether `needed` bytes fit a block's shared memory on the call's device."""
    shared = device_shared_memory(call.device)
    return shared is None or needed <= shared


def input_block(call: CallKey, p: Plan, rows: int, steps: int, input_size: int) -> int:
    """BLOCK_I where the persistent forward of `steps` steps on programs of `rows` batch
    rows projects the layer's input itself, else 0: at most PROJECT_INPUT_MAX_STEPS
    steps, on FMA programs (fma_rows) whose [rows, BLOCK_I, BLOCK_H] product is within
    PROJECT_INPUT_ELEMENTS."""
    block_i = _block(input_size)
    if (
        p.tier != "persistent"
        or steps > PROJECT_INPUT_MAX_STEPS
        or not fma_rows(rows, p.block_h)
        or rows * block_i * p.block_h > PROJECT_INPUT_ELEMENTS
    ):
        return 0
    needed = persistent_shared_memory(p.block_h, call.dtype, p.precision, block_i,
                                      tensor_core_dots=p.tensor_core_dots)  # fmt: skip
    return block_i if _fits_shared_memory(call, needed) else 0


def weight_grads_rows(call: CallKey, p: Plan, steps: int, batch: int, rows: int,
                      input_size: int) -> int:  # fmt: skip
    """Batch rows of the one persistent backward program per direction that computes the
    layer's weight gradients itself, else 0: at most WEIGHT_GRADS_MAX_STEPS steps,
    WEIGHT_GRADS_MAX_BATCH rows and WEIGHT_GRADS_ELEMENTS multiply-adds (its `rows` rows
    times [H, H + 2 I], the input gradient's included), within the device's shared
    memory; the whole batch, a power of two, with FMA products where they fit
    (fma_rows), else tl.dot where the plan runs programs of BLOCK_B rows (dot_rows)."""
    if (
        p.tier != "persistent"
        or not 0 < steps <= WEIGHT_GRADS_MAX_STEPS
        or not 0 < batch <= WEIGHT_GRADS_MAX_BATCH
        or rows * p.block_h * (p.block_h + 2 * input_size) > WEIGHT_GRADS_ELEMENTS
    ):
        return 0
    needed = persistent_shared_memory(p.block_h, call.dtype, p.precision, weight_grads=True,
                                      tensor_core_dots=p.tensor_core_dots)  # fmt: skip
    if not _fits_shared_memory(call, needed):
        return 0
    whole_batch = 1 << (batch - 1).bit_length()
    if fma_rows(whole_batch, p.block_h):
        return whole_batch
    return max(whole_batch, BLOCK_B) if p.dot_rows else 0


def _cooperative_launch(call: CallKey, p: Plan, kernel_name: str, batch: int, hidden: int,
                        directions: int, scalars: tuple, meta: dict,
                        state_shape: tuple) -> KernelLaunch:  # fmt: skip
    """The cooperative tier's launch: the grid within one program per SM, each program's
    tiles sharing their W_hh columns where those stay on chip."""
    col_tiles = _cdiv(hidden, p.block_n)
    tiles = _cdiv(batch, BLOCK_B) * col_tiles
    programs = cooperative_programs(tiles, directions, call.device)
    on_chip = COOP_W_ON_CHIP and p.w_on_chip
    if on_chip and programs < tiles and programs >= col_tiles:
        programs -= programs % col_tiles  # so each program's tiles share their columns
    on_chip = on_chip and programs % col_tiles == 0
    meta.update(BLOCK_B=BLOCK_B, BLOCK_N=p.block_n, BLOCK_K=COOP_BLOCK_K, W_ON_CHIP=on_chip,
                BLOCK_H=p.block_h if on_chip else 0, num_warps=p.num_warps,
                SPLIT_K=split_k(call.dtype, p.precision, p.block_h if on_chip else 0,
                                tensor_core_dots=p.tensor_core_dots),
                W_LOW_PARTS=w_low_parts(p.precision, on_chip))  # fmt: skip
    state_dtype = STATE_DTYPE.get(call.dtype, torch.float32)
    meta["TAGGED"] = (
        COOP_TAGGED_EXCHANGE and state_dtype == torch.float32 and not meta["W_LOW_PARTS"]
    )
    if kernel_name == "rnn_forward_cooperative_kernel":
        meta["PIPELINE_TILES"] = programs < tiles or COOP_PIPELINE_ONE_TILE
    if not interpreting(call.device):
        meta["launch_cooperative_grid"] = True
    state = (state_shape, state_dtype)
    return KernelLaunch(kernel_name, (programs, directions), scalars, meta, state)


@functools.lru_cache(maxsize=LAUNCHES_CACHED)
def forward_launch(call: CallKey, hidden: int, directions: int, steps: int, batch: int,
                   rows: int, padded: bool, input_size: int, x_strides: tuple[int, int],
                   y_stride: int, relu: bool, has_bias: bool,
                   has_h0: bool) -> KernelLaunch:  # fmt: skip
    """A layer's forward recurrence launch (recurrence_forward): the persistent tier's,
    which projects the input itself where input_block says so, or the cooperative
    tier's, as plan() picks.  x_strides: the layer input's (step_strides), which also
    give the order of the input projections' rows (projection_rows)."""
    p = _layer_plan(call, hidden, batch, directions)
    meta = dict(COMPILE_OPTIONS, PADDED=padded, RELU=relu, ACC_DTYPE=ACC_DTYPE[call.dtype],
                DOT_PRECISION=p.precision, HAS_BIAS=has_bias, HAS_H0=has_h0)  # fmt: skip
    if p.tier == "persistent":
        rows_per_program, grid = _persistent_grid(call, p, batch, directions)
        block_i = input_block(call, p, rows_per_program, steps, input_size)
        meta.update(PROJECT_INPUT=block_i > 0, BLOCK_I=block_i or 16, BLOCK_B=rows_per_program,
                    BLOCK_H=p.block_h,
                    DOT_PARTS=dot_parts(call.dtype, p.precision, p.block_h, rows_per_program),
                    **persistent_program(p, rows_per_program, block_i == 0, padded))  # fmt: skip
        in_strides = x_strides if block_i else projection_strides(steps, batch, hidden, padded,
                                                                  x_strides)  # fmt: skip
        scalars = (y_stride, steps, rows, batch, hidden, *in_strides, input_size)
        return KernelLaunch("rnn_forward_persistent_kernel", grid, scalars, meta, None, block_i)
    scalars = (y_stride, steps, rows, batch, hidden,
               *projection_strides(steps, batch, hidden, padded, x_strides))  # fmt: skip
    return _cooperative_launch(call, p, "rnn_forward_cooperative_kernel", batch, hidden,
                               directions, scalars, meta, (2, batch, hidden))  # fmt: skip


@functools.lru_cache(maxsize=LAUNCHES_CACHED)
def backward_launch(call: CallKey, hidden: int, directions: int, steps: int, batch: int,
                    rows: int, padded: bool, input_size: int, x_strides: tuple[int, int],
                    y_stride: int, relu: bool, has_bias: bool, has_h0: bool,
                    need_dh0: bool, need_input_grad: bool,
                    dy_strides: tuple | None,
                    dhn_strides: tuple | None) -> KernelLaunch:  # fmt: skip
    """A layer's backward recurrence launch (recurrence_backward), on plan()'s tier; on
    the persistent one it computes the weight gradients too where weight_grads_rows
    says so, and then for one direction the input gradient where needed.  x_strides:
    the layer input's (step_strides); dy_strides, dhn_strides: the gradients' of the
    layer's output (step, batch and column: gradient_strides) and of h_n ([D, B, H]),
    None where that output got none (zeros, not read); has_h0: h0 was given; need_dh0:
    its gradient is wanted (else not written)."""
    p = _layer_plan(call, hidden, batch, directions)
    meta = dict(COMPILE_OPTIONS, PADDED=padded, RELU=relu, ACC_DTYPE=ACC_DTYPE[call.dtype],
                DOT_PRECISION=p.precision, HAS_DY=dy_strides is not None,
                HAS_DHN=dhn_strides is not None, DH0=need_dh0)  # fmt: skip
    gradient_strides = (*(dy_strides or (0, 0, 0)), *(dhn_strides or (0, 0, 0)))
    if p.tier == "persistent":
        rows_per_program = weight_grads_rows(call, p, steps, batch, rows, input_size)
        weight_grads = rows_per_program > 0
        grid = (1, directions)
        if not weight_grads:
            rows_per_program, grid = _persistent_grid(call, p, batch, directions)
        input_grad = weight_grads and need_input_grad and directions == 1
        one_row = p.one_row and not weight_grads  # its programs sum whole columns
        meta.update(BLOCK_B=rows_per_program, BLOCK_H=p.block_h,
                    DOT_PARTS=dot_parts(call.dtype, p.precision, p.block_h, rows_per_program),
                    **persistent_program(p, rows_per_program, not weight_grads, padded),
                    WEIGHT_GRADS=weight_grads, HAS_BIAS=weight_grads and has_bias,
                    HAS_H0=weight_grads and has_h0, INPUT_GRAD=input_grad,
                    PREFETCH=one_row_prefetch(call.dtype, one_row, padded)
                    and runs_ptx(call.device))  # fmt: skip
        scalars = (y_stride, steps, batch, hidden, rows, *x_strides, input_size,
                   *gradient_strides)  # fmt: skip
        return KernelLaunch("rnn_backward_persistent_kernel", grid, scalars, meta,
                            weight_grads=weight_grads, input_grad=input_grad)  # fmt: skip
    scalars = (y_stride, steps, batch, hidden, *gradient_strides)
    return _cooperative_launch(call, p, "rnn_backward_cooperative_kernel", batch, hidden,
                               directions, scalars, meta, (batch, hidden))  # fmt: skip


@dataclasses.dataclass
class Steps:
    """The rows of each step, as the kernels take them (fastrnn.layout)."""

    steps: int
    batch: int
    rows: int
    padded: bool
    batch_sizes: Tensor | None  # [T] int64 on the device (packed only)
    offsets: Tensor | None  # [T] int64 on the device (packed only)
    # Packed backward: per direction, where each row's h_prev lives (csrc/rnn_arguments.h,
    # step_tables).
    previous: tuple[Tensor, ...] = ()  # [N] int64 each, on the device

    def tables(self, placeholder: Tensor) -> tuple[Tensor, Tensor]:
        """The kernels' batch-size and offset arguments (padded input: never read; Triton
        needs a tensor there, not None)."""
        if self.padded:
            return placeholder, placeholder
        return self.batch_sizes, self.offsets


PACKED_CAPTURE_ERROR = (
    "fastrnn: a packed sequence cannot be captured in a CUDA graph: its batch sizes are "
    "host data, copied to the device on every call; capture padded input instead "
    "(torch.nn.utils.rnn.pad_packed_sequence)"
)


def check_packed_capture(input: Tensor, batch_sizes: Tensor | None) -> None:
    """Packed input's step tables are copied to the device from a host buffer on every
    call; a captured copy would replay from that buffer after it is reused."""
    if (batch_sizes is not None and not interpreting(input.device)
            and torch.cuda.is_current_stream_capturing()):  # fmt: skip
        raise RuntimeError(PACKED_CAPTURE_ERROR)


def make_steps(input: Tensor, tables: tuple[Tensor, ...] | None, batch: int) -> Steps:
    """The step layout of a call; tables: a packed input's, on its device, as
    _C.rnn_forward_outputs / rnn_backward_outputs copy them there (batch sizes, offsets,
    each direction's previous rows; one asynchronous copy from pinned memory), None for
    padded input (nothing to copy, so that a call can be graph-captured)."""
    if tables is None:
        steps, batch = input.shape[0], input.shape[1]
        return Steps(steps, batch, steps * batch, True, None, None)
    sizes, offsets, *previous = tables
    return Steps(sizes.shape[0], batch, input.shape[0], False, sizes, offsets, tuple(previous))


def call_sync(sync: Tensor | None, launch: KernelLaunch, like: Tensor, layers: int,
              directions: int) -> Tensor | None:  # fmt: skip  # [L, 4] or [L, D, 2, B, H]
    """What the call's cooperative programs synchronise through, a layer's at [layer]
    (_layer), zeroed when its first cooperative launch needs it: one fill kernel per call
    rather than one per launch (None while every launch is persistent).  Grid-barrier
    counters, int32, one per direction in a 16-byte row a layer, so that every layer's
    launch passes only 16-byte aligned pointers (KernelLaunch's kept kernel, whose
    launches skip the specialisation key); with TAGGED the state's tagged exchange, int64
    [2, B, H] a direction (kernels._tagged_words), whose zeros no step's tag matches."""
    if sync is None and launch.state is not None:
        if launch.meta["TAGGED"]:
            batch, hidden = launch.state[0][-2:]
            return torch.zeros((layers, directions, 2, batch, hidden), dtype=torch.int64,
                               device=like.device)  # fmt: skip
        return torch.zeros((layers, 4), dtype=torch.int32, device=like.device)
    return sync


def _layer(tensor: Tensor | None, layer: int) -> Tensor | None:
    """A layer's part of a per-layer tensor (call_sync's), as _cells takes it."""
    return _cells(tensor, slice(layer, layer + 1))


def _both(tensors: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The kernels' (direction 0, direction 1) arguments; one direction: the same twice."""
    return tensors[0], tensors[-1]


def _each_direction(cells: list[list[Tensor]], index: int) -> tuple[Tensor, Tensor]:
    """Weight `index` (w_ih, w_hh, b_ih, b_hh) of each direction's cell, or of its
    gradients, as _both passes them."""
    return cells[0][index], cells[-1][index]


def _readable(weight: Tensor) -> bool:
    """Whether a kernel reads weight where it is: unit strides, 16-byte aligned (so that
    Triton builds its loads as for a parameter of its own; one_row_shared_memory)."""
    return weight.is_contiguous() and not weight.data_ptr() & 15


def contiguous_weights(weights: list[Tensor]) -> list[Tensor]:
    """The weights as the kernels read them (_readable; a copy only where not)."""
    if all(map(_readable, weights)):
        return weights
    return [w if _readable(w) else w.clone(memory_format=torch.contiguous_format)
            for w in weights]  # fmt: skip


def recurrence_forward(launch: KernelLaunch, xp, x, layer_weights, y, h0, h_n, sync,
                       steps: Steps):  # fmt: skip
    """One layer, every direction in one launch (forward_launch): y[rows, direction d's
    columns] = act(xp[d] + b_hh[d] + h_prev @ W_hh[d]^T) for every step, direction 1
    running backwards in time; h_n = final states.  xp: [D, N, H] (one direction:
    [N, H]), its rows in projection_rows' order, or None where the kernel computes it
    from x, x W_ih^T + b_ih; x: the layer input, padded [T, B, I] or packed [N, I], unit
    column stride; layer_weights: each direction's contiguous [w_ih, w_hh(, b_ih, b_hh)];
    y: [N, D*H]; h0: [D, B, H] or None for zeros; h_n: [D, B, H];
    sync: the layer's part of call_sync's, or None."""
    if steps.batch == 0:
        return
    if steps.steps == 0:
        if h0 is not None:
            h_n.copy_(h0)
        else:
            h_n.zero_()
        return
    xp = x if xp is None else xp  # a placeholder where the kernel projects x itself
    has_bias = len(layer_weights[0]) == 4
    pointers = (
        xp,
        *(_each_direction(layer_weights, 3) if has_bias else (xp, xp)),
        y,
        h0 if h0 is not None else xp,
        h_n,
        *_each_direction(layer_weights, 1),
        *steps.tables(xp),
    )
    if launch.state is not None:
        launch((*pointers, *launch.cooperative_arguments(xp, len(layer_weights), sync)))
        return
    launch((
        *pointers,
        x,
        *_each_direction(layer_weights, 0),
        *(_each_direction(layer_weights, 2) if has_bias else (x, x)),
    ))  # fmt: skip


def recurrence_backward(launch: KernelLaunch, dy, y, dz, dh_n, dh0, layer_weights, sync,
                        steps: Steps, x, h0, weight_grads, dx):  # fmt: skip
    """One layer, every direction in one launch (backward_launch): dz[rows] =
    (dy + dh) * act'(y), dh = dz @ W_hh, through time in reverse order of processing;
    dh0 receives the gradient of the initial state.  dy, y, dz: [N, D*H], one row
    stride (dy: padded [T, B, D*H] too, any strides, as launch was made for); dh_n, dh0:
    [D, B, H]; dy, dh_n None: zeros; dh0 None: not wanted (as launch was made for);
    layer_weights: each direction's contiguous [w_ih, w_hh(, b_ih, b_hh)].  Where
    launch.weight_grads, also each direction's [dW_ih, dW_hh(, db_ih, db_hh)] into
    weight_grads, from the layer input x (padded [T, B, I] or packed [N, I], unit column
    stride) and h0 [D, B, H] (None: zeros); where launch.input_grad, dx [N, I] = dz W_ih."""
    if steps.batch == 0:
        return
    if steps.steps == 0:
        if dh0 is not None and dh_n is not None:
            dh0.copy_(dh_n)
        elif dh0 is not None:
            dh0.zero_()
        return
    assert y.stride(0) == dz.stride(0), "y and dz share one row stride"
    # Placeholders (never read or written) where dy, dh_n or dh0 is None.
    pointers = (dy if dy is not None else dz, y, dz, dh_n if dh_n is not None else dz,
                dh0 if dh0 is not None else dz, *_each_direction(layer_weights, 1),
                *steps.tables(dz))  # fmt: skip
    if launch.state is not None:
        launch((*pointers, *launch.cooperative_arguments(dz, len(layer_weights), sync)))
        return
    if not launch.weight_grads:
        launch((*pointers, *[dz] * 14))  # placeholders of the weight gradients' arguments
        return
    grads = [g + [dz] * (4 - len(g)) for g in weight_grads]  # placeholders for no biases
    launch((
        *pointers,
        x,
        h0 if h0 is not None else dz,
        *_both(steps.previous or [dz]),
        *[grad for i in range(4) for grad in _each_direction(grads, i)],
        *((layer_weights[0][0], dx) if launch.input_grad else (dz, dz)),
    ))  # fmt: skip


def tf32_gemms(call: CallKey) -> bool:
    """Whether a call's GEMMs run on gemm_tf32_kernel (TF32_GEMMS; None: on a GPU): fp32
    whose products may use TF32 (dot_precision), on tensor cores (device_tensor_core_dots)."""
    enabled = not interpreting(call.device) if TF32_GEMMS is None else TF32_GEMMS
    return (
        enabled
        and call.dtype == torch.float32
        and call.precision != "ieee"
        and device_tensor_core_dots(call.device)
    )


def gemm_tile(m: int, n: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, warps) of a GEMM of an [m, n] result: each side a power of two
    from 16 (tl.dot's least) to GEMM_BLOCK; 8 warps from 4096 elements, where 4 take up
    to 255 registers a thread at strides Triton cannot take as multiples of 16, and
    spill (sm_86, sm_90: python tools/cubin_report.py)."""
    block_m, block_n = (min(GEMM_BLOCK, max(16, triton.next_power_of_2(s))) for s in (m, n))
    return block_m, block_n, 8 if block_m * block_n >= 64 * 64 else 4


def gemm_splits(tiles: int, k: int, device: torch.device) -> int:
    """Parts of K for a GEMM of `tiles` output tiles: about one program per SM where the
    tiles are fewer (weight gradients: K is the batch's rows), each of at least
    GEMM_MIN_SPLIT_K rows."""
    sms = GEMM_INTERPRETER_SMS if interpreting(device) else device_sms(device)
    return max(1, min(_cdiv(sms, tiles), k // GEMM_MIN_SPLIT_K))


@functools.lru_cache(maxsize=LAUNCHES_CACHED)
def gemm_launch(device: torch.device, m: int, n: int, k: int, a_strides: tuple,
                b_strides: tuple, out_strides: tuple, has_bias: bool, accumulate: bool,
                settings: tuple) -> tuple[KernelLaunch, int]:  # fmt: skip
    """gemm's launch of kernels.gemm_tf32_kernel for these sizes and strides, and its
    number of K splits (1: the kernel writes out itself; more: a contiguous [splits, m,
    n] of parts to sum).  settings: the GEMM_* settings it is worked out with (tools
    change them)."""
    block_m, block_n, warps = gemm_tile(m, n)
    tiles = _cdiv(m, block_m) * _cdiv(n, block_n)
    # Whole BLOCK_K blocks of K per split; no split left empty.
    split_blocks = _cdiv(_cdiv(k, GEMM_BLOCK_K), gemm_splits(tiles, k, device))
    splits = max(1, _cdiv(k, GEMM_BLOCK_K * split_blocks or 1))
    part_strides = (m * n, n, 1) if splits > 1 else (0, *out_strides)
    meta = dict(COMPILE_OPTIONS, HAS_BIAS=has_bias, ACCUMULATE=accumulate and splits == 1,
                BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=GEMM_BLOCK_K, GROUP_M=GEMM_GROUP_M,
                num_warps=warps, num_stages=GEMM_STAGES)  # fmt: skip
    scalars = (m, n, k, split_blocks, *a_strides, *b_strides, *part_strides)
    return KernelLaunch("gemm_tf32_kernel", (tiles, splits), scalars, meta), splits


def gemm(a: Tensor, b: Tensor, out: Tensor | None = None, bias: Tensor | None = None,
         accumulate: bool = False, tf32: bool = False) -> Tensor:  # [M, N]  # fmt: skip
    """a [M, K] @ b [K, N] (+ bias [N]) into out (new where None; where accumulate, added
    to out's values), at any strides: on kernels.gemm_tf32_kernel where tf32
    (tf32_gemms), each side at least GEMM_TF32_MIN_SIDE and its multiply-adds at least
    GEMM_TF32_MIN_WORK, else torch's (cuBLAS)."""
    (m, k), n = a.shape, b.shape[1]
    if not tf32 or min(m, k, n) < GEMM_TF32_MIN_SIDE or m * n * k < GEMM_TF32_MIN_WORK:
        if accumulate:
            return out.addmm_(a, b)
        if bias is not None:
            return torch.addmm(bias, a, b, out=out)
        return torch.mm(a, b, out=out)
    if GEMM_K_MAJOR and m * n * k >= GEMM_K_MAJOR_WORK:
        a = a if a.stride(1) == 1 else a.contiguous()
        b = b if b.stride(0) == 1 else b.t().contiguous().t()
    if out is None:
        out = a.new_empty((m, n))
    if m == 0 or n == 0:
        return out
    settings = (GEMM_BLOCK, GEMM_BLOCK_K, GEMM_STAGES, GEMM_GROUP_M, GEMM_MIN_SPLIT_K,
                GEMM_INTERPRETER_SMS)  # fmt: skip
    kernel_launch, splits = gemm_launch(a.device, m, n, k, a.stride(), b.stride(), out.stride(),
                                        bias is not None, accumulate, settings)  # fmt: skip
    # Each split sums into its own part: summed below, in a fixed order.
    parts = out if splits == 1 else out.new_empty((splits, m, n))
    kernel_launch((a, b, bias if bias is not None else a, parts))
    if splits > 1:
        if accumulate:
            out.add_(parts.sum(0))
        else:
            torch.sum(parts, 0, out=out)
    return out


def recurrent_weight_grad(dz, y, h0, steps: Steps, reverse: bool, tf32: bool,
                          out: Tensor) -> Tensor:  # [H, H]  # fmt: skip
    """dW_hh = dZ^T H_prev into out, H_prev holding each row's previous state (h0 None:
    zeros); tf32: the GEMMs on TF32 (tf32_gemms)."""
    if steps.padded and steps.steps > 0:
        # H_prev is y shifted by one step, plus h0 for the first step processed.
        batch, carried = steps.batch, steps.rows - steps.batch
        dz_carried = dz[:carried] if reverse else dz[batch:]
        y_prev = y[batch:] if reverse else y[:carried]
        gemm(dz_carried.t(), y_prev, out=out, tf32=tf32)
        if h0 is not None:
            dz_first = dz[carried:] if reverse else dz[:batch]
            gemm(dz_first.t(), h0, out=out, accumulate=True, tf32=tf32)
        return out
    if steps.steps == 0:
        return out.zero_()
    h0 = h0 if h0 is not None else dz.new_zeros(steps.batch, dz.shape[1])
    h_prev = torch.cat([y, h0]).index_select(0, steps.previous[int(reverse)])
    return gemm(dz.t(), h_prev, out=out, tf32=tf32)


def layer_cells(weights: list[Tensor], layer: int, directions: int, per_cell: int):
    """(slice of the layer's cells in h0 / h_n order, [w_ih, w_hh(, b_ih, b_hh)] of each)."""
    cells = slice(layer * directions, (layer + 1) * directions)
    return cells, [
        weights[c * per_cell : (c + 1) * per_cell] for c in range(cells.start, cells.stop)
    ]


def input_projections(layer_input: Tensor, layer_weights, tf32: bool) -> Tensor:  # [D, N, H]
    """layer_input @ W_ih^T + b_ih for each direction (b_hh joins the recurrence kernel);
    one direction: [N, H], the same memory, from a GEMM that allocates it; tf32: the
    GEMMs on TF32 (tf32_gemms)."""
    if len(layer_weights) == 1:
        w_ih, _, *biases = layer_weights[0]
        return gemm(layer_input, w_ih.t(), bias=biases[0] if biases else None, tf32=tf32)
    hidden = layer_weights[0][1].shape[0]
    xp = layer_input.new_empty((len(layer_weights), layer_input.shape[0], hidden))
    for d, (w_ih, _, *biases) in enumerate(layer_weights):
        gemm(layer_input, w_ih.t(), out=xp[d], bias=biases[0] if biases else None, tf32=tf32)
    return xp


def _cells(tensor: Tensor | None, cells: slice) -> Tensor | None:
    """tensor[cells] of a per-(layer, direction) tensor, or of a per-layer one (_layer);
    all of it, not a view, where the slice covers it (one layer)."""
    if tensor is None or cells.stop - cells.start == tensor.shape[0]:
        return tensor
    return tensor[cells]


def _strides(tensor: Tensor | None) -> tuple | None:
    return tensor.stride() if tensor is not None else None


def step_strides(rows: Tensor, steps: Steps) -> tuple[int, int]:
    """(step, batch) strides of the rows of a padded [T, B, F] tensor (any: a batch_first
    input's transposed view too), or of an [N, F] one's rows t * B + b; packed: (0, row
    stride), its steps found through the offsets (kernels._step_offsets)."""
    if rows.dim() == 3:
        return rows.stride(0), rows.stride(1)
    return (steps.batch * rows.stride(0) if steps.padded else 0), rows.stride(0)


def gradient_strides(grad: Tensor | None, steps: Steps) -> tuple | None:
    """(step, batch, column) strides of a layer output's gradient (None: none)."""
    return None if grad is None else (*step_strides(grad, steps), grad.stride(-1))


def _merges(outer: int, outer_stride: int, inner: int, inner_stride: int) -> bool:
    """Whether two dimensions of these sizes and strides view as one."""
    return outer == 1 or inner == 1 or outer_stride == inner * inner_stride


def batch_major(steps: int, batch: int, strides: tuple[int, int]) -> bool:
    """Whether a padded layer input's rows, at (step, batch) strides `strides`, view as
    one [N, F] matrix only in batch-major order (row b * T + t), as a batch_first
    input's do: its input projections then come in that order (projection_rows)."""
    step_stride, batch_stride = strides
    return not _merges(steps, step_stride, batch, batch_stride) and _merges(
        batch, batch_stride, steps, step_stride
    )


def projection_rows(x: Tensor, steps: Steps, x_strides: tuple[int, int]) -> Tensor:  # [N, F]
    """The layer input x's rows (at x_strides: step_strides) as one matrix, the input
    projection GEMM's operand: a view in time-major order, or in batch-major order where
    that is the view (batch_major); else a time-major copy."""
    if steps.padded and batch_major(steps.steps, steps.batch, x_strides):
        return x.transpose(0, 1).reshape(steps.rows, x.shape[-1])
    return x.reshape(steps.rows, x.shape[-1])


def projection_strides(steps: int, batch: int, hidden: int, padded: bool,
                       x_strides: tuple[int, int]) -> tuple[int, int]:  # fmt: skip
    """(step, batch) strides of the input projections' rows, which come in the order of
    projection_rows: batch-major [B, T, H] or time-major [T, B, H]."""
    if padded and batch_major(steps, batch, x_strides):
        return hidden, steps * hidden
    return batch * hidden, hidden


def _columns(rows: Tensor, direction: int, directions: int) -> Tensor:  # [N, H]
    """Direction `direction`'s columns of a layer's [N, D*H] rows."""
    if directions == 1:
        return rows
    hidden = rows.shape[1] // directions
    return rows[:, direction * hidden : (direction + 1) * hidden]


def replay_tf32() -> bool | None:
    """What the ops' C++ kernels ask before they replay a padded call or record one
    (csrc/python/triton_op_kernels.cpp): None where no call is replayed now, else
    tf32_allowed(), the flag a plan's key holds.  Calls are replayed with
    REPLAY_LAUNCHES, kept kernels launched directly, and no autocast (which would change
    the ops a replay calls; fastrnn's functions call the op with autocast off)."""
    if REPLAY_LAUNCHES and _direct_launches() and not torch._C._is_any_autocast_enabled():
        return tf32_allowed()
    return None


class _CallWork(TorchDispatchMode):
    """The ATen work of a call run under it, appended to `steps` in order: its
    allocations (results and workspaces) as ("allocation", tensor), and every other op
    but views as ("op", op, args, kwargs, returns), or None where a replay could not
    redo it (_replayable_op).  Composite ops are recorded as the ops they run: inside an
    op's kernel, autograd's keys are off and this mode gets them whole (`contiguous`,
    an aliasing op by its schema, would hide the copy it makes)."""

    ALLOCATIONS = (torch.ops.aten.empty.memory_format, torch.ops.aten.new_empty.default)

    def __init__(self, steps: list):
        super().__init__()
        self.steps = steps

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with self:
            decomposed = func.decompose(*args, **kwargs)
        if decomposed is not NotImplemented:
            return decomposed
        result = func(*args, **kwargs)
        if func in self.ALLOCATIONS:
            self.steps.append(("allocation", result))
        elif not func.is_view:
            returns = result if isinstance(result, tuple | list) else (result,)
            replayable = _replayable_op(func, returns)
            self.steps.append(("op", func, args, kwargs, tuple(returns)) if replayable else None)
        return result


# Ops that read data on the host, shape their results by data, draw random numbers or
# change a tensor's shape in place: a replay (which reuses every recorded shape and
# never reads data) cannot redo them.
_UNREPLAYABLE_TAGS = {torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output,
                      torch.Tag.nondeterministic_seeded, torch.Tag.inplace_view}  # fmt: skip


def _replayable_op(func, returns) -> bool:
    """Whether a replay can call func again as recorded: tensors returned, no tag of
    _UNREPLAYABLE_TAGS (data read on the host, random numbers, shapes from data)."""
    if not all(isinstance(r, Tensor) for r in returns):
        return False
    return not _UNREPLAYABLE_TAGS.intersection(func.tags)


def recorded(run, args: tuple) -> tuple:
    """(results, judged, steps) of run(*args) with its steps recorded (_RECORDING: its
    launches; _CallWork: its allocations and other ATen ops), as _C.store_plan takes
    them: None where a replay cannot redo one (a kernel replay_launch cannot launch, an
    op _replayable_op refuses).  A call that compiled a kernel (launched through
    JITFunction.run) is not judged: the next is recorded."""
    steps = _RECORDING.steps = []
    try:
        with _CallWork(steps):
            results = run(*args)
    finally:
        _RECORDING.steps = None
    if _JIT_LAUNCH in steps:
        return results, False, None
    steps = [_plan_step(step) for step in steps]
    return results, True, None if any(step is None for step in steps) else steps


def _plan_step(step: tuple | None) -> tuple | None:
    """A recorded step as _C.store_plan takes it (ops by their schema's name and
    overload); None where a replay cannot redo it."""
    if step is None or step[0] == "allocation":
        return step
    if step[0] == "launch":
        return replay_launch(*step[1:])
    _, func, args, kwargs, returns = step
    return "op", func._schema.name, func._schema.overload_name, args, kwargs, returns


def rnn_forward_triton(input, hx, weights, batch_sizes, num_layers, bidirectional, relu):
    """fastrnn::rnn_forward on Triton: (output, h_n, layer_outputs); hx None: zeros."""
    # Devices (nn.RNN's message), shapes and dtypes, checked as the CPU kernels check
    # them (the kernels do not); the results allocated, and packed input's step tables
    # copied to the device, in the same C++ call.
    check_packed_capture(input, batch_sizes)
    output, layer_outputs, h_n, tables = _C.rnn_forward_outputs(
        input, hx, weights, batch_sizes, num_layers, bidirectional
    )
    weights = contiguous_weights(weights)
    directions = 2 if bidirectional else 1
    hidden = weights[1].shape[0]
    batch = hx.shape[1] if hx is not None else input.shape[1]
    steps = make_steps(input, tables, batch)
    per_cell = len(weights) // (num_layers * directions)
    h0 = hx.contiguous() if hx is not None else None
    # The kernels read rows of unit column stride, at any step and batch strides.
    x = input if input.stride(-1) == 1 else input.contiguous()
    call = call_key(weights)
    tf32 = tf32_gemms(call)
    sync = None
    for layer in range(num_layers):
        target = output if layer == num_layers - 1 else layer_outputs[layer]
        y_all = target.view(steps.rows, directions * hidden)
        cells, layer_weights = layer_cells(weights, layer, directions, per_cell)
        x_strides = step_strides(x, steps)
        launch = forward_launch(call, hidden, directions, steps.steps, steps.batch, steps.rows,
                                steps.padded, x.shape[-1], x_strides, y_all.stride(0), relu,
                                per_cell == 4, h0 is not None)  # fmt: skip
        sync = call_sync(sync, launch, input, num_layers, directions)
        # No GEMM where the recurrence kernel projects the input itself.
        xp = None if launch.block_i else input_projections(projection_rows(x, steps, x_strides),
                                                           layer_weights, tf32)  # fmt: skip
        recurrence_forward(launch, xp, x, layer_weights, y_all, _cells(h0, cells),
                           _cells(h_n, cells), _layer(sync, layer), steps)  # fmt: skip
        x = target
    return output, h_n, layer_outputs


def rnn_backward_triton(
    grad_output, grad_h_n, input, hx, weights, batch_sizes, output, layer_outputs,
    num_layers, bidirectional, relu, need_input_grad, need_hx_grad=True,
):  # fmt: skip
    """fastrnn::rnn_backward on Triton: (grad_input, grad_hx, grad_weights); grad_hx is
    [0] when hx is None (zeros are no input) or not need_hx_grad (then not written).
    grad_output / grad_h_n None: zeros, which the kernels neither read nor get."""
    # Checked as the CPU kernels check them; what the kernels and GEMMs write allocated,
    # and packed input's step tables copied to the device, in the same C++ call.
    # Gradients of distinct parameters share no storage.
    check_packed_capture(input, batch_sizes)
    dz, grad_hx, no_input_grad, grad_weights, tables = _C.rnn_backward_outputs(
        grad_output, grad_h_n, input, hx, weights, batch_sizes, output, layer_outputs,
        num_layers, bidirectional, need_input_grad, need_hx_grad,
    )  # fmt: skip
    weights = contiguous_weights(weights)
    directions = 2 if bidirectional else 1
    hidden = weights[1].shape[0]
    batch = hx.shape[1] if hx is not None else input.shape[1]
    steps = make_steps(input, tables, batch)
    per_cell = len(weights) // (num_layers * directions)
    h0 = hx.contiguous() if hx is not None else None
    writes_grad_hx = h0 is not None and need_hx_grad  # else grad_hx is [0]
    # Read with its strides: an expanded one (0) or a batch_first one needs no copy.
    grad_y = grad_output  # None: the top layer's output got no gradient
    call = call_key(weights)
    tf32 = tf32_gemms(call)
    tf32_weight_grads = tf32 and TF32_WEIGHT_GRAD_GEMMS
    sync = None
    for layer in reversed(range(num_layers)):
        layer_in = input if layer == 0 else layer_outputs[layer - 1]
        saved = output if layer == num_layers - 1 else layer_outputs[layer]
        y_all = saved.reshape(steps.rows, directions * hidden)
        cells, layer_weights = layer_cells(weights, layer, directions, per_cell)
        if layer_in.stride(-1) != 1:  # the kernels read rows of unit column stride
            layer_in = layer_in.contiguous()
        # Layer 0's input gradient is one more GEMM; skipped when nothing needs it.
        need_below = layer > 0 or need_input_grad
        dh_n = _cells(grad_h_n, cells)  # read with its strides: an expanded one needs no copy
        launch = backward_launch(call, hidden, directions, steps.steps, steps.batch, steps.rows,
                                 steps.padded, layer_in.shape[-1], step_strides(layer_in, steps),
                                 y_all.stride(0), relu, per_cell == 4, h0 is not None,
                                 writes_grad_hx, need_below,
                                 gradient_strides(grad_y, steps),
                                 _strides(dh_n))  # fmt: skip
        sync = call_sync(sync, launch, dz, num_layers, directions)
        _, layer_grads = layer_cells(grad_weights, layer, directions, per_cell)
        kernel_grads = layer_grads if launch.weight_grads else None
        grad_below = None
        if launch.input_grad:
            grad_below = layer_in.new_empty((steps.rows, layer_in.shape[-1]))
        elif not launch.weight_grads:  # the GEMMs' rows: a copy of a batch-major input's
            layer_in = layer_in.reshape(steps.rows, layer_in.shape[-1])
        recurrence_backward(launch, grad_y, y_all, dz, dh_n,
                            _cells(grad_hx if writes_grad_hx else None, cells), layer_weights,
                            _layer(sync, layer), steps, layer_in, _cells(h0, cells),
                            kernel_grads, grad_below)  # fmt: skip
        gemm_below = need_below and not launch.input_grad  # the input gradient by GEMMs
        for d, (w_ih, *_) in enumerate(layer_weights):
            if launch.weight_grads and not gemm_below:  # the kernel computed all of it
                break
            cell = cells.start + d
            dz_cell = _columns(dz, d, directions)  # [N, H], row stride D*H
            if not launch.weight_grads:
                grad_w_ih, grad_w_hh, *grad_biases = layer_grads[d]
                gemm(dz_cell.t(), layer_in, out=grad_w_ih, tf32=tf32_weight_grads)
                recurrent_weight_grad(dz_cell, _columns(y_all, d, directions),
                                      h0[cell] if h0 is not None else None, steps, d == 1,
                                      tf32_weight_grads, grad_w_hh)  # fmt: skip
                if grad_biases:
                    torch.sum(dz_cell, 0, out=grad_biases[0])  # accumulates in fp32 (fp16/bf16)
                    grad_biases[1].copy_(grad_biases[0])
            if gemm_below:
                grad_below = gemm(dz_cell, w_ih, out=grad_below,
                                  accumulate=grad_below is not None, tf32=tf32)  # fmt: skip
        grad_y = grad_below
    grad_input = grad_y.reshape(input.shape) if need_input_grad else no_input_grad
    return grad_input, grad_hx, grad_weights
