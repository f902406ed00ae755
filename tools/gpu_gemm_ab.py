"""fp32's GEMMs outside the recurrence, one at a time, on a GPU: cuBLAS in IEEE fp32 (what
fastrnn runs with the TF32 flag off), cuBLAS on TF32 (torch's global matmul flag, which the package
cannot set per call) and fastrnn's own TF32 kernel (launch.gemm, kernels.gemm_tf32_kernel)
as planned ("fastrnn") and with one setting varied ("fastrnn-kmajor": operands not
stored along K copied so first, the copy timed with the GEMM; "-gk64": K 64 rows a
block, "-gs4": 4 blocks in flight, "-nosplit": K never split).  The GEMMs of layer 0 of
each fp32 throughput shape, with the operands' layouts the launch functions pass: the
input projection (x @ W_ih^T + b_ih), the input gradient (dZ @ W_ih), dW_ih (dZ^T @ x)
and dW_hh (dZ^T @ y); dZ's rows at a bidirectional layer's stride.  Each result is
validated first (its error against the float64 product, in units of the TF32 bound
2^-9 (|A| @ |B|): at most 1, or it is dropped), then the contenders are timed
alternated, median of --repeats.  So launch.GEMM_BLOCK_K, GEMM_STAGES and
GEMM_MIN_SPLIT_K are set from measurement.  Prints a markdown table (microseconds a
GEMM); --json writes every number.

    python tools/gpu_gemm_ab.py --json gpu-results/gemms.json
"""

from __future__ import annotations

import argparse
import json

import torch

from fastrnn.bench.measure import time_calls
from fastrnn.bench.report import machine_line
from fastrnn.bench.shapes import GPU_SHAPES, SHAPES
from fastrnn.triton import launch

# The fp32 shapes whose GEMMs run outside the recurrence kernels (their sequences are
# longer than launch.PROJECT_INPUT_MAX_STEPS).
NAMES = ("small", "medium", "fastrnns", "wide", "large", "bi2L", "H2048", "bigbatch")
# fastrnn's TF32 kernel as planned, and with one tile setting changed (launch.
# VARIANT_OPTIONS).
TRITON_VARIANTS = ("fastrnn", "fastrnn-kmajor", "fastrnn-gk64", "fastrnn-gs4", "fastrnn-nosplit")
CONTENDERS = ("cublas-ieee", "cublas-tf32", *TRITON_VARIANTS)


def operands(shape, device, gen) -> dict:
    """{GEMM name: (a, b, bias)} of layer 0 of `shape`, one direction, laid out as the
    launch functions pass them."""

    def rand(*size):
        return torch.randn(*size, generator=gen).to(device)

    rows, directions = shape.steps * shape.batch, shape.directions
    x = rand(rows, shape.input_size)
    w_ih = rand(shape.hidden, shape.input_size) / shape.input_size**0.5
    dz = rand(rows, directions * shape.hidden)[:, : shape.hidden]  # [N, H], row stride D*H
    y = rand(rows, shape.hidden).tanh()
    return {
        "projection": (x, w_ih.t(), rand(shape.hidden)),
        "input grad": (dz, w_ih, None),
        "dW_ih": (dz.t(), x, None),
        "dW_hh": (dz.t(), y, None),
    }


def use_variant(name: str | None) -> None:
    """launch's settings of variant `name` (launch.variant_settings; None: the plan's)."""
    for setting, value in launch.variant_settings(name).items():
        setattr(launch, setting, value)


def contender(name: str, a, b, bias):
    """A call of contender `name` on (a, b, bias)."""
    if name in TRITON_VARIANTS:

        def run():
            use_variant(name)
            try:
                return launch.gemm(a, b, bias=bias, tf32=True)
            finally:
                use_variant(None)

        return run
    tf32 = name == "cublas-tf32"

    def run_cublas():
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            return torch.addmm(bias, a, b) if bias is not None else torch.mm(a, b)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved

    return run_cublas


def tf32_error(got, a, b, bias) -> float:
    """|got - A @ B (- bias)| over 2^-9 (|A| @ |B|), the most of it (1: TF32's bound)."""
    want = a.double() @ b.double() + (bias.double() if bias is not None else 0)
    bound = 2.0**-9 * (a.double().abs() @ b.double().abs()) + 1e-30
    return ((got.double() - want).abs() / bound).max().item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shapes", default=",".join(NAMES), help="comma-separated names")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    grid = {shape.name: shape for shape in [*SHAPES, *GPU_SHAPES]}
    machine = machine_line(device, torch.float32)
    print(machine)
    print(f"| shape | GEMM (M, K, N) | {' | '.join(CONTENDERS)} (us; error / TF32 bound) |")
    print("|---|---|" + "---|" * len(CONTENDERS))
    rows = []
    gen = torch.Generator().manual_seed(3)
    for name in args.shapes.split(","):
        for gemm, (a, b, bias) in operands(grid[name], device, gen).items():
            calls = {c: contender(c, a, b, bias) for c in CONTENDERS}
            errors = {c: tf32_error(call(), a, b, bias) for c, call in calls.items()}
            valid = {c: call for c, call in calls.items() if errors[c] <= 1}
            timed = time_calls(valid, device, args.repeats, 0.01)
            timings = {c: t["median_s"] for c, t in timed.items()}
            size = (a.shape[0], a.shape[1], b.shape[1])
            rows.append({"shape": name, "gemm": gemm, "mkn": size, "errors": errors,
                         "seconds": timings})  # fmt: skip
            cells = [f"{timings[c] * 1e6:.1f}" if c in timings else "DROPPED" for c in calls]
            cells = [f"{cell} ({errors[c]:.2g})" for cell, c in zip(cells, calls, strict=True)]
            print(f"| {name} | {gemm} {size} | {' | '.join(cells)} |", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"machine": machine, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
