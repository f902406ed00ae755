"""GPU kernels launched per call, fastrnn (Triton) vs nn.RNN (cuDNN), inference and a
training step (the benchmark's, whose loss reads both outputs, and one whose loss reads
the output alone, as most training loops do), from torch.profiler.  Prints a markdown
table; --json writes it.

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


MODES = ("inference", "training", "training, h_n unused")


def run_step(contender, x, mode: str) -> None:
    if mode != "training, h_n unused":
        step(contender, x, mode)
        return
    for p in contender.parameters:
        p.grad = None
    out, _ = contender.run(x)
    out.sum().backward()


def kernels_per_call(contender, x, mode) -> tuple[int, list[str]]:
    run_step(contender, x, mode)  # compile and warm up outside the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run_step(contender, x, mode)
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
        for mode in MODES:
            fast, cudnn = make_contenders(shape, device, dtype, ["fastrnn", "nn.RNN"])
            n_fast, fast_names = kernels_per_call(fast, x, mode)
            n_cudnn, cudnn_names = kernels_per_call(cudnn, x, mode)
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
