"""Benchmark: fastrnn vs nn.RNN (ATen on CPU, cuDNN on GPU) vs the naive Python loop.

    python -m fastrnn.bench                 # default grid, CPU, float32
    python -m fastrnn.bench --quick --json out.json --plot out.png

Every contender is validated against nn.RNN in float64 before it is timed (a wrong
result aborts that row).  Timings alternate contenders inside each repeat and report the
median and the spread (interquartile range) of the repeats, so load on a shared machine
hits all contenders alike.  The same definitions drive benchmarks/test_bench.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor

import fastrnn


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    steps: int  # T
    batch: int  # B
    input_size: int  # I
    hidden: int  # H
    layers: int = 1
    bidirectional: bool = False
    nonlinearity: str = "tanh"

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def forward_flops(self) -> float:
        """Multiply-adds of the GEMMs (x2), all layers and directions."""
        rows = self.steps * self.batch
        total = 0
        for layer in range(self.layers):
            layer_in = self.input_size if layer == 0 else self.directions * self.hidden
            total += self.directions * 2 * rows * self.hidden * (layer_in + self.hidden)
        return float(total)

    def describe(self) -> str:
        extra = f" L{self.layers}" if self.layers > 1 else ""
        extra += " bi" if self.bidirectional else ""
        sizes = f"T={self.steps} B={self.batch} I={self.input_size} H={self.hidden}"
        return f"{self.name} ({sizes}{extra})"


SHAPES = [
    # Tutorial shapes: what RNN learners run.
    Shape("hello", 5, 1, 4, 8),
    Shape("pattern25", 25, 1, 4, 128),
    Shape("regression2L", 10, 32, 5, 20, layers=2),
    Shape("cell-loop", 3, 5, 4, 2),
    Shape("single-step", 1, 1, 64, 128),
    # Throughput shapes.
    Shape("small", 100, 32, 64, 128),
    Shape("medium", 100, 64, 256, 256),
    Shape("fastrnns", 100, 64, 512, 512),  # PyTorch's own fastrnns benchmark shape
    Shape("long", 1000, 8, 32, 64),
    Shape("wide", 50, 16, 128, 512),
    Shape("large", 50, 128, 512, 1024),
    Shape("bi2L", 100, 32, 128, 256, layers=2, bidirectional=True),
]
QUICK = ["hello", "pattern25", "regression2L", "cell-loop", "single-step", "small", "long"]
MODES = ("inference", "training")
TUTORIAL = {"hello", "pattern25", "regression2L", "cell-loop", "single-step"}


def naive_loop(
    x: Tensor, weights: list[Tensor], shape: Shape
) -> tuple[Tensor, Tensor]:  # [T, B, D*H], [L*D, B, H]
    """What RNN tutorials write: one cell step per time step and layer, outputs stacked."""
    act = torch.relu if shape.nonlinearity == "relu" else torch.tanh
    per_cell = len(weights) // (shape.layers * shape.directions)
    layer_input, finals = x, []
    for layer in range(shape.layers):
        direction_outputs = []
        for direction in range(shape.directions):
            cell = layer * shape.directions + direction
            w_ih, w_hh, b_ih, b_hh = weights[cell * per_cell : (cell + 1) * per_cell]
            h = x.new_zeros(x.shape[1], shape.hidden)
            outputs = []
            steps = range(x.shape[0]) if direction == 0 else reversed(range(x.shape[0]))
            for t in steps:
                h = act(layer_input[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
                outputs.append(h)
            if direction == 1:
                outputs.reverse()
            finals.append(h)
            direction_outputs.append(torch.stack(outputs))
        layer_input = torch.cat(direction_outputs, dim=2)
    return layer_input, torch.stack(finals)


@dataclasses.dataclass
class Contender:
    name: str
    module: torch.nn.Module | None  # None for the naive loop (it runs on `parameters`)
    run: Callable[[Tensor], tuple[Tensor, Tensor]]
    parameters: list[Tensor]


def make_contenders(
    shape: Shape, device: torch.device, dtype: torch.dtype, names: list[str]
) -> list[Contender]:
    torch.manual_seed(0)
    kwargs = dict(
        num_layers=shape.layers,
        bidirectional=shape.bidirectional,
        nonlinearity=shape.nonlinearity,
        device=device,
        dtype=dtype,
    )
    reference = torch.nn.RNN(shape.input_size, shape.hidden, **kwargs)
    state = reference.state_dict()
    contenders = []
    for name in names:
        if name == "nn.RNN":
            contenders.append(Contender(name, reference, reference, list(reference.parameters())))
        elif name.startswith("fastrnn"):
            module = fastrnn.RNN(shape.input_size, shape.hidden, **kwargs)
            module.load_state_dict(state)
            backend = name.partition(":")[2]
            if backend:

                def run(x, module=module, backend=backend):
                    with fastrnn.use_backend(backend):
                        return module(x)

            else:
                # Plain "fastrnn" is the module as users call it, on the backend in force
                # (the machine line names it); switching backends per call costs 0.8 µs.
                run = module
            contenders.append(Contender(name, module, run, list(module.parameters())))
        elif name in ("naive", "naive-compiled"):
            weights = [p.detach().clone().requires_grad_() for p in reference.parameters()]

            def loop(x, weights=weights):
                return naive_loop(x, weights, shape)

            run = torch.compile(loop, dynamic=False) if name == "naive-compiled" else loop
            contenders.append(Contender(name, None, run, weights))
        else:
            raise ValueError(f"unknown contender {name!r}")
    return contenders


def default_contenders(device: torch.device) -> list[str]:
    names = ["fastrnn", "nn.RNN", "naive"]
    if device.type == "cpu":
        names.insert(1, "fastrnn:reference")
    return names


def make_input(shape: Shape, device, dtype) -> Tensor:  # [T, B, I]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape.steps, shape.batch, shape.input_size, generator=gen)
    return x.to(device=device, dtype=dtype)


def step(contender: Contender, x: Tensor, mode: str):
    if mode == "inference":
        with torch.no_grad():
            return contender.run(x)
    for p in contender.parameters:
        p.grad = None
    out, h_n = contender.run(x)
    (out.sum() + h_n.sum()).backward()
    return out, h_n


class ValidationError(AssertionError):
    pass


def validate(contenders: list[Contender], shape: Shape, mode: str, device, dtype) -> None:
    """Each contender's outputs (and parameter gradients in training) against nn.RNN in
    float64 with the same weights.  fp32 allowance: 8x nn.RNN's own fp32 error, at least 1e-5."""
    x = make_input(shape, device, dtype)
    torch.manual_seed(0)
    gold = torch.nn.RNN(
        shape.input_size,
        shape.hidden,
        num_layers=shape.layers,
        bidirectional=shape.bidirectional,
        nonlinearity=shape.nonlinearity,
        device=device,
        dtype=torch.float64,
    )
    source = next(c for c in contenders if c.name == "nn.RNN" or c.module is not None)
    gold.load_state_dict(
        {
            k: v.double()
            for k, v in zip(gold.state_dict(), [p.detach() for p in source.parameters], strict=True)
        }
    )
    gold_c = Contender("gold", gold, gold, list(gold.parameters()))
    gold_out = step(gold_c, x.double(), mode)
    gold_vals = [*gold_out] + ([p.grad for p in gold_c.parameters] if mode == "training" else [])

    def errors(c):
        out = step(c, x, mode)
        vals = [*out] + ([p.grad for p in c.parameters] if mode == "training" else [])
        errs = []
        for got, want in zip(vals, gold_vals, strict=True):
            scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
            errs.append((got.double() - want).abs().max().item() / scale if got.numel() else 0.0)
        return max(errs)

    baseline = next((c for c in contenders if c.name == "nn.RNN"), None)
    floor = 1e-5 if dtype == torch.float32 else 1e-10
    allowed = max(floor, 8 * errors(baseline)) if baseline is not None else floor
    for c in contenders:
        err = errors(c)
        if not err <= allowed:
            raise ValidationError(
                f"{c.name} on {shape.name}/{mode}: error {err:.3g} vs float64 nn.RNN "
                f"exceeds {allowed:.3g}"
            )


