"""The SASS of kernel configurations' time loops, without a GPU: per warp and step, the
instructions (those of the tagged exchange's wait loops, which repeat only while a
step's state has not arrived, counted apart too), barriers, shuffles, shared-memory and
tensor-core instructions, and the
longest chain of dependent floating-point instructions (a tensor-core instruction's
accumulator included); and in steps, how many a global load's result has before an
instruction waits for it (load_cover); as cuobjdump reads the cubins that
tools/cubin_report.py builds (padded input, aligned pointers).  docs/performance.md's
SASS tables come from it.

    python tools/sass_report.py forward_persistent float32 --block-h 128 --rows 1 \\
        --warps 4 --sum-in-parts
    python tools/sass_report.py forward_cooperative float32 --precision tf32x3 \\
        --block-h 256 --block-n 32 --split-k 4

Run it without TRITON_INTERPRET=1, under the Triton to read (the GPU machine has 3.6).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cubin_report  # noqa: E402  (a sibling tool, not a package)

from fastrnn.triton import launch  # noqa: E402

INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
FLOATING = ("FFMA", "FADD", "FMUL", "DFMA", "DADD", "DMUL", "HMMA", "DMMA")
COUNTED = "BAR SHFL LDS STS LDSM STSM HMMA DMMA MUFU LDG STG CCTL".split()  # CCTL: a prefetch


def sass(compiled) -> list[tuple[int, str]]:
    """(address, instruction) of a compiled kernel's SASS, predicates kept."""
    text = cubin_report.cuobjdump(compiled, "-sass")
    return [(int(address, 16), body) for address, body in INSTRUCTION.findall(text)]


