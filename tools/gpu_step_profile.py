"""Where a call's time goes on a GPU: its wall time against the time its kernels run.

For the grid's rows that lost to cuDNN at some dtype and mode (and hello, which only a
host bounds), fastrnn and nn.RNN, inference and the benchmark's training step: each
contender validated against fp64 nn.RNN first (fastrnn.bench.measure.validate); wall µs
per call as the benchmark times it (calls back to back, one sync a batch, contenders
alternated, median of repeats); device µs per call, the union of the call's kernel
intervals in torch.profiler's CUDA trace (kernels, copies and fills; overlapping ones
counted once), over calls back to back as timed; idle = wall - device, the time the GPU
waited for the host; and the kernels taking most device time.  A row whose device time
is near its wall time is bound by its kernels; one far under it, by its host.

    python tools/gpu_step_profile.py --json gpu-results/steps.json
    python tools/gpu_step_profile.py --rows small,bi2L --dtypes float16

On CPU tensors (--device cpu: fastrnn's C++ kernels) the profiler's CPU ops stand in for
kernels: a check of the tool's plumbing, for tests, not a measurement.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile

from fastrnn.bench.contenders import make_contenders, step
from fastrnn.bench.measure import ValidationError, synchronize, time_contenders, validate
from fastrnn.bench.report import machine_line
from fastrnn.bench.shapes import GPU_SHAPES, SHAPES, make_input

# 5c3bb6f's grid (docs/performance.md): below 1x somewhere in fp32 or fp16, and hello.
ROWS = ["hello", "regression2L", "small", "medium", "long", "fastrnns", "wide", "bi2L"]
PROFILED_CALLS = 5
TOP_KERNELS = 4


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals, in their unit."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def device_profile(contender, x, mode: str, device: torch.device) -> dict:
    """Device µs per call (busy_us of the kernels of PROFILED_CALLS calls back to back)
    and the TOP_KERNELS kernels by device time: [name, µs per call, launches per call]."""
    on_gpu = device.type == "cuda"
    activity = ProfilerActivity.CUDA if on_gpu else ProfilerActivity.CPU
    kind = torch.autograd.DeviceType.CUDA if on_gpu else torch.autograd.DeviceType.CPU
    step(contender, x, mode)  # compiled and warm outside the profile
    synchronize(device)
    with profile(activities=[activity]) as prof:
        for _ in range(PROFILED_CALLS):
            step(contender, x, mode)
        synchronize(device)
    events = [e for e in prof.events() if e.device_type == kind]
    if not on_gpu:  # the outermost ops only, as a GPU trace holds no nesting
        events = [e for e in events if e.cpu_parent is None]
    by_name: dict[str, list[float]] = {}
    for e in events:
        by_name.setdefault(e.name, []).append(e.time_range.elapsed_us())
    top = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:TOP_KERNELS]
    return {
        "device_us": busy_us([(e.time_range.start, e.time_range.end) for e in events])
        / PROFILED_CALLS,
        "kernels_per_call": len(events) / PROFILED_CALLS,
        "top": [[name, sum(us) / PROFILED_CALLS, len(us) / PROFILED_CALLS] for name, us in top],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated shape names")
    parser.add_argument("--dtypes", default="float32,float16", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    by_name = {s.name: s for s in SHAPES + GPU_SHAPES}
    machine = machine_line(device, torch.float32)  # dtypes vary by row, as the table says
    print(machine)
    print("| shape | dtype | mode | contender | wall µs | device µs | idle µs | kernels "
          "| top kernels (µs, launches per call) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.rows.split(","):
        shape = by_name[name]
        for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
            x = make_input(shape, device, dtype)
            for mode in ("inference", "training"):
                contenders = make_contenders(shape, device, dtype, ["fastrnn", "nn.RNN"])
                try:
                    validate(contenders, shape, mode, device, dtype)
                except ValidationError as error:  # not timed; the other rows still are
                    rows.append({"shape": name, "dtype": str(dtype), "mode": mode,
                                 "failed": str(error)})  # fmt: skip
                    print(f"| {name} | {dtype} | {mode} | FAILED: {error} |", flush=True)
                    continue
                walls = time_contenders(contenders, shape, mode, device, dtype, args.repeats,
                                        0.02)  # fmt: skip
                for contender in contenders:
                    wall = walls[contender.name]["median_s"] * 1e6
                    row = {"shape": name, "dtype": str(dtype), "mode": mode,
                           "contender": contender.name, "wall_us": wall,
                           **device_profile(contender, x, mode, device)}  # fmt: skip
                    rows.append(row)
                    top = "; ".join(f"{k[:40]} {us:.1f}, {n:g}" for k, us, n in row["top"])
                    print(f"| {name} | {dtype} | {mode} | {contender.name} | {wall:.1f} | "
                          f"{row['device_us']:.1f} | {wall - row['device_us']:.1f} | "
                          f"{row['kernels_per_call']:g} | {top} |", flush=True)  # fmt: skip
                if args.json:  # after each row: a run cut short keeps what it measured
                    with open(args.json, "w") as f:
                        json.dump({"machine": machine, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
