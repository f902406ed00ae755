"""Compile every kernel configuration the dispatcher can choose down to cubin, without a
GPU, and report shared memory, registers and spills (the stack frame, where ptxas
spills registers, and other local memory) per target; the TF32 GEMM's tiles too, where
tl.dot runs on tensor cores.  Each is built for
padded input as Triton specialises a launch with 16-byte aligned pointers and integers
that are multiples of 16 (H=64, say), and for packed input with neither (H=70); the
builds run in parallel over the machine's cores.

    python tools/cubin_report.py                 # sm_75, sm_80 and sm_90
    python tools/cubin_report.py --targets 70,86 # others of SHARED_MEMORY_LIMIT
    python tools/cubin_report.py --edges         # each family's largest and smallest H
    python tools/cubin_report.py --replay-parameters --targets 90   # replayed launches'

The whole report takes ~10 minutes on 2 cores with a cold Triton cache (~0.7 s a build);
--edges, what tests/test_triton.py runs, about half of that (747 builds).

Run it without TRITON_INTERPRET=1 (the interpreter replaces the kernels it compiles).

The interpreter cannot show shared-memory or register budgets; this does.  A developer
tool, outside the package; tests/test_triton.py runs it and checks every configuration
fits its target's shared memory, and every kernel that plan() chooses by a shared-memory
bound (launch.persistent_shared_memory, launch.cooperative_shared_memory) within it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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

# Shared memory a block may use (opt-in maximum) per target: V100, T4 (whose tl.dot
# Triton builds from FMAs: launch.device_tensor_core_dots), A100, consumer Ampere and
# Ada (RTX 30xx/40xx, L4), H100/H200, B200, consumer Blackwell (RTX 50xx).
SHARED_MEMORY_LIMIT = {70: 98_304, 75: 65_536, 80: 166_912, 86: 101_376, 89: 101_376,
                       90: 232_448, 100: 232_448, 120: 101_376}  # fmt: skip
DEFAULT_TARGETS = (75, 80, 90)
TRITON_DTYPE = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
}


@dataclasses.dataclass(frozen=True)
class Config:
    # "forward_persistent", "backward_persistent", "forward_cooperative", ...; "gemm":
    # kernels.gemm_tf32_kernel, its tile block_b x block_n (launch.gemm)
    kernel: str
    dtype: torch.dtype
    # persistent: the whole padded H; cooperative: the padded H with W_hh's columns on
    # chip, 0 with them streamed
    block_h: int
    num_warps: int
    precision: str = "ieee"  # tl.dot's input_precision (fp32 also runs "tf32x3")
    block_n: int = 0  # cooperative: hidden columns per tile
    split_k: int = 1  # cooperative: the product's K parts (launch.split_k)
    block_b: int = launch.BLOCK_B  # batch rows per program (persistent: fewer for FMAs)
    block_i: int = 0  # persistent forward: padded input size it projects itself (0: none)
    # persistent backward: computing the weight gradients and the input gradient too
    weight_grads: bool = False
    sum_in_parts: bool = False  # persistent, one row: launch.persistent_program's sums
    # persistent: how many steps ahead its inputs load on padded input (the same)
    steps_ahead: int = 1
    # persistent: one row past fma_rows' bound (launch.one_row_plan) on up to
    # launch.ONE_ROW_REGISTERS registers, "aligned" where the target runs it only with H
    # a multiple of 16 (its packed input built aligned too), "any" where at any H
    one_row: str = ""
    # cooperative forward: its tile loop pipelined, as where a program has several tiles
    # (launch.COOP_PIPELINE_ONE_TILE)
    pipeline_tiles: bool = False
    # cooperative, fp32 tf32x3 on streamed W_hh: Triton splitting W_hh at every chunk
    # rather than its parts split once (launch.COOP_W_LOW_PARTS)
    chunk_split: bool = False
    # cooperative: the state exchanged as tagged words, no grid barrier
    # (launch.COOP_TAGGED_EXCHANGE)
    tagged: bool = False

    def describe(self) -> str:
        dtype = TRITON_DTYPE[self.dtype] + (
            f" {self.precision}" if self.dtype == torch.float32 else ""
        )
        if self.kernel == "gemm":
            tile = f"tile {self.block_b}x{self.block_n}"
        elif self.kernel.endswith("cooperative"):
            tile = f"W on chip H<={self.block_h}" if self.block_h else "W streamed"
            tile += f" N={self.block_n} K parts={self.split_k}"
            if self.pipeline_tiles:
                tile += " tiles pipelined"
            if self.chunk_split:
                tile += " split each chunk"
            if self.tagged:
                tile += " tagged"
        else:
            tile = f"H<={self.block_h}"
            if self.block_b != launch.BLOCK_B:
                tile += f" rows={self.block_b}" + (" (FMA)" if self.block_b < 16 else "")
            if self.block_i:
                tile += f" projecting I<={self.block_i}"
            if self.weight_grads:
                tile += " with weight gradients"
            if self.sum_in_parts:
                tile += " sums in parts"
            if self.steps_ahead > 1:
                tile += f" {self.steps_ahead} steps ahead if padded"
            if self.one_row == "aligned":
                tile += " (H a multiple of 16)"
        return f"{self.kernel} {dtype} {tile} warps={self.num_warps}"


def tensor_core_dots(capability: int) -> bool:  # launch.device_tensor_core_dots's rule
    return capability // 10 >= launch.TENSOR_CORE_DOTS_MAJOR


def shared_memory_bound(config: Config, capability: int, aligned: bool = True) -> int | None:
    """The bound by which plan(), input_block(), weight_grads_rows() and one_row_plan()
    choose config (launch.persistent_shared_memory, launch.cooperative_shared_memory,
    launch.one_row_shared_memory: for an aligned build or not); None for streamed W_hh,
    which no bound chooses."""
    if not config.block_h:  # streamed W_hh, and the GEMM
        return None
    if config.one_row:
        quarters = aligned and capability // 10 >= launch.ONE_ROW_QUARTERS_MAJOR
        return launch.one_row_shared_memory(config.block_h, config.dtype, quarters)
    if config.kernel.endswith("persistent"):
        # FMA rows running the recurrence alone stage no dot operand (launch.plan).
        fma_only = config.block_b < launch.BLOCK_B and not (config.block_i or config.weight_grads)
        return launch.persistent_shared_memory(
            config.block_h, config.dtype, config.precision, config.block_i,
            config.weight_grads, tensor_core_dots(capability) or fma_only,
        )  # fmt: skip
    return launch.cooperative_shared_memory(config.block_h, config.dtype, config.precision,
                                            config.block_n, config.split_k)  # fmt: skip


def plan_configurations(p: launch.Plan, dtype: torch.dtype) -> list[Config]:
    """The kernels that plan p runs, forward and backward; on the persistent tier also
    its programs computing the weight gradients on tl.dot's rows (16, and the most:
    launch.weight_grads_rows), and on FMA rows (one, and the most: the most registers)
    with launch.persistent_program's warps and sums, computing the weight gradients too
    or projecting the largest input (launch.input_block; the most registers for W_ih)
    on one row."""
    tile = p.block_h if p.tier == "persistent" or p.w_on_chip else 0
    precision = p.precision  # plain TF32 where tf32x3 would stream (launch.plan)
    if p.one_row:  # its other programs are its forced plan's, built with that
        program = launch.persistent_program(p, 1)
        return [Config(f"{direction}_persistent", dtype, tile, program["num_warps"], precision,
                       block_b=1, sum_in_parts=True, steps_ahead=program["STEPS_AHEAD"],
                       one_row="aligned") for direction in ("forward", "backward")]  # fmt: skip
    split = 1
    if p.tier == "cooperative":
        split = launch.split_k(dtype, precision, tile, tensor_core_dots=p.tensor_core_dots)
    configs = []
    for direction in ("forward", "backward"):
        config = Config(f"{direction}_{p.tier}", dtype, tile, p.num_warps, precision, p.block_n,
                        split)  # fmt: skip
        configs.append(config)
        if p.tier != "persistent":
            # One tile a program, and several; W_hh's parts split once, and each chunk.
            pipelined = (False, True) if direction == "forward" else (False,)
            chunk_split = (False, True) if precision == "tf32x3" and not tile else (False,)
            configs += [
                dataclasses.replace(config, pipeline_tiles=pipe, chunk_split=split)
                for pipe in pipelined
                for split in chunk_split
                if pipe or split
            ]
            continue
        if direction == "backward":
            for block_b in (launch.BLOCK_B, launch.WEIGHT_GRADS_MAX_BATCH):
                configs.append(dataclasses.replace(config, block_b=block_b, weight_grads=True))
        fma = [r for r in (1, 2, 4, 8) if launch.fma_rows(r, p.block_h)]
        block_i = launch.PROJECT_INPUT_ELEMENTS // p.block_h
        for rows in sorted({1, max(fma)}) if fma else ():
            variants = [{}]
            if direction == "backward":
                variants.append({"weight_grads": True})
            if direction == "forward" and rows == 1 and block_i >= 16:
                variants.append({"block_i": block_i})
            for variant in variants:
                program = launch.persistent_program(p, rows, not variant)
                configs.append(dataclasses.replace(
                    config, block_b=rows, num_warps=program["num_warps"],
                    sum_in_parts=program["SUM_IN_PARTS"], steps_ahead=program["STEPS_AHEAD"],
                    **variant,
                ))  # fmt: skip
    return configs


def configurations(capability: int) -> list[Config]:
    """Every (kernel, dtype, precision, tile) that the launch functions pick on a GPU with
    this capability's shared memory (plan_configurations of launch.plan's plans, of the
    cooperative one where the persistent tier fits on FMA rows only, of one-row programs
    past FMA rows' bound, and of cooperative tiles widened for a large batch:
    launch._layer_plan), each where it fits that memory as they require."""
    dots = tensor_core_dots(capability)
    limit = SHARED_MEMORY_LIMIT[capability]
    # The device facts and the precision rule that launch._plan passes.
    rules = {"tensor_core_dots": dots, "streamed_tf32": launch.COOP_STREAMED_TF32}
    configs = []
    for dtype in TRITON_DTYPE:
        # fp32 also on TF32 where tl.dot runs on tensor cores (launch.call_key).
        for precision in ("ieee", "tf32x3") if dtype == torch.float32 and dots else ("ieee",):
            # Every padded H up to 2048; above that the streamed kernels repeat.
            for block_h in (16 << i for i in range(8)):
                p = launch.plan(block_h, dtype, precision, limit, **rules)
                plans = [p]
                # One-row programs where each batch row gets one (launch._layer_plan),
                # with H a multiple of 16, or at any H where all of W_hh^T fits.
                forced = launch.plan(block_h, dtype, precision, limit, "persistent", **rules)
                quarters = capability // 10 >= launch.ONE_ROW_QUARTERS_MAJOR
                one_row = launch.one_row_plan(forced, dtype, limit, quarters)
                if one_row and launch.one_row_plan(forced, dtype, limit, False):
                    configs += [dataclasses.replace(c, one_row="any")
                                for c in plan_configurations(one_row, dtype)]  # fmt: skip
                elif one_row:
                    configs += plan_configurations(one_row, dtype)  # built with H % 16 == 0
                if p.tier == "persistent" and not p.dot_rows:
                    plans.append(launch.plan(block_h, dtype, precision, limit, "cooperative",
                                             **rules))  # fmt: skip
                # Cooperative tiles widened where a program takes several (_layer_plan).
                wide = launch.cooperative_block_n(block_h, 1 << 20, 1)
                plans += [
                    launch.plan(block_h, dtype, precision, limit, "cooperative", wide, **rules)
                    for c in plans
                    if c.tier == "cooperative" and c.block_n != wide
                ]
                for plan in plans:
                    configs += [c for c in plan_configurations(plan, dtype)
                                if c not in configs]  # fmt: skip
    configs = [c for c in configs if (shared_memory_bound(c, capability) or 0) <= limit]
    return configs + (gemm_configurations() if dots else [])


def family(config: Config) -> Config:
    """config without what the padded H decides (launch.plan, persistent_program,
    input_block): a family's configurations differ in their tile only (its H, columns,
    K parts, warps, input block, sums, steps ahead, and FMA rows past one)."""
    rows = config.block_b if config.block_b == 1 or config.block_b >= launch.BLOCK_B else 2
    return dataclasses.replace(config, block_h=bool(config.block_h), block_n=0, split_k=0,
                               num_warps=0, block_i=bool(config.block_i), block_b=rows,
                               sum_in_parts=False, steps_ahead=0)  # fmt: skip


def _tile_size(config: Config) -> tuple[int, int, int]:
    return config.block_h, config.block_b, config.block_n


def edges(configs: list[Config]) -> tuple[list[Config], list[Config]]:
    """(largest, smallest): each family's configuration at its largest tile, where its
    shared memory and registers peak, and at its smallest where that is another one."""
    families: dict[Config, list[Config]] = {}
    for config in configs:
        families.setdefault(family(config), []).append(config)
    largest = [max(members, key=_tile_size) for members in families.values()]
    smallest = [min(members, key=_tile_size) for members in families.values()]
    return largest, [c for c in smallest if c not in largest]


def gemm_configurations() -> list[Config]:
    """The TF32 GEMM's tiles (launch.gemm_tile, on tensor cores only): every pair of
    sides."""
    sides = [16 << i for i in range(5) if 16 << i <= launch.GEMM_BLOCK]
    tiles = [launch.gemm_tile(m, n) for m in sides for n in sides]
    return [Config("gemm", torch.float32, 0, warps, "tf32", block_n=block_n, block_b=block_m)
            for block_m, block_n, warps in tiles]  # fmt: skip


def compile_gemm(config: Config, capability: int, aligned: bool):
    """The compiled GEMM of `config`, launched with a bias; aligned: pointers and
    integers Triton specialises on taken as multiples of 16, b's column stride as 1."""
    fn = kernels.gemm_tf32_kernel
    constexprs = {"HAS_BIAS": True, "ACCUMULATE": False, "BLOCK_M": config.block_b,
                  "BLOCK_N": config.block_n, "BLOCK_K": launch.GEMM_BLOCK_K,
                  "GROUP_M": launch.GEMM_GROUP_M}  # fmt: skip
    if aligned:
        constexprs.update(stride_ak=1, stride_bk=1, stride_cn=1)
    signature = {name: "constexpr" if name in constexprs else "*fp32" if name.endswith("_ptr")
                 else "i32" for name in fn.arg_names}  # fmt: skip
    return build(fn, signature, constexprs, capability, aligned, num_warps=config.num_warps,
                 num_stages=launch.GEMM_STAGES)  # fmt: skip


