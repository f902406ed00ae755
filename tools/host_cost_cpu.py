"""The Triton path's host cost per call, measured without a GPU: the module, the op
(dispatcher and C++ autograd) and the launch functions run on CPU tensors exactly as
they would on CUDA ones, with every kernel launch taken as if from its kept compiled
kernel and then skipped.  What it times is the Python and ATen work around the
kernels, on this machine's CPU (torch ops on CPU tensors, not CUDA ones: a CUDA
allocation or GEMM costs its host more); a GPU run (tools/gpu_call_profile.py) times
the real thing.

    python tools/host_cost_cpu.py [--threads N] [--json host-cost.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
import warnings
from types import SimpleNamespace

import torch
import triton
from gpu_call_profile import replayed_launches  # tools/, beside this script
from torch.nn.utils.rnn import pack_padded_sequence
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend

import fastrnn
from fastrnn import _C
from fastrnn.bench.report import machine_line
from fastrnn.triton import kernels, launch, registration

# name: (T, B, I, H, layers, bidirectional): the tutorial sizes of the GPU grid, two
# multi-layer ones, and one long enough for GEMMs (the input projection, the weight
# gradients) at a size where they cost this CPU little.
SHAPES = {
    "hello": (5, 1, 4, 8, 1, False),
    "single-step": (1, 1, 64, 128, 1, False),
    "regression2L": (10, 32, 5, 20, 2, False),
    "bi2L-tiny": (3, 4, 8, 16, 2, True),
    "gemms-tiny": (40, 2, 4, 8, 1, False),
}

# The same calls on the cooperative tier (where fp32 and fp16 run H above 256 at most
# batches): its launches are cooperative, with workspaces and barrier counters a call.
COOPERATIVE_SHAPES = ("hello", "bi2L-tiny")


def stand_in_compile(kernel, *arguments, grid, warmup, **meta):
    """kernel[grid](...), compiling nothing and launching nothing: what keep_compiled reads
    of a compiled kernel, with the signature Triton's JIT specialises these arguments to
    (an integer 1 a constexpr), and the cooperative tier's kernels launched cooperatively,
    as on a GPU (launch._cooperative_launch; the interpreter's launches are not).
    tests/test_launch_replay.py's stand-in kernels too."""
    signature = {
        name: native_specialize_impl(BaseBackend, arguments[i], False, True, True)[0]
        if i < len(arguments) else "constexpr"
        for i, name in enumerate(kernel.arg_names)
    }  # fmt: skip
    metadata = SimpleNamespace(
        num_warps=meta.get("num_warps", 4), shared=12288, num_ctas=1,
        launch_cooperative_grid="cooperative" in kernel.__name__, launch_pdl=False,
        global_scratch_size=0, profile_scratch_size=0,
    )  # fmt: skip
    function = hash((id(kernel), *signature.values())) % 2**48  # one per specialisation
    return SimpleNamespace(metadata=metadata, src=SimpleNamespace(signature=signature),
                           run=None, function=function, packed_metadata=None)  # fmt: skip


def compile_stand_ins() -> list[tuple]:
    """(object, attribute, stand-in) that make every kernel[grid](...) stand_in_compile:
    Triton's JITFunction and the interpreter's kernel type (TRITON_INTERPRET=1)."""

    def stand_in(kernel, grid):
        return functools.partial(stand_in_compile, kernel, grid=grid, warmup=False)

    kernel_types = {triton.runtime.JITFunction, type(kernels.rnn_forward_persistent_kernel)}
    return [(kernel_type, "__getitem__", stand_in) for kernel_type in kernel_types]


REPLAYED = []  # the replayed launches, in place of the driver's


def skip_kernels() -> None:
    """Every launch as a kept kernel's on device 0 (launch.launch_kernel keeps a
    stand_in_compile), whose launcher does nothing; replayed launches
    (launch.REPLAY_LAUNCHES) go to REPLAYED."""
    launch._launches_directly = lambda kernel, tensor: True
    for owner, name, stand_in in compile_stand_ins():
        setattr(owner, name, stand_in)
    launch._launch_kept = lambda *args: None
    torch.cuda.current_device = lambda: 0
    _C.replay_launches_to(REPLAYED)
    with warnings.catch_warnings():  # the Triton path's kernels for CPU tensors
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        skip_kernels.kernels = registration.register("cpu")  # alive as long as the process


CALLS_SCALE = 1.0  # --smoke: a few calls, to check the tool runs (tests)


def host_us(fn, calls: int, repeats: int = 7) -> float:
    """Median over repeats of the wall time per call of `calls` calls."""
    calls = max(1, int(calls * CALLS_SCALE))
    for _ in range(calls // 10 + 10):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
        REPLAYED.clear()
    return statistics.median(samples)


def replayed(fn):
    """fn with launch.REPLAY_LAUNCHES on."""

    def run():
        with replayed_launches():
            return fn()

    return run


def measure(name: str) -> dict:
    steps, batch, inputs, hidden, layers, bidirectional = SHAPES[name]
    torch.manual_seed(0)
    rnn = fastrnn.RNN(inputs, hidden, num_layers=layers, bidirectional=bidirectional)
    x = torch.randn(steps, batch, inputs)
    weights = list(rnn._flat_weights)
    args = (weights, None, layers, bidirectional, False)
    row = {"shape": name}
    with torch.no_grad():
        row["module"] = host_us(lambda: rnn(x), 3000)
        row["module, replayed"] = host_us(replayed(lambda: rnn(x)), 3000)
        op = torch.ops.fastrnn.rnn_forward.default
        row["op"] = host_us(lambda: op(x, None, *args), 3000)
        row["forward launch fn"] = host_us(lambda: launch.rnn_forward_triton(x, None, *args), 3000)
        output, h_n, layer_outputs = launch.rnn_forward_triton(x, None, *args)
    grad_output, grad_h_n = torch.randn_like(output), torch.randn_like(h_n)
    row["backward launch fn"] = host_us(
        lambda: launch.rnn_backward_triton(grad_output, grad_h_n, x, None, weights, None, output,
                                           layer_outputs, layers, bidirectional, False, False),
        1000,
    )  # fmt: skip

    def train():
        out, h = rnn(x)
        (out.sum() + h.sum()).backward()

    row["training step"] = host_us(train, 1000)
    row["training step, replayed"] = host_us(replayed(train), 1000)
    return row


# name: (lengths, I, H, layers, bidirectional): packed sequences, module and training only.
PACKED_SHAPES = {
    "packed": ([10, 7, 3, 1], 8, 16, 1, False),
    "packed bi2L": ([10, 7, 3, 1], 8, 16, 2, True),
    "packed B32": ([50 - 49 * i // 31 for i in range(32)], 16, 32, 1, False),  # 50 to 1 steps
}


def measure_packed(name: str) -> dict:
    lengths, inputs, hidden, layers, bidirectional = PACKED_SHAPES[name]
    torch.manual_seed(0)
    rnn = fastrnn.RNN(inputs, hidden, num_layers=layers, bidirectional=bidirectional)
    x = pack_padded_sequence(torch.randn(lengths[0], len(lengths), inputs), lengths)
    row = {"shape": name}
    with torch.no_grad():
        row["module"] = host_us(lambda: rnn(x), 3000)

    def train():
        out, h = rnn(x)
        (out.data.sum() + h.sum()).backward()

    row["training step"] = host_us(train, 1000)
    return row


def print_table(rows: list[dict]) -> None:
    columns = [c for c in rows[0] if c != "shape"]
    print("| shape | " + " | ".join(f"{c} µs" for c in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for row in rows:
        print(f"| {row['shape']} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke", action="store_true", help="a few calls each (no timing)")
    args = parser.parse_args()
    global CALLS_SCALE
    CALLS_SCALE = 0.002 if args.smoke else 1.0
    torch.set_num_threads(args.threads)
    skip_kernels()
    machine = machine_line(torch.device("cpu"), torch.float32).split("; fastrnn backend")[0]
    machine += "; Triton launch functions on CPU tensors, kernel launches skipped"
    print(machine)
    rows = [measure(name) for name in SHAPES]
    launch.apply_settings({"FORCE_TIER": "cooperative"})  # the plans kept so far dropped
    rows += [{**measure(name), "shape": f"{name}, cooperative"} for name in COOPERATIVE_SHAPES]
    launch.apply_settings({"FORCE_TIER": None})
    print_table(rows)
    packed_rows = [measure_packed(name) for name in PACKED_SHAPES]
    print_table(packed_rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rows": rows + packed_rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