def backward_branches(code: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """(target, address) of each branch back to an earlier instruction: a loop's range."""
    ranges = []
    for address, body in code:
        target = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", body)
        if target and int(target.group(1), 16) <= address:
            ranges.append((int(target.group(1), 16), address))
    return ranges


def time_loop(code: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The (address, instruction)s of the widest backward branch's range that
    synchronises threads (where any does): the kernel's time loop, not a loop before it
    (the cooperative tier's split of W_hh has no barrier)."""
    loops = [[(a, body) for a, body in code if start <= a <= end]
             for start, end in backward_branches(code)]  # fmt: skip
    synchronising = [loop for loop in loops if any(opcode(b).startswith("BAR") for _, b in loop)]
    return max(synchronising or loops, key=len)


def wait_loops(loop: list[tuple[int, str]]) -> int:
    """Instructions of the innermost loops inside a time loop that read with volatile
    (.STRONG.SYS) loads: the tagged exchange's waits (kernels._load_tagged), which run
    again only while a step's state is not there yet."""
    ranges = backward_branches(loop)
    innermost = [
        (start, end)
        for start, end in ranges
        if not any(
            (start, end) != inner and start <= inner[0] and inner[1] <= end for inner in ranges
        )
    ]
    inside = set()
    for start, end in innermost:
        body = [(a, b) for a, b in loop if start <= a <= end]
        if any(".STRONG.SYS" in b for _, b in body):
            inside.update(a for a, _ in body)
    return len(inside)


def opcode(body: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", body).split()[0]


def vector_width(op: str) -> int:
    """Registers an instruction's vector result takes (a load of 128 or 64 bits)."""
    return 4 if ".128" in op else 2 if ".64" in op else 1


def longest_chain(loop: list[str]) -> int:
    """The most floating-point instructions in one chain of register dependences, in
    program order (a load's result starts a chain at 0)."""
    depth: dict[int, int] = {}
    longest = 0
    for body in loop:
        op = opcode(body)
        registers = [int(r) for r in re.findall(r"\bR(\d+)\b", body)]
        if not registers or op.startswith(("ST", "BAR", "BRA", "ISETP", "FSETP", "RED")):
            continue
        target, sources = registers[0], registers[1:]
        if op.split(".")[0] in FLOATING or op.startswith(("MOV", "IMAD.MOV")):
            step = 1 if op.split(".")[0] in FLOATING else 0
            depth[target] = max((depth.get(r, 0) for r in sources), default=0) + step
            longest = max(longest, depth[target])
        else:  # a load or integer result: as wide as its vector
            for r in range(target, target + vector_width(op)):
                depth[r] = 0
    return longest


def load_cover(loop: list[str]) -> int | None:
    """The fewest instructions from a global load into registers (LDG; not LDGSTS,
    cp.async into shared memory, nor a grid barrier's or tagged exchange's .STRONG
    load, which waits by design) to the first that touches its result registers, around
    the loop: that one waits for the load (None: no such load)."""
    covers = []
    for i, body in enumerate(loop):
        op = opcode(body)
        if op.split(".")[0] == "LDG" and ".STRONG" not in op:
            first = int(re.search(r"\bR(\d+)\b", body).group(1))
            result = {f"R{r}" for r in range(first, first + vector_width(op))}
            for distance in range(1, len(loop) + 1):
                if result & set(re.findall(r"\bR\d+\b", loop[(i + distance) % len(loop)])):
                    covers.append(distance)
                    break
    return min(covers, default=None)


def report(config: cubin_report.Config, capability: int = 90) -> dict:
    """The time loop's counts of one configuration per step (a loop of persistent steps
    loading config.steps_ahead ahead runs that many steps a pass; see the module
    docstring), and its load cover: load_cover's instructions in steps."""
    compiled = cubin_report.compile_config(config, capability, True, True)
    with_addresses = time_loop(sass(compiled))
    loop = [body for _, body in with_addresses]
    kinds = collections.Counter(opcode(body).split(".")[0] for body in loop)
    registers, local = cubin_report.cubin_usage(compiled)
    steps = config.steps_ahead
    cover = load_cover(loop)
    return {"instructions": len(loop) / steps,
            "in wait loops": wait_loops(with_addresses) / steps,
            **{kind: kinds[kind] / steps for kind in COUNTED},
            "chain": longest_chain(loop),  # a step's: each starts from loaded state
            "load cover": "-" if cover is None else f"{cover * steps / len(loop):.2f}",
            "registers": registers, "local": local,
            "shared": compiled.metadata.shared}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    kernels = [
        f"{d}_{tier}" for tier in ("persistent", "cooperative") for d in ("forward", "backward")
    ]
    parser.add_argument("kernel", choices=kernels)
    parser.add_argument("dtype", choices=["float32", "float16", "bfloat16", "float64"])
    parser.add_argument("--precision", default="ieee", choices=["ieee", "tf32", "tf32x3"])
    parser.add_argument(
        "--block-h",
        type=int,
        default=128,
        help="padded H (cooperative: with W on chip; 0: streamed)",
    )
    parser.add_argument("--warps", type=int, default=4)
    parser.add_argument("--rows", type=int, default=launch.BLOCK_B, help="persistent rows")
    parser.add_argument("--sum-in-parts", action="store_true", help="persistent, one row")
    parser.add_argument("--steps-ahead", type=int, default=1, choices=[1, 4],
                        help="persistent: how many steps ahead its inputs load")  # fmt: skip
    parser.add_argument("--block-i", type=int, default=0,
                        help="persistent forward: the padded input it projects")  # fmt: skip
    parser.add_argument("--one-row", action="store_true",
                        help="persistent: one row past FMA rows' bound (one_row_plan)")  # fmt: skip
    parser.add_argument("--no-prefetch", action="store_true",
                        help="persistent backward, one row: no ONE_ROW_PREFETCH")  # fmt: skip
    parser.add_argument("--block-n", type=int, default=32, help="cooperative columns")
    parser.add_argument("--split-k", type=int, default=1, help="cooperative K parts")
    parser.add_argument("--pipeline-tiles", action="store_true",
                        help="cooperative forward: its tile loop pipelined")  # fmt: skip
    parser.add_argument("--chunk-split", action="store_true",
                        help="cooperative tf32x3, W streamed: split by Triton")  # fmt: skip
    parser.add_argument("--tagged", action="store_true",
                        help="cooperative: state exchanged tagged, no grid barrier")  # fmt: skip
    parser.add_argument(
        "--block-k", type=int, default=launch.COOP_BLOCK_K, help="cooperative streamed rows a chunk"
    )
    parser.add_argument(
        "--dot-parts",
        type=int,
        default=launch.IEEE_DOT_PARTS,
        help="persistent, fp32 IEEE on 16 rows: tl.dot's K parts at H >= 128",
    )
    parser.add_argument("--capability", type=int, default=90)
    args = parser.parse_args(argv)
    launch.COOP_BLOCK_K = args.block_k  # compile_config reads them
    launch.IEEE_DOT_PARTS = args.dot_parts
    launch.ONE_ROW_PREFETCH = not args.no_prefetch
    cooperative = args.kernel.endswith("cooperative")
    config = cubin_report.Config(
        args.kernel, getattr(torch, args.dtype), args.block_h, args.warps, args.precision,
        block_n=args.block_n if cooperative else 0, split_k=args.split_k,
        block_b=launch.BLOCK_B if cooperative else args.rows, sum_in_parts=args.sum_in_parts,
        steps_ahead=args.steps_ahead, block_i=args.block_i,
        one_row="aligned" if args.one_row else "",
        pipeline_tiles=args.pipeline_tiles, chunk_split=args.chunk_split, tagged=args.tagged,
    )  # fmt: skip
    counts = report(config, args.capability)
    print("| configuration | " + " | ".join(counts) + " |")
    print("|---" * (len(counts) + 1) + "|")
    cells = [f"{v:g}" if isinstance(v, float) else str(v) for v in counts.values()]
    print(f"| {config.describe()} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
