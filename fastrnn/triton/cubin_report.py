"""Compile every kernel configuration the dispatcher can choose down to cubin, without a
GPU, and report shared memory, registers and spills per target.

    python -m fastrnn.triton.cubin_report            # sm_80 and sm_90

Run it without TRITON_INTERPRET=1 (the interpreter replaces the kernels it compiles).

The interpreter cannot show shared-memory or register budgets; this does.  The tests
(tests/test_triton_cubin.py) assert each configuration's shared memory fits the target.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastrnn.triton import kernels, launch

# Shared memory a block may use (opt-in maximum): A100 (sm_80) and H100 (sm_90).
SHARED_MEMORY_LIMIT = {80: 166_912, 90: 232_448}
TRITON_DTYPE = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
}


@dataclasses.dataclass(frozen=True)
class Config:
    kernel: str  # "forward_persistent", "backward_persistent", "forward_step", "backward_step"
    dtype: torch.dtype
    block_h: int  # persistent: the whole padded H; stepwise: BLOCK_N
    num_warps: int

    def describe(self) -> str:
        return f"{self.kernel} {TRITON_DTYPE[self.dtype]} H<={self.block_h} warps={self.num_warps}"


def configurations() -> list[Config]:
    """Every (kernel, dtype, tile) launch.plan can pick."""
    configs = []
    for dtype in TRITON_DTYPE:
        hidden = 1
        seen = set()
        while True:
            p = launch.plan(hidden, dtype)
            if p.tier != "persistent":
                break
            if p.block_h not in seen:
                seen.add(p.block_h)
                for kernel in ("forward_persistent", "backward_persistent"):
                    configs.append(Config(kernel, dtype, p.block_h, p.num_warps))
            hidden = p.block_h + 1
        step = launch.plan(hidden, dtype)
        for kernel in ("forward_step", "backward_step"):
            configs.append(Config(kernel, dtype, launch.STEP_BLOCK_N, step.num_warps))
    return configs


def compile_config(config: Config, capability: int):
    dt = TRITON_DTYPE[config.dtype]
    acc = launch.ACC_DTYPE[config.dtype]
    ptr = f"*{dt}"
    common = {"RELU": False, "BLOCK_B": launch.BLOCK_B, "ACC_DTYPE": acc, "DOT_PRECISION": "ieee"}
    if config.kernel.endswith("persistent"):
        fn = (
            kernels.rnn_forward_persistent_kernel
            if config.kernel.startswith("forward")
            else kernels.rnn_backward_persistent_kernel
        )
        constexprs = {**common, "REVERSE": False, "BLOCK_H": config.block_h}
        scalars = ["stride_y", "T", "B", "H"]
    else:
        fn = (
            kernels.rnn_forward_step_kernel
            if config.kernel.startswith("forward")
            else kernels.rnn_backward_step_kernel
        )
        constexprs = {**common, "BLOCK_N": launch.STEP_BLOCK_N, "BLOCK_K": launch.STEP_BLOCK_K}
        scalars = ["stride_y", "t", "B", "H"]
    arg_names = fn.arg_names
    signature = {}
    pointer_args = [a for a in arg_names if a.endswith("_ptr")]
    for name in arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in ("batch_sizes_ptr", "offsets_ptr"):
            signature[name] = "*i64"
        elif name in pointer_args:
            # State buffers of the stepwise tier are fp32 (fp64 for fp64), others dtype.
            state = name in ("h_in_ptr", "h_out_ptr", "dh_in_ptr", "dh_out_ptr")
            signature[name] = ("*fp64" if dt == "fp64" else "*fp32") if state else ptr
        elif name in scalars:
            signature[name] = "i32"
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    return triton.compile(
        source,
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": config.num_warps},
    )


def ptxas_usage(compiled, capability: int) -> tuple[int, int]:
    """(registers per thread, spill bytes) from ptxas -v on the kernel's PTX."""
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(capability).path
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(compiled.asm["ptx"])
        arch = f"sm_{capability}a" if capability == 90 else f"sm_{capability}"
        out = subprocess.run(
            [ptxas, "-v", f"--gpu-name={arch}", path, "-o", os.devnull],
            capture_output=True,
            text=True,
            check=True,
        )
    text = out.stderr + out.stdout
    regs = int(re.search(r"Used (\d+) registers", text).group(1))
    spills = sum(int(s) for s in re.findall(r"(\d+) bytes spill (?:stores|loads)", text))
    return regs, spills


def main() -> int:
    """Print the table; exit 1 if any configuration exceeds its target's shared memory."""
    over = []
    print("| kernel | target | shared memory (bytes) | limit | registers/thread | spill bytes |")
    print("|---|---|---|---|---|---|")
    for capability in (80, 90):
        for config in configurations():
            compiled = compile_config(config, capability)
            regs, spills = ptxas_usage(compiled, capability)
            shared = compiled.metadata.shared
            print(
                f"| {config.describe()} | sm_{capability} | {shared} | "
                f"{SHARED_MEMORY_LIMIT[capability]} | {regs} | {spills} |"
            )
            if shared > SHARED_MEMORY_LIMIT[capability]:
                over.append(f"{config.describe()} on sm_{capability}: {shared} bytes")
    for line in over:
        print(f"OVER THE SHARED-MEMORY LIMIT: {line}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
