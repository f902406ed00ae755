"""Where an inference call's time goes at small shapes, on a GPU: each layer of the
chain timed alone, back to back without a sync (host time per call when the GPU keeps
up), beside the GPU time of the same call replayed from a CUDA graph, and nn.RNN.

    python tools/gpu_call_profile.py --json gpu-results/calls.json
    python tools/gpu_call_profile.py --cprofile     (the host functions that take the time)

Layers: the module (fastrnn.RNN), the op (torch.ops.fastrnn.rnn_forward) and the launch
function (rnn_forward_triton, no dispatcher or autograd); the module again with its
launches replayed from C++ (launch.REPLAY_LAUNCHES), and with every kernel
launched through JITFunction.run (launch.DIRECT_LAUNCH off); training steps (forward,
sum, backward) of nn.RNN and the module, those three ways, and steps whose loss reads
the output alone.  Then the host cost of single operations the launch functions make.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import statistics
import time

import torch

import fastrnn
from fastrnn.bench.report import machine_line
from fastrnn.triton import launch

SHAPES = {"hello": (5, 1, 4, 8), "single-step": (1, 1, 64, 128), "small": (100, 32, 64, 128)}


def host_us(fn, calls: int = 200, repeats: int = 7) -> float:
    """Median over repeats of the wall time per call of `calls` calls, then a sync."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def graph_us(fn, replays: int = 200) -> float:
    """GPU time per call from CUDA-graph replays (no host launch cost)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays * 1e3


def profile(name: str, dtype: torch.dtype) -> dict:
    steps, batch, inputs, hidden = SHAPES[name]
    torch.manual_seed(0)
    rnn = fastrnn.RNN(inputs, hidden, device="cuda", dtype=dtype)
    ref = torch.nn.RNN(inputs, hidden, device="cuda", dtype=dtype)
    ref.load_state_dict(rnn.state_dict())
    x = torch.randn(steps, batch, inputs, device="cuda", dtype=dtype)
    weights = list(rnn._flat_weights)
    op = torch.ops.fastrnn.rnn_forward.default
    row = {"shape": name, "dtype": str(dtype).removeprefix("torch.")}
    with torch.no_grad(), fastrnn.use_backend("triton"):
        row["nn.RNN"] = host_us(lambda: ref(x))
        row["module"] = host_us(lambda: rnn(x))
        with replayed_launches():
            row["module (replayed)"] = host_us(lambda: rnn(x))
        with jit_launches():
            row["module (JIT)"] = host_us(lambda: rnn(x))
        row["op"] = host_us(lambda: op(x, None, weights, None, 1, False, False))
        row["launch fn"] = host_us(
            lambda: launch.rnn_forward_triton(x, None, weights, None, 1, False, False)
        )
        for column, fn in (("gpu (graph)", lambda: rnn(x)), ("nn.RNN gpu (graph)", lambda: ref(x))):
            try:
                row[column] = graph_us(fn)
            except RuntimeError as error:  # a failed capture is a result too
                print(f"{name} {dtype} {column}: capture failed: {error}")
                row[column] = float("nan")
    x_grad = x.clone().requires_grad_()

    def train(module):
        out, h_n = module(x_grad)
        (out.sum() + h_n.sum()).backward()

    def train_on_output(module):  # h_n unused, as in most training loops
        out, _ = module(x_grad)
        out.square().sum().backward()

    with fastrnn.use_backend("triton"):
        row["train nn.RNN"] = host_us(lambda: train(ref), calls=50)
        row["train module"] = host_us(lambda: train(rnn), calls=50)
        with replayed_launches():
            row["train module (replayed)"] = host_us(lambda: train(rnn), calls=50)
        with jit_launches():
            row["train module (JIT)"] = host_us(lambda: train(rnn), calls=50)
        row["train on output nn.RNN"] = host_us(lambda: train_on_output(ref), calls=50)
        row["train on output module"] = host_us(lambda: train_on_output(rnn), calls=50)
    return row


@contextlib.contextmanager
def replayed_launches():
    launch.REPLAY_LAUNCHES = True
    try:
        yield
    finally:
        launch.REPLAY_LAUNCHES = False


@contextlib.contextmanager
def jit_launches():
    launch.DIRECT_LAUNCH = False
    try:
        yield
    finally:
        launch.DIRECT_LAUNCH = True


def op_costs() -> None:
    """Host µs of single operations at hello's size (fp32), back to back."""
    x = torch.randn(5, 4, device="cuda")
    w, b = torch.randn(8, 4, device="cuda"), torch.randn(8, device="cuda")
    rnn = fastrnn.RNN(4, 8, device="cuda")
    weights = [p.detach() for p in rnn._flat_weights]
    xp = torch.addmm(b, x, w.t())
    y, h_n = torch.empty(5, 8, device="cuda"), torch.empty(1, 1, 8, device="cuda")
    steps = launch.make_steps(x.view(5, 1, 4), None, 1)
    call = launch.call_key(weights)
    layer = launch.forward_launch(call, 8, 1, 5, 1, 5, True, 4, (4, 4), 8, False, True, False)
    layer_xp = None if layer.block_i else xp  # as the forward passes it

    def recurrence():
        launch.recurrence_forward(layer, layer_xp, x, [weights], y, None, h_n, None, steps)

    costs = {
        "torch.empty": lambda: torch.empty(5, 8, device="cuda"),
        "addmm": lambda: torch.addmm(b, x, w.t()),
        "sum(0)": lambda: xp.sum(0),
        "recurrence launch (direct)": recurrence,
    }
    for label, fn in costs.items():
        print(f"{label}: {host_us(fn):.1f} µs")
    with jit_launches():
        print(f"recurrence launch (JIT): {host_us(recurrence):.1f} µs")


def cprofile_calls(name: str = "hello", dtype: torch.dtype = torch.float32) -> None:
    """cProfile of fastrnn inference calls and training steps: the top host functions."""
    steps, batch, inputs, hidden = SHAPES[name]
    rnn = fastrnn.RNN(inputs, hidden, device="cuda", dtype=dtype)
    x = torch.randn(steps, batch, inputs, device="cuda", dtype=dtype)

    def inference():
        with torch.no_grad():
            rnn(x)

    def training():
        out, h_n = rnn(x)
        (out.sum() + h_n.sum()).backward()

    with fastrnn.use_backend("triton"):
        for label, fn, calls in (("inference", inference, 500), ("training", training, 200)):
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
            profiler.disable()
            print(f"== {name} {dtype} {label}: {calls} calls")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(22)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    if args.cprofile:
        cprofile_calls()
        return 0
    print(machine_line(torch.device("cuda"), torch.float32))
    op_costs()
    columns = [
        "nn.RNN", "module", "module (replayed)", "module (JIT)", "op", "launch fn",
        "gpu (graph)", "nn.RNN gpu (graph)", "train nn.RNN", "train module",
        "train module (replayed)", "train module (JIT)", "train on output nn.RNN",
        "train on output module",
    ]  # fmt: skip
    print("| shape | dtype | " + " | ".join(f"{c} µs" for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    rows = []
    for dtype in (torch.float32, torch.float16):
        for name in SHAPES:
            row = profile(name, dtype)
            rows.append(row)
            cells = " | ".join(f"{row[c]:.1f}" for c in columns)
            print(f"| {name} | {row['dtype']} | {cells} |")
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
