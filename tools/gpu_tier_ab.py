"""The tier boundary and the tiers' options on a GPU: fastrnn forced onto the persistent
tier (a batch under 16 with FMA products or with tl.dot; a short sequence's input
projected in the kernel or by a GEMM, its weight gradients computed by the backward
kernel or by GEMMs), onto the cooperative tier with 64- or 32-column tiles, or with
W_hh's columns streamed from L2 instead of held on chip; and nn.RNN (cuDNN).  So
launch.MAX_PERSISTENT_H, FMA_PRODUCT_ELEMENTS, COOP_BLOCK_N, COOP_W_ON_CHIP,
PROJECT_INPUT_MAX_STEPS and WEIGHT_GRADS_MAX_STEPS are set from measurement.
Each contender is validated against float64 nn.RNN first (fastrnn.bench.measure.validate),
then timed with the contenders alternated.  Prints a markdown table; --json writes every
number (after each row, so a run cut short keeps what it measured).

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
from fastrnn.bench.measure import ValidationError, time_contenders, validate
from fastrnn.bench.report import machine_line
from fastrnn.bench.shapes import Shape
from fastrnn.triton import kernels, launch

# (dtype, shape, variants): at the tier boundary (fp32 at H=128, the persistent tier's
# largest; fp16 at H=256, where both tiers compile within the GPU's limits), and where
# only the cooperative tier runs, its tile width and W_hh on chip or streamed.
BOUNDARY = ("persistent", "cooperative", "cooperative-streamed")
WIDTH = ("cooperative-64", "cooperative-32", "cooperative-streamed")
FMA = ("persistent", "persistent-dot")  # FMA products on few rows, or tl.dot on 16
# Input projected in the kernel or by a GEMM; weight gradients in the kernel or by GEMMs.
PROJECT = ("persistent", "persistent-xp", "persistent-gemm")
CASES = [
    *[
        (dtype, shape, PROJECT)
        for dtype in (torch.float32, torch.float16)
        for shape in (
            Shape("hello", 5, 1, 4, 8),
            Shape("pattern25", 25, 1, 4, 128),
            Shape("regression2L", 10, 32, 5, 20, layers=2),
            Shape("single-step", 1, 1, 64, 128),
        )
    ],
    (torch.float32, Shape("long-B1", 1000, 1, 64, 128), FMA),
    (torch.float32, Shape("long", 1000, 8, 32, 64), FMA),
    (torch.float32, Shape("small", 100, 32, 64, 128), FMA),
    (torch.float16, Shape("small", 100, 32, 64, 128), FMA),
    (torch.float16, Shape("long-B1", 1000, 1, 64, 128), FMA),
    (torch.bfloat16, Shape("long", 1000, 8, 32, 64), FMA),
    (torch.float32, Shape("single-step", 1, 1, 64, 128), BOUNDARY),
    (torch.float32, Shape("small", 100, 32, 64, 128), BOUNDARY),
    (torch.float32, Shape("long-B1", 1000, 1, 64, 128), BOUNDARY),
    (torch.float16, Shape("medium", 100, 64, 256, 256), BOUNDARY),
    (torch.float16, Shape("bi2L", 100, 32, 128, 256, layers=2, bidirectional=True), BOUNDARY),
    (torch.float16, Shape("bigbatch", 100, 1024, 128, 256), BOUNDARY),
    (torch.float32, Shape("medium", 100, 64, 256, 256), WIDTH),
    (torch.float32, Shape("fastrnns", 100, 64, 512, 512), WIDTH),
    (torch.float32, Shape("wide", 50, 16, 128, 512), WIDTH),
    (torch.float32, Shape("large", 50, 128, 512, 1024), WIDTH),
    (torch.float32, Shape("H2048", 100, 64, 2048, 2048), WIDTH),
    (torch.float16, Shape("fastrnns", 100, 64, 512, 512), WIDTH),
    (torch.float16, Shape("wide", 50, 16, 128, 512), WIDTH),
    (torch.float16, Shape("large", 50, 128, 512, 1024), WIDTH),
    (torch.float16, Shape("H2048", 100, 64, 2048, 2048), WIDTH),
]
DEFAULT_FMA_PRODUCT_ELEMENTS = launch.FMA_PRODUCT_ELEMENTS
DEFAULT_PROJECT_INPUT_MAX_STEPS = launch.PROJECT_INPUT_MAX_STEPS
DEFAULT_WEIGHT_GRADS_MAX_STEPS = launch.WEIGHT_GRADS_MAX_STEPS


def use_variant(name: str | None) -> None:
    """Every launch from now on runs on variant `name` (None: the plan's own choices): a
    tier, for the persistent tier tl.dot at any batch ("persistent-dot"), input
    projections from a GEMM ("persistent-xp") or weight gradients from GEMMs
    ("persistent-gemm") at any length, for the cooperative tier its tile width
    ("cooperative-32") or W_hh streamed from L2 ("cooperative-streamed").
    Set for the forward and the backward of a training step alike."""
    tier, _, option = (name or "").partition("-")
    launch.FORCE_TIER = tier or None
    launch.COOP_BLOCK_N = int(option) if option.isdigit() else None
    launch.COOP_W_ON_CHIP = option != "streamed"
    launch.FMA_PRODUCT_ELEMENTS = 0 if option == "dot" else DEFAULT_FMA_PRODUCT_ELEMENTS
    launch.PROJECT_INPUT_MAX_STEPS = 0 if option == "xp" else DEFAULT_PROJECT_INPUT_MAX_STEPS
    launch.WEIGHT_GRADS_MAX_STEPS = 0 if option == "gemm" else DEFAULT_WEIGHT_GRADS_MAX_STEPS


def variant(contender, name: str):
    """The fastrnn contender with every call, and the backward that follows it, on
    variant `name` (use_variant)."""

    def run(x, module=contender.module):
        use_variant(name)
        return module(x)

    return dataclasses.replace(contender, name=name, run=run)


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
        for mode in ("inference", "training"):
            fast, cudnn = make_contenders(shape, device, dtype, ["fastrnn", "nn.RNN"])
            contenders = [variant(fast, name) for name in variants] + [cudnn]
            row = {"dtype": str(dtype), "shape": dataclasses.asdict(shape), "mode": mode}
            try:
                validate(contenders, shape, mode, device, dtype)
            except ValidationError as error:
                use_variant(None)
                row["error"] = str(error)
                print(f"| {dtype} | {shape.name} | {mode} | ABORTED: {error} |", flush=True)
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