def saved_bytes(contender: Contender, x: Tensor) -> int:
    """Bytes autograd keeps for backward (distinct storages), measured with saved-tensor hooks."""
    storages: dict[int, int] = {}

    def pack(t):
        if isinstance(t, Tensor) and t.device.type != "meta":
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    for p in contender.parameters:
        p.grad = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, h_n = contender.run(x)
    params = {p.untyped_storage().data_ptr() for p in contender.parameters}
    input_ptr = x.untyped_storage().data_ptr()
    del out, h_n
    return sum(n for ptr, n in storages.items() if ptr not in params and ptr != input_ptr)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_contenders(contenders, shape, mode, device, dtype, repeats, target_s):
    """Median and IQR of per-call seconds; contenders alternate inside every repeat."""
    x = make_input(shape, device, dtype)
    calls = {}
    for c in contenders:  # warm up, then size each contender's batch of calls
        step(c, x, mode)
        synchronize(device)
        start = time.perf_counter()
        step(c, x, mode)
        synchronize(device)
        once = time.perf_counter() - start
        calls[c.name] = max(1, min(1000, int(target_s / max(once, 1e-7))))
    samples = {c.name: [] for c in contenders}
    for _ in range(repeats):
        for c in contenders:
            n = calls[c.name]
            synchronize(device)
            start = time.perf_counter()
            for _ in range(n):
                step(c, x, mode)
            synchronize(device)
            samples[c.name].append((time.perf_counter() - start) / n)
    result = {}
    for name, s in samples.items():
        q = statistics.quantiles(s, n=4) if len(s) > 1 else [s[0], s[0], s[0]]
        result[name] = {"median_s": statistics.median(s), "iqr_s": q[2] - q[0], "samples": s}
    return result


