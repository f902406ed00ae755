"""Validation against float64 nn.RNN, then timing with contenders alternated."""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from fastrnn.bench.contenders import Contender, make_contenders, sequence_data, step
from fastrnn.bench.report import progress_line
from fastrnn.bench.shapes import Shape, make_input


class ValidationError(AssertionError):
    pass


def validation_errors(contenders: list[Contender], shape: Shape, mode: str, device,
                      dtype) -> tuple[dict[str, float], float]:  # fmt: skip
    """({contender: error}, allowance): each contender's largest error in its outputs (and
    parameter gradients in training) against nn.RNN in float64 with the same weights,
    relative to the larger of 1 and the reference's largest magnitude; the allowance is
    8x nn.RNN's own error (fp32: at least 1e-5)."""
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
    output, h_n = step(gold_c, x.double(), mode)
    gold_vals = [sequence_data(output), h_n]
    gold_vals += [p.grad for p in gold_c.parameters] if mode == "training" else []

    def errors(c):
        output, h_n = step(c, x, mode)
        vals = [sequence_data(output), h_n]
        vals += [p.grad for p in c.parameters] if mode == "training" else []
        errs = []
        for got, want in zip(vals, gold_vals, strict=True):
            scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
            errs.append((got.double() - want).abs().max().item() / scale if got.numel() else 0.0)
        return max(errs)

    measured = {c.name: errors(c) for c in contenders}
    floor = 1e-5 if dtype == torch.float32 else 1e-10
    allowed = max(floor, 8 * measured["nn.RNN"]) if "nn.RNN" in measured else floor
    return measured, allowed


def validate(contenders: list[Contender], shape: Shape, mode: str, device, dtype) -> None:
    """Raise ValidationError unless every contender is within the allowance
    (validation_errors)."""
    measured, allowed = validation_errors(contenders, shape, mode, device, dtype)
    for name, err in measured.items():
        if not err <= allowed:
            raise ValidationError(
                f"{name} on {shape.name}/{mode}: error {err:.3g} vs float64 nn.RNN "
                f"exceeds {allowed:.3g}"
            )


def saved_bytes(contender: Contender, x: Tensor | PackedSequence) -> int:
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
    input_ptr = sequence_data(x).untyped_storage().data_ptr()
    del out, h_n
    return sum(n for ptr, n in storages.items() if ptr not in params and ptr != input_ptr)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_contenders(contenders, shape, mode, device, dtype, repeats, target_s):
    """Median and IQR of per-call seconds of each contender's step (time_calls)."""
    x = make_input(shape, device, dtype)
    calls = {c.name: functools.partial(step, c, x, mode) for c in contenders}
    return time_calls(calls, device, repeats, target_s)


def time_calls(calls: dict, device, repeats: int, target_s: float) -> dict:
    """{name: median, IQR and samples of per-call seconds} of calls ({name: call}), the
    calls alternating inside every repeat, each repeat a batch of about target_s."""
    counts = {}
    for name, call in calls.items():  # warm up, then size each batch of calls
        call()
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        once = time.perf_counter() - start
        counts[name] = max(1, min(1000, int(target_s / max(once, 1e-7))))
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            n = counts[name]
            synchronize(device)
            start = time.perf_counter()
            for _ in range(n):
                call()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / n)
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


def run_grid(shapes, modes, device, dtype, contender_names, repeats, target_s, *, on_row,
             log=print):  # fmt: skip
    """Measures one row per shape and mode; after each, on_row(GEMM peak GFLOP/s, the
    rows so far), which is where the caller takes them (a run cut short keeps its rows)."""
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
                on_row(peak, rows)
                continue
            timings = time_contenders(contenders, shape, mode, device, dtype, repeats, target_s)
            row = {"shape": dataclasses.asdict(shape), "mode": mode, "timings": timings}
            flops = shape.forward_flops() * (3 if mode == "training" else 1)
            fast = timings.get("fastrnn")
            if fast is not None:
                row["tokens_per_s"] = shape.rows / fast["median_s"]
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
            on_row(peak, rows)
