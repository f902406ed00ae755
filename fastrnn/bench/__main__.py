"""Benchmark: fastrnn vs nn.RNN (ATen on CPU, cuDNN on GPU) vs the naive Python loop.

    python -m fastrnn.bench                 # default grid, CPU, float32
    python -m fastrnn.bench --quick --json out.json --plot out.png
    python -m fastrnn.bench --device cuda --dtype float16

Every contender is validated against nn.RNN in float64 before it is timed (a wrong
result aborts that row).  Timings alternate contenders inside each repeat and report the
median and the spread (interquartile range) of the repeats, so load on a shared machine
hits all contenders alike.  The same definitions drive benchmarks/test_bench.py.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import torch

from fastrnn.bench.contenders import default_contenders
from fastrnn.bench.measure import run_grid
from fastrnn.bench.report import machine_line, markdown_table, plot, summary_lines
from fastrnn.bench.shapes import GPU_SHAPES, QUICK, SHAPES, default_grid


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastrnn.bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"]
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument(
        "--shapes",
        default=None,
        help=f"comma-separated names from: {', '.join(s.name for s in SHAPES + GPU_SHAPES)}",
    )
    p.add_argument("--modes", default="inference,training")
    p.add_argument(
        "--contenders",
        default=None,
        help="comma-separated: fastrnn, fastrnn:<backend>, nn.RNN, naive, naive-compiled",
    )
    p.add_argument("--quick", action="store_true", help="tutorial and small shapes, fewer repeats")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--json", default=None, help="write every raw number here")
    p.add_argument("--plot", default=None, help="write a speedup PNG here (needs matplotlib)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    by_name = {s.name: s for s in SHAPES + GPU_SHAPES}
    if args.shapes:
        unknown = [n for n in args.shapes.split(",") if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown shapes {unknown}; choose from {list(by_name)}")
        shapes = [by_name[n] for n in args.shapes.split(",")]
    else:
        shapes = [by_name[n] for n in QUICK] if args.quick else default_grid(device)
    names = args.contenders.split(",") if args.contenders else default_contenders(device)
    repeats = args.repeats or (5 if args.quick else 7)
    target_s = 0.02 if args.quick else 0.05
    modes = args.modes.split(",")
    machine = machine_line(device, dtype)
    print(machine, flush=True)
    rows = []  # the rows measured, kept as each ends

    def row_done(peak, grid_rows):
        rows[:] = grid_rows
        if args.json:  # after each row, so that a run stopped part way keeps its rows
            write_json(args.json, machine, peak, names, rows)

    previous_handler = signal.signal(signal.SIGTERM, stop)  # `timeout`'s: report rows done
    try:
        run_grid(shapes, modes, device, dtype, names, repeats, target_s,
                 log=lambda s: print(s, flush=True), on_row=row_done)  # fmt: skip
        stopped = False
    except KeyboardInterrupt:
        stopped = True
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    print()
    if stopped:
        print(f"STOPPED after {len(rows)} of {len(shapes) * len(modes)} rows: the table has those")
    print(markdown_table(rows, names, device))
    print()
    for line in summary_lines(rows):
        print(line)
    if args.plot and rows:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 1 if stopped or any("error" in r for r in rows) else 0


def stop(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def write_json(path: str, machine: str, peak: float, names: list[str], rows: list[dict]) -> None:
    with open(path, "w") as f:
        json.dump(
            {"machine": machine, "gemm_peak_gflops": peak, "contenders": names, "rows": rows},
            f,
            indent=1,
        )


if __name__ == "__main__":
    sys.exit(main())