def gemm_peak_gflops(device, dtype, size=1024, repeats=5) -> float:
    """This machine's measured GEMM rate (torch.mm of two size x size matrices)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b)
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * size**3 / best / 1e9


def machine_line(device: torch.device, dtype: torch.dtype) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    parts = [f"CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"]
    if device.type == "cuda":
        parts.append(f"GPU: {torch.cuda.get_device_name(device)}")
    parts.append(f"torch {torch.__version__}")
    try:
        import triton

        parts.append(f"triton {triton.__version__}")
    except ImportError:
        parts.append("triton not installed")
    parts.append(f"dtype {str(dtype).replace('torch.', '')}")
    parts.append(f"fastrnn backend {fastrnn.backend.resolve(device, dtype)}")
    return "Machine: " + "; ".join(parts)


def run_grid(shapes, modes, device, dtype, contender_names, repeats, target_s, log=print):
    peak = gemm_peak_gflops(device, dtype)
    log(f"GEMM peak (torch.mm 1024^3): {peak:.1f} GFLOP/s")
    rows = []
    for shape in shapes:
        for mode in modes:
            contenders = make_contenders(shape, device, dtype, contender_names)
            try:
                validate(contenders, shape, mode, device, dtype)
            except ValidationError as error:
                log(f"ABORTED {shape.name}/{mode}: {error}")
                rows.append({"shape": dataclasses.asdict(shape), "mode": mode, "error": str(error)})
                continue
            timings = time_contenders(contenders, shape, mode, device, dtype, repeats, target_s)
            row = {"shape": dataclasses.asdict(shape), "mode": mode, "timings": timings}
            flops = shape.forward_flops() * (3 if mode == "training" else 1)
            fast = timings.get("fastrnn")
            if fast is not None:
                row["tokens_per_s"] = shape.steps * shape.batch / fast["median_s"]
                row["gflops"] = flops / fast["median_s"] / 1e9
                row["peak_fraction"] = row["gflops"] / peak
                for other in ("nn.RNN", "naive"):
                    if other in timings:
                        row[f"speedup_vs_{other}"] = timings[other]["median_s"] / fast["median_s"]
            if mode == "training" and device.type == "cpu":
                x = make_input(shape, device, dtype)
                row["saved_bytes"] = {c.name: saved_bytes(c, x) for c in contenders}
            elif device.type == "cuda":
                row["peak_allocated_bytes"] = {}
                x = make_input(shape, device, dtype)
                for c in contenders:
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                    step(c, x, mode)
                    synchronize(device)
                    peak_bytes = torch.cuda.max_memory_allocated(device) - base
                    row["peak_allocated_bytes"][c.name] = peak_bytes
            rows.append(row)
            log(progress_line(row, contender_names))
    return peak, rows


def fmt_ms(t: dict) -> str:
    return f"{t['median_s'] * 1e3:.3f} ± {t['iqr_s'] * 1e3:.3f}"


def progress_line(row, names) -> str:
    cells = "  ".join(f"{n} {fmt_ms(row['timings'][n])} ms" for n in names if n in row["timings"])
    speed = "  ".join(
        f"x{row[k]:.2f} {k.removeprefix('speedup_')}" for k in row if k.startswith("speedup_vs")
    )
    return f"{row['shape']['name']:>13} {row['mode']:<9} {cells}  | fastrnn {speed}"


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def markdown_table(rows, names, device) -> str:
    memory_key = "saved_bytes" if device.type == "cpu" else "peak_allocated_bytes"
    memory_title = "saved for backward" if device.type == "cpu" else "peak allocated"
    header = (
        ["shape", "mode"]
        + [f"{n} ms" for n in names]
        + [
            "fastrnn tokens/s",
            "GFLOP/s (% peak)",
            "vs nn.RNN",
            "vs naive",
            f"{memory_title} fastrnn / nn.RNN",
        ]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        shape = Shape(**row["shape"])
        if "error" in row:
            lines.append(f"| {shape.describe()} | {row['mode']} | ABORTED: {row['error']} |")
            continue
        t = row["timings"]
        cells = [shape.describe(), row["mode"]]
        cells += [fmt_ms(t[n]) if n in t else "-" for n in names]
        cells.append(f"{row.get('tokens_per_s', 0):,.0f}")
        cells.append(f"{row.get('gflops', 0):.1f} ({100 * row.get('peak_fraction', 0):.0f}%)")
        for other in ("nn.RNN", "naive"):
            v = row.get(f"speedup_vs_{other}")
            cells.append(f"**{v:.2f}x**" if v is not None else "-")
        mem = row.get(memory_key, {})
        cells.append(
            f"{human_bytes(mem['fastrnn'])} / {human_bytes(mem['nn.RNN'])}"
            if "fastrnn" in mem and "nn.RNN" in mem
            else "-"
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_lines(rows) -> list[str]:
    out = []
    for mode in MODES:
        for other in ("nn.RNN", "naive"):
            vals = [
                r[f"speedup_vs_{other}"]
                for r in rows
                if r["mode"] == mode and f"speedup_vs_{other}" in r
            ]
            if vals:
                geo = math.exp(sum(math.log(v) for v in vals) / len(vals))
                spread = f"min {min(vals):.2f}x, max {max(vals):.2f}x over {len(vals)} shapes"
                out.append(f"{mode}: fastrnn vs {other}: geometric mean {geo:.2f}x, {spread}")
    return out


def plot(rows, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    names = list(dict.fromkeys(r["shape"]["name"] for r in rows if "error" not in r))
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 0.9), 4.5))
    width = 0.2
    series = [(m, o) for m in MODES for o in ("nn.RNN", "naive")]
    for i, (mode, other) in enumerate(series):
        vals = []
        for name in names:
            match = [r for r in rows if r["shape"]["name"] == name and r["mode"] == mode]
            vals.append(match[0].get(f"speedup_vs_{other}", 0) if match else 0)
        xs = [j + (i - 1.5) * width for j in range(len(names))]
        ax.bar(xs, vals, width, label=f"{mode} vs {other}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("fastrnn speedup (x, log scale)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


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
        help=f"comma-separated names from: {', '.join(s.name for s in SHAPES)}",
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
    by_name = {s.name: s for s in SHAPES}
    if args.shapes:
        unknown = [n for n in args.shapes.split(",") if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown shapes {unknown}; choose from {list(by_name)}")
        shapes = [by_name[n] for n in args.shapes.split(",")]
    else:
        shapes = [by_name[n] for n in QUICK] if args.quick else SHAPES
    names = args.contenders.split(",") if args.contenders else default_contenders(device)
    repeats = args.repeats or (5 if args.quick else 7)
    target_s = 0.02 if args.quick else 0.05
    modes = args.modes.split(",")
    print(machine_line(device, dtype), flush=True)
    peak, rows = run_grid(
        shapes, modes, device, dtype, names, repeats, target_s, log=lambda s: print(s, flush=True)
    )
    print()
    print(markdown_table(rows, names, device))
    print()
    for line in summary_lines(rows):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": machine_line(device, dtype),
                    "gemm_peak_gflops": peak,
                    "contenders": names,
                    "rows": rows,
                },
                f,
                indent=1,
            )
    if args.plot:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