def build(fn, signature: dict, constexprs: dict, capability: int, aligned: bool, **options):
    """triton.compile of fn for `capability` with `options` and launch.COMPILE_OPTIONS;
    aligned: every argument Triton specialises on taken as a multiple of 16."""
    unspecialised = {fn.arg_names[i] if isinstance(i, int) else i for i in fn.do_not_specialize}
    attrs = {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(fn.arg_names)
        if aligned and signature[name] != "constexpr" and name not in unspecialised
    }
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options={**options, **launch.COMPILE_OPTIONS})  # fmt: skip


def compile_config(config: Config, capability: int, padded: bool = False,
                   aligned: bool = False):  # fmt: skip
    """The compiled kernel of `config`; aligned: every pointer and every integer Triton
    specialises on taken as a multiple of 16."""
    if config.kernel == "gemm":
        return compile_gemm(config, capability, aligned)
    dt = TRITON_DTYPE[config.dtype]
    acc = launch.ACC_DTYPE[config.dtype]
    common = {"RELU": False, "BLOCK_B": config.block_b, "ACC_DTYPE": acc,
              "DOT_PRECISION": config.precision,
              "PADDED": padded}  # fmt: skip
    direction, tier = config.kernel.split("_")
    fn = getattr(kernels, f"rnn_{direction}_{tier}_kernel")
    if tier == "persistent":
        constexprs = {**common, "BLOCK_H": config.block_h}
    else:  # block_h: the padded H with W_hh's columns on chip, 0 with them streamed
        constexprs = {**common, "BLOCK_N": config.block_n, "BLOCK_K": launch.COOP_BLOCK_K,
                      "W_ON_CHIP": config.block_h > 0, "BLOCK_H": config.block_h,
                      "SPLIT_K": config.split_k,
                      "W_LOW_PARTS": launch.w_low_parts(config.precision, config.block_h > 0,
                                                        not config.chunk_split)}  # fmt: skip
        constexprs["TAGGED"] = config.tagged
        if direction == "forward":
            constexprs["PIPELINE_TILES"] = config.pipeline_tiles
    constexprs["HAS_H0" if direction == "forward" else "DH0"] = True
    if direction == "forward" or config.kernel == "backward_persistent":
        constexprs["HAS_BIAS"] = True
    if direction == "backward":  # both outputs reached the loss; their gradients dense,
        # whose column strides of 1 Triton specialises as constants
        constexprs.update(HAS_DY=True, HAS_DHN=True, stride_dy_col=1, stride_dhn_col=1)
    if tier == "persistent":
        constexprs["SUM_IN_PARTS"] = config.sum_in_parts
        constexprs["STEPS_AHEAD"] = config.steps_ahead if padded else 1  # as launched
        constexprs["DOT_PARTS"] = launch.dot_parts(config.dtype, config.precision,
                                                   config.block_h, config.block_b)  # fmt: skip
    if config.kernel == "backward_persistent":
        constexprs.update(
            WEIGHT_GRADS=config.weight_grads,
            INPUT_GRAD=config.weight_grads,
            HAS_H0=config.weight_grads,
            PREFETCH=launch.one_row_prefetch(config.dtype, bool(config.one_row), padded),
        )
    if config.kernel == "forward_persistent":
        constexprs.update(PROJECT_INPUT=config.block_i > 0, BLOCK_I=config.block_i or 16)
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in ("batch_sizes_ptr", "offsets_ptr", "previous_ptr", "previous_rev_ptr"):
            signature[name] = "*i64"
        elif name == "sync_ptr":  # grid-barrier counters, or the tagged exchange's words
            signature[name] = "*i64" if config.tagged else "*i32"
        elif name == "state_ptr":  # the cooperative tier's state: fp32 (fp64 for fp64)
            signature[name] = "*fp64" if dt == "fp64" else "*fp32"
        elif name == "w_low_ptr":  # W_hh's low TF32 parts where used, else a placeholder
            signature[name] = "*fp32" if config.precision == "tf32x3" else f"*{dt}"
        elif name.endswith("_ptr"):
            signature[name] = f"*{dt}"
        else:
            signature[name] = "i32"
    options = {"maxnreg": launch.ONE_ROW_REGISTERS} if config.one_row else {}
    if tier == "cooperative":  # as launch._cooperative_launch launches it on a GPU
        options["launch_cooperative_grid"] = True
    return build(fn, signature, constexprs, capability, aligned, num_warps=config.num_warps,
                 **options)  # fmt: skip


