"""fp32's GEMMs outside the recurrence, one at a time, on a GPU: cuBLAS in IEEE fp32 (what
fastrnn runs by default), cuBLAS on TF32 (torch's global matmul flag, which the package
cannot set per call) and fastrnn's own TF32 kernel (launch.gemm, kernels.gemm_tf32_kernel)
with its tiles' settings as planned and varied (K 64 rows a block, 4 blocks in flight, K
never split).  The GEMMs of layer 0 of each fp32 throughput shape, with the operands'
layouts the launch functions pass: the input projection (x @ W_ih^T + b_ih), the input
gradient (dZ @ W_ih), dW_ih (dZ^T @ x) and dW_hh (dZ^T @ y); dZ's rows at a
bidirectional layer's stride.  Each result is validated first (its error against the
float64 product, in units of the TF32 bound 2^-9 (|A| @ |B|): at most 1, or it is
dropped), then the contenders are timed alternated, median of --repeats.  So
launch.GEMM_BLOCK_K, GEMM_STAGES and GEMM_MIN_SPLIT_K are set from measurement.  Prints a
markdown table (microseconds a GEMM); --json writes every number.

    python tools/gpu_gemm_ab.py --json gpu-results/gemms.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from fastrnn.bench.report import machine_line
from fastrnn.bench.shapes import GPU_SHAPES, SHAPES
from fastrnn.triton import launch

# The fp32 shapes whose GEMMs run outside the recurrence kernels (their sequences are
# longer than launch.PROJECT_INPUT_MAX_STEPS).
NAMES = ("small", "medium", "fastrnns", "wide", "large", "bi2L", "H2048", "bigbatch")
# fastrnn's TF32 kernel as planned, and with one tile setting changed.
TRITON_VARIANTS = {
    "triton": {},
    "triton-k64": {"GEMM_BLOCK_K": 64},
    "triton-s4": {"GEMM_STAGES": 4},
    "triton-nosplit": {"GEMM_MIN_SPLIT_K": 1 << 62},
}
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


def contender(name: str, a, b, bias):
    """A call of contender `name` on (a, b, bias)."""
    if name.startswith("triton"):
        settings = TRITON_VARIANTS[name]

        def run():
            saved = {s: getattr(launch, s) for s in settings}
            for setting, value in settings.items():
                setattr(launch, setting, value)
            try:
                return launch.gemm(a, b, bias=bias, tf32=True)
            finally:
                for setting, value in saved.items():
                    setattr(launch, setting, value)

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


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(calls: dict, device, repeats: int, target_s: float = 0.01) -> dict:
    """Median seconds a call of each of `calls` ({name: call}), alternated per repeat."""
    counts = {}
    for name, call in calls.items():
        call()
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        counts[name] = max(1, min(1000, int(target_s / max(time.perf_counter() - start, 1e-7))))
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(counts[name]):
                call()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / counts[name])
    return {name: statistics.median(s) for name, s in samples.items()}


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
            timings = time_calls({c: calls[c] for c in calls if errors[c] <= 1}, device,
                                 args.repeats)  # fmt: skip
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
