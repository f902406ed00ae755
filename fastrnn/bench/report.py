"""What a benchmark run prints and writes: machine line, table, summary, plot."""

from __future__ import annotations

import math
import os
import platform

import torch

import fastrnn
from fastrnn.bench.shapes import MODES, Shape


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
        if dtype == torch.float32:  # nn.RNN and fastrnn follow this flag on a GPU
            from fastrnn.triton.launch import tf32_allowed

            parts.append(f"TF32 {'on' if tf32_allowed() else 'off'}")
    parts.append(f"torch {torch.__version__}")
    try:
        import triton

        parts.append(f"triton {triton.__version__}")
    except ImportError:
        parts.append("triton not installed")
    parts.append(f"dtype {str(dtype).replace('torch.', '')}")
    parts.append(f"fastrnn backend {fastrnn.backend.resolve(device, dtype)}")
    return "Machine: " + "; ".join(parts)


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
