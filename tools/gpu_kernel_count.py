"""GPU kernels launched per call, fastrnn (Triton) vs nn.RNN (cuDNN), inference and a
training step (the benchmark's, whose loss reads both outputs, and one whose loss reads
the output alone, as most training loops do; at tutorial sizes also a batch_first
module's under a linear head, as examples/seq_regression.py trains), from
torch.profiler.  Prints a markdown table; --json writes it.

    python tools/gpu_kernel_count.py --json gpu-results/kernels.json
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile

import fastrnn
from fastrnn.bench.contenders import make_contenders, step
from fastrnn.bench.shapes import GPU_SHAPES, SHAPES, make_input

NAMES = ["hello", "single-step", "pattern25", "small", "long", "fastrnns", "bi2L", "H2048"]
BATCH_FIRST_NAMES = ["hello", "single-step", "pattern25", "small"]


BATCH_FIRST = "training, batch_first, linear head"
MODES = ("inference", "training", "training, h_n unused", BATCH_FIRST)


def run_step(contender, x, mode: str, head: torch.nn.Linear) -> None:
    """One call in `mode`; BATCH_FIRST: x is [B, T, I], and the head's gradient reaches
    the output dense and batch-major, as a batch_first model's does."""
    if mode in ("inference", "training"):
        step(contender, x, mode)
        return
    for p in contender.parameters:
        p.grad = None
    if mode == BATCH_FIRST:
        contender.module.batch_first = True
        try:
            out, _ = contender.run(x)
        finally:
            contender.module.batch_first = False
        head(out).square().mean().backward()
        return
    out, _ = contender.run(x)
    out.sum().backward()


def kernels_per_call(contender, x, mode, head) -> tuple[int, list[str]]:
    run_step(contender, x, mode, head)  # compile and warm up outside the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run_step(contender, x, mode, head)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(names), names


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device, dtype = torch.device("cuda"), torch.float32
    by_name = {s.name: s for s in SHAPES + GPU_SHAPES}
    rows = []
    print("| shape | mode | fastrnn kernels | nn.RNN kernels |")
    print("|---|---|---|---|")
    for name in NAMES:
        shape = by_name[name]
        x = make_input(shape, device, dtype)
        head = torch.nn.Linear(shape.directions * shape.hidden, 1, device=device, dtype=dtype)
        for mode in MODES if name in BATCH_FIRST_NAMES else MODES[:-1]:
            x_mode = x.transpose(0, 1).contiguous() if mode == BATCH_FIRST else x
            fast, cudnn = make_contenders(shape, device, dtype, ["fastrnn", "nn.RNN"])
            n_fast, fast_names = kernels_per_call(fast, x_mode, mode, head)
            n_cudnn, cudnn_names = kernels_per_call(cudnn, x_mode, mode, head)
            rows.append({"shape": name, "mode": mode, "fastrnn": n_fast, "nn.RNN": n_cudnn,
                         "fastrnn_kernels": fast_names, "nn.RNN_kernels": cudnn_names})  # fmt: skip
            print(f"| {name} | {mode} | {n_fast} | {n_cudnn} |", flush=True)
            if args.json:  # after each row: a run cut short keeps what it counted
                with open(args.json, "w") as f:
                    json.dump({"triton_backend": fastrnn.get_backend(), "rows": rows}, f,
                              indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