def cuobjdump(compiled, option: str) -> str:
    """What cuobjdump prints with `option` for the cubin Triton built."""
    from triton import knobs

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        return subprocess.run([knobs.nvidia.cuobjdump.path, option, path],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip


def cubin_usage(compiled) -> tuple[int, int]:
    """(registers per thread, local-memory bytes per thread: its stack frame, where
    ptxas spills registers, and other local memory) of the cubin Triton built."""
    usage = re.search(r"REG:(\d+) STACK:(\d+) .*LOCAL:(\d+)",
                      cuobjdump(compiled, "--dump-resource-usage"))  # fmt: skip
    return int(usage.group(1)), int(usage.group(2)) + int(usage.group(3))


def usage(config: Config, capability: int, padded: bool, aligned: bool) -> tuple:
    """(shared memory bytes, registers per thread, local bytes per thread) of a build."""
    compiled = compile_config(config, capability, padded, aligned)
    return (compiled.metadata.shared, *cubin_usage(compiled))


# A PTX entry's parameters: ".param .u64 .ptr .global .align 1 name" or ".param .u32 name".
PTX_PARAMETER = re.compile(r"\.param\s+\.[a-z]+?(\d+)\b")


def replay_parameters(capability: int) -> int:
    """For one configuration of each kernel family (padded, aligned): the bytes of each
    parameter a replayed launch passes (launch.replay_layout: the non-constexpr
    arguments, then Triton's scratch pointers) against the compiled PTX entry's, and
    whether the replay launches it cooperatively, as the cooperative tier's must be;
    exit 1 where either differs, or where a recurrence kernel has no layout (its
    launches would never be replayed)."""
    sizes = {launch._POINTER: 8, launch._INT32: 4, launch._INT64: 8}
    families = {config.kernel: config for config in reversed(configurations(capability))}
    print("| kernel | replayed parameters (bytes) | PTX entry's | cooperative launch | same |")
    print("|---|---|---|---|---|")
    failed = False
    for kernel, config in sorted(families.items()):
        compiled = compile_config(config, capability, padded=True, aligned=True)
        entry = re.search(r"\.entry\s+\w+\s*\((.*?)\)", compiled.asm["ptx"], re.S).group(1)
        ptx = [int(bits) // 8 for bits in PTX_PARAMETER.findall(entry)]
        layout = launch.replay_layout(compiled)
        if layout is None:
            failed |= kernel != "gemm"
            print(f"| {kernel} | none | {ptx} | - | - |")
            continue
        _, _, cooperative, kinds, scratch = layout
        replayed = [sizes[kind] for kind in kinds if kind is not None] + [8] * scratch
        same = replayed == ptx and cooperative == kernel.endswith("cooperative")
        failed |= not same
        print(f"| {kernel} | {replayed} | {ptx} | {cooperative} | {same} |")
    return 1 if failed else 0


def main() -> int:
    """Print the table; exit 1 if any configuration exceeds its target's shared memory,
    or the bound that plan() chose it by."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", default=",".join(map(str, DEFAULT_TARGETS)),
                        help=f"compute capabilities, of {sorted(SHARED_MEMORY_LIMIT)}")  # fmt: skip
    parser.add_argument("--edges", action="store_true",
                        help="only each family's largest tile (padded and packed input) and "
                        "smallest (padded)")  # fmt: skip
    parser.add_argument("--replay-parameters", action="store_true",
                        help="each kernel family's replayed launch parameters against its "
                        "PTX entry's (replay_parameters), for the first target")  # fmt: skip
    args = parser.parse_args()
    targets = [int(t) for t in args.targets.split(",")]
    if args.replay_parameters:
        return replay_parameters(targets[0])
    over = []
    print(
        "| kernel | input | target | shared memory (bytes) | limit | registers/thread "
        "| local bytes (spills) |"
    )
    print("|---|---|---|---|---|---|---|")
    builds = []
    for capability in targets:
        configs = configurations(capability)
        both_inputs, padded_only = edges(configs) if args.edges else (configs, [])
        builds += [
            (config, capability, padded, aligned)
            for config in both_inputs
            for padded, aligned in ((True, True), (False, config.one_row == "aligned"))
        ]
        builds += [(config, capability, True, True) for config in padded_only]
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
        results = pool.map(usage, *zip(*builds, strict=True))
        for (config, capability, padded, aligned), (shared, regs, local) in zip(
            builds, results, strict=True
        ):
            kind = ("padded" if padded else "packed") + (", aligned" if aligned else "")
            if config.kernel == "gemm":  # any strides: aligned or not
                kind = "aligned" if aligned else "unaligned"
            print(
                f"| {config.describe()} | {kind} | sm_{capability} | {shared} | "
                f"{SHARED_MEMORY_LIMIT[capability]} | {regs} | {local} |"
            )
            where = f"{config.describe()} {kind} on sm_{capability}: {shared} bytes"
            if shared > SHARED_MEMORY_LIMIT[capability]:
                over.append(f"over the target's shared memory: {where}")
            bound = shared_memory_bound(config, capability, aligned)  # chosen by: must hold
            if bound is not None and shared > bound:
                over.append(f"over its launch.*_shared_memory bound ({bound}): {where}")
    for line in over:
        print(f"FAILED: {line}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
