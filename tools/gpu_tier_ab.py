"""The tier boundary and the tiers' options on a GPU: a padded call's launches and ops
replayed from C++ or issued from Python (launch.REPLAY_LAUNCHES); fastrnn forced onto
the persistent tier (a batch under 16 with FMA products or with tl.dot, one-row FMA
programs summing whole columns or on the plan's warps in one sum, FMA programs loading
their inputs 4 steps ahead or one, one-row programs at H=256 or the former plan there,
their fp32 backward prefetching its inputs or not; a short sequence's input projected in
the kernel or by a GEMM, and small's (100 steps) too, its weight gradients computed by
the backward kernel or by GEMMs; 16-row programs on 16 warps), onto the cooperative tier
with 64-, 32- or 16-column tiles, or with W_hh's columns streamed from L2 instead of
held on chip, its products in one K part, its programs on 8 warps, its streamed W_hh 32
rows a chunk or split into TF32 parts by Triton at every chunk (fp32 tf32x3), or a
forward program's one tile pipelined as several are, or its state exchanged tagged with
each step instead of a grid barrier a step; a 16-row fp32 IEEE product in K parts or in
one; fp32 tensor-core products as tf32x3, plain TF32 or IEEE FMA products under nn.RNN's
TF32-on default, and fp32 GEMMs (input projections, weight and input gradients) on TF32
as cuDNN may run them under that default (fastrnn's own GEMM kernel, or cuBLAS's), or on
cuBLAS in IEEE fp32; and nn.RNN (cuDNN).  So launch.MAX_PERSISTENT_H,
FMA_PRODUCT_ELEMENTS, FMA_WHOLE_COLUMNS, PERSISTENT_STEPS_AHEAD, ONE_ROW_MAX_H,
ONE_ROW_PREFETCH, IEEE_DOT_PARTS, COOP_BLOCK_N, COOP_BLOCK_K, COOP_W_ON_CHIP,
COOP_SPLIT_K, COOP_NUM_WARPS, COOP_PIPELINE_ONE_TILE, COOP_W_LOW_PARTS,
COOP_TAGGED_EXCHANGE, PERSISTENT_NUM_WARPS, PROJECT_INPUT_MAX_STEPS,
WEIGHT_GRADS_MAX_STEPS, TF32_GEMMS, REPLAY_LAUNCHES and launch.dot_precision are set
from measurement.  Each contender is validated against float64 nn.RNN first
(fastrnn.bench.measure.validation_errors; every error goes into the JSON), one outside
the allowance is dropped from the row, and the others are timed with the contenders
alternated.  Prints a markdown table; --json writes every number (after each row, so a
run cut short keeps what it measured).

    python tools/gpu_tier_ab.py --json gpu-results/tiers.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

import torch
import triton

from fastrnn.bench.contenders import make_contenders
from fastrnn.bench.measure import time_contenders, validation_errors
from fastrnn.bench.report import machine_line
from fastrnn.bench.shapes import GPU_SHAPES, SHAPES, Shape
from fastrnn.triton import kernels, launch

# (dtype, shape, variants): at the tier boundary (fp32 at H=128, the persistent tier's
# largest; fp16 at H=256, where both tiers compile within the GPU's limits), and where
# only the cooperative tier runs, its tile width and W_hh on chip or streamed.
BOUNDARY = ("persistent", "cooperative", "cooperative-streamed")
# 16 columns: twice the programs of 32, each with half a step's work, and fp32's W_hh on
# chip up to H=512 (offline SASS in docs/performance.md).
WIDTH = ("cooperative-64", "cooperative-32", "cooperative-16", "cooperative-streamed")
# FMA products on few rows (one row: threads summing whole columns, or on the plan's
# warps in one sum), or tl.dot on 16.
FMA = ("persistent", "persistent-onesum", "persistent-dot")
# FMA programs running the recurrence alone loading each step's inputs 4 steps ahead
# (launch.PERSISTENT_STEPS_AHEAD, the plan) or one (each step waited for its load).
AHEAD = ("fastrnn", "fastrnn-ahead1")
# Input projected in the kernel or by a GEMM; weight gradients in the kernel or by GEMMs.
PROJECT = ("persistent", "persistent-xp", "persistent-gemm")
# small (100 steps) is host-bound: its input projected in the kernel too (no GEMM's
# launch, a longer step: docs/performance.md) or by a GEMM (the plan).
PROJECT_LONGER = ("fastrnn", "fastrnn-project128")
# fp32 as plan() runs it under TF32-on (tf32x3 tl.dot, plain TF32 where W_hh streams,
# GEMMs on TF32), with tf32x3 where W_hh streams too ("x3"), or with IEEE products and
# GEMMs: TF32 is what nn.RNN's flag allows, not what it requires, and IEEE is the more
# accurate; or its products in plain TF32 everywhere, as cuDNN's under the same flag may
# run: whether cuDNN's own error allows that is in the JSON (validation_errors).
PRECISION = ("fastrnn", "fastrnn-x3", "fastrnn-ieee", "fastrnn-tf32")
# fp32 GEMMs under TF32-on: fastrnn's own TF32 GEMM kernel (launch.TF32_GEMMS, the
# plan), with operands copied along K first (launch.GEMM_K_MAJOR), but the weight
# gradients' on cuBLAS in IEEE fp32, all on cuBLAS in IEEE fp32, or on TF32 (its global
# flag, which the package cannot set per call).
GEMMS = ("fastrnn", "fastrnn-kmajor", "fastrnn-wgieee", "fastrnn-cublas",
         "fastrnn-cublas-tf32gemm")  # fmt: skip
# The cooperative tier's state exchanged through a grid barrier a step (the plan), or
# tagged with its step and read when the tags show (launch.COOP_TAGGED_EXCHANGE; not
# where fp32 tf32x3 takes streamed W_hh's parts split once: "chunksplit" there).
TAGGED = ("fastrnn", "fastrnn-tagged")
TAGGED_STREAMED = ("fastrnn", "fastrnn-chunksplit", "fastrnn-chunksplit-tagged")
# The cooperative tier as planned, with its products in one K part, on 8 warps, or
# streaming W_hh 32 rows a chunk (in 2 parts; the default is 64 in 4).
COOP_OPTIONS = ("fastrnn", "fastrnn-unsplit", "fastrnn-w8", "fastrnn-k32")
# The persistent tier's 16-row programs at H=256 on the plan's 8 warps or on 16 (half a
# warp's instructions a step in Triton 3.6's SASS, docs/performance.md).
PERSISTENT_WARPS = ("fastrnn", "fastrnn-pw16")
# At padded H=256 with a row a program: one-row programs summing whole columns (the
# plan: launch.ONE_ROW_MAX_H), or the former plan, fp32's cooperative tier and fp16's
# 16-row programs ("onerow128").
ONE_ROW = ("fastrnn", "fastrnn-onerow128")
# There, fp32's backward prefetching the dy and y of the step after next into L1 (the
# plan: launch.ONE_ROW_PREFETCH) or not.
PREFETCH = ("fastrnn", "fastrnn-noprefetch")
# A forward cooperative program's one tile (W_hh's columns on chip) pipelined, as
# planned, or unpipelined (fewer SASS instructions a step, docs/performance.md).
TILE_PIPELINE = ("fastrnn", "fastrnn-unpipelined")
# fp32 tf32x3 on streamed W_hh: its TF32 parts split once per launch (the plan), or by
# Triton at every chunk (more instructions, half the bytes from L2; docs/performance.md).
LOW_PARTS = ("fastrnn", "fastrnn-chunksplit")
# fp32 IEEE (TF32 off) on 16-row tl.dot programs at H=128 (a batch over 2 FMA rows per
# program on every SM): the products in K parts (launch.IEEE_DOT_PARTS) or in one, or the
# cooperative tier.
IEEE_ROWS = Shape("bigbatch-H128", 100, 1024, 128, 128)
IEEE_DOT = ("fastrnn-ieee", "fastrnn-wholedot-ieee", "cooperative-ieee")
# fp32 over 1000 steps under TF32-on, W_hh on chip (H=256) and streamed (H=1024), a batch
# of 64 and of 1: whether plain TF32 products drift from fp64 where cuDNN's do not (the
# plan's: plain TF32 where W_hh streams from launch.COOP_STREAMED_TF32_MIN_BATCH rows;
# "x3": tf32x3 there too; "tf32": plain TF32 everywhere).
LONG_ROWS = (Shape("long-H256", 1000, 64, 256, 256), Shape("long-H1024", 1000, 64, 1024, 1024),
             Shape("long-B1-H1024", 1000, 1, 1024, 1024))  # fmt: skip
PLAIN_TF32 = ("fastrnn", "fastrnn-x3", "fastrnn-tf32")
# A padded call's launches and ATen ops from Python (the plan) or replayed from C++
# (launch.REPLAY_LAUNCHES): host time at the tutorial sizes, at small (its GEMMs) and at
# wide (the cooperative tier's launches).
REPLAY = ("fastrnn", "fastrnn-replay")
REPLAY_ROWS = ("hello", "pattern25", "regression2L", "cell-loop", "single-step", "small",
               "wide")  # fmt: skip
# The benchmark's shapes, IEEE_ROWS and LONG_ROWS.
GRID = {shape.name: shape for shape in [*SHAPES, *GPU_SHAPES, IEEE_ROWS, *LONG_ROWS]}


def cases(dtypes, names, variants) -> list:
    return [(dtype, GRID[name], variants) for dtype in dtypes for name in names]


FP32, FP16, BF16 = torch.float32, torch.float16, torch.bfloat16
# The grid's shapes on the cooperative tier: fp32 above H=128, fp16 above 256.
COOPERATIVE_16 = ("fastrnns", "wide", "large", "H2048")
COOPERATIVE_32 = ("medium", *COOPERATIVE_16)
CASES = [
    # Replayed launches, one-row programs at H=256 and their prefetches, the loads ahead,
    # then the GEMMs: a run cut short by its time limit keeps them.
    *cases((FP32, FP16), REPLAY_ROWS, REPLAY),
    *cases((FP32, FP16), ("medium", "bi2L", "long-H256"), ONE_ROW),
    *cases((FP32,), ("medium", "bi2L", "long-H256"), PREFETCH),
    *cases((FP32, FP16), ("long", "long-B1", "small"), AHEAD),
    *cases((FP32, FP16), ("small",), PROJECT_LONGER),
    *cases((FP32,), ("small", *COOPERATIVE_32, "bi2L", "bigbatch"), GEMMS),
    *cases((FP32,), ("medium", "fastrnns", "wide", "bi2L", "bigbatch"), TAGGED),
    *cases((FP16,), COOPERATIVE_16, TAGGED),
    *cases((FP32,), ("large", "H2048"), TAGGED_STREAMED),
    *cases((FP32, FP16), ("hello", "pattern25", "regression2L", "single-step"), PROJECT),
    *cases((FP32,), ("long-B1", "long", "small"), FMA),
    *cases((FP16,), ("small", "long-B1"), FMA),
    *cases((BF16,), ("long",), FMA),
    *cases((FP32,), ("single-step", "small", "long-B1"), BOUNDARY),
    *cases((FP16,), ("medium", "bi2L", "bigbatch"), BOUNDARY),
    *cases((FP32,), (*COOPERATIVE_32, "bi2L", "bigbatch"), WIDTH),
    *cases((FP16,), COOPERATIVE_16, WIDTH),
    *cases((FP32,), ("small", *COOPERATIVE_32, "bigbatch"), PRECISION),
    *cases((FP32,), [shape.name for shape in LONG_ROWS], PLAIN_TF32),
    *cases((FP32,), COOPERATIVE_32, COOP_OPTIONS),
    *cases((FP16,), COOPERATIVE_16, COOP_OPTIONS),
    *cases((FP16,), ("medium", "bi2L", "bigbatch"), PERSISTENT_WARPS),
    *cases((FP32,), ("medium", "bi2L"), TILE_PIPELINE),
    *cases((FP16,), ("fastrnns", "wide"), TILE_PIPELINE),
    *cases((FP32,), COOPERATIVE_16, LOW_PARTS),
    *cases((FP32,), (IEEE_ROWS.name,), IEEE_DOT),
]
DEFAULT_ALLOW_TF32 = launch.tf32_allowed()
DEFAULT_MATMUL_TF32 = torch.backends.cuda.matmul.allow_tf32
# Variants that set a torch flag, not a launch setting (use_variant).
FLAG_OPTIONS = ("-ieee", "-tf32gemm")


def use_variant(name: str | None) -> None:
    """Every launch from now on runs on variant `name` (launch.variant_settings; None or
    "fastrnn": the plan's own choices); with the option "ieee" fp32 products in IEEE
    fp32 (cuDNN's TF32 flag off, which dot_precision reads, so the nn.RNN contender runs
    use_variant(None) first), with "tf32gemm" cuBLAS's TF32 flag on (for the GEMMs left
    on cuBLAS, option "cublas").  Set for the forward and the backward of a training step
    alike."""
    name = name or "fastrnn"
    torch.backends.cudnn.allow_tf32 = DEFAULT_ALLOW_TF32 and not name.endswith("-ieee")
    torch.backends.cuda.matmul.allow_tf32 = DEFAULT_MATMUL_TF32 or name.endswith("-tf32gemm")
    launch_name = next((name.removesuffix(f) for f in FLAG_OPTIONS if name.endswith(f)), name)
    launch.apply_settings(launch.variant_settings(launch_name))


def variant(contender, name: str):
    """The contender with every call, and the backward that follows it, on variant
    `name` (use_variant; None: the defaults, under its own name)."""

    def run(x, module=contender.module):
        use_variant(name)
        return module(x)

    return dataclasses.replace(contender, name=name or contender.name, run=run)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated dtype/shape, e.g. float16/large (default: all)",
    )
    parser.add_argument(
        "--variant",
        default=None,
        help="comma-separated: only the cases that time one of these, e.g. fastrnn-ieee",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    machine = machine_line(device, torch.float32)  # dtypes vary by row, as the table says
    print(machine)

    def record(row):
        rows.append(row)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "rows": rows}, f, indent=1)

    print("| dtype | shape | mode | ms per call |")
    print("|---|---|---|---|")
    wanted = set(args.cases.split(",")) if args.cases else None
    for dtype, shape, variants in CASES:
        if wanted and f"{str(dtype).removeprefix('torch.')}/{shape.name}" not in wanted:
            continue
        if args.variant and not set(args.variant.split(",")) & set(variants):
            continue
        for mode in ("inference", "training"):
            fast, cudnn = make_contenders(shape, device, dtype, ["fastrnn", "nn.RNN"])
            contenders = [variant(fast, name) for name in variants] + [variant(cudnn, None)]
            row = {"dtype": str(dtype), "shape": dataclasses.asdict(shape), "mode": mode}
            errors, allowed = validation_errors(contenders, shape, mode, device, dtype)
            row.update(errors=errors, allowed=allowed)
            failed = [name for name, error in errors.items() if not error <= allowed]
            contenders = [c for c in contenders if c.name not in failed]
            if failed:
                use_variant(None)
                print(f"| {dtype} | {shape.name} | {mode} | DROPPED {', '.join(failed)}: "
                      f"errors {errors}, allowed {allowed:.3g} |", flush=True)  # fmt: skip
                if len(contenders) < 2:
                    record(row)
                    continue
            timings = time_contenders(contenders, shape, mode, device, dtype, args.repeats, 0.02)
            use_variant(None)
            row["timings"] = timings
            ms = [f"{c.name} {timings[c.name]['median_s'] * 1e3:.3f}" for c in contenders]
            print(f"| {dtype} | {shape.name} | {mode} | {', '.join(ms)} |", flush=True)
            record(row)
    if device.type == "cuda":
        print_kernel_resources()
    return 0


def print_kernel_resources() -> None:
    """Registers, spills and shared memory of every kernel this run compiled, as the
    installed Triton built them, with the constexprs that distinguish them."""
    print("| kernel | constexprs | warps | registers | spilled 4-byte words | shared B |")
    print("|---|---|---|---|---|---|")
    for name in dir(kernels):
        function = getattr(kernels, name)
        if not isinstance(function, triton.runtime.JITFunction):
            continue
        for caches in function.device_caches.values():
            for key, compiled in caches[0].items():
                compiled = compiled.result() if hasattr(compiled, "result") else compiled
                compiled._init_handles()
                constexprs = ",".join(re.findall(r"\('constexpr', ([^)]*)\)", str(key)))
                print(
                    f"| {name} | {constexprs} | {compiled.metadata.num_warps} | "
                    f"{compiled.n_regs} | {compiled.n_spills} | {compiled.metadata.shared} |"
                )


if __name__ == "__main__":
    raise SystemExit(main())
