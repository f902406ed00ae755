"""One refused call per path a C++ argument error takes to Python, each of which must raise
RuntimeError or ValueError. On an H200 (torch 2.11, the build made there) the Triton
launch's check (fastrnn._C.check_rnn_arguments then, rnn_forward_outputs now) crashed
the process (SIGSEGV) on every refused case whose message formats a number (an int64 or
sizes), and raised where it formats only text (a literal, a dtype's name;
docs/performance.md): so each path here is run with both kinds of message, and a message
whose number is missing fails too (a library built with its own copy of libstdc++,
-static-libstdc++, raised "got " for "got 2-D" on this project's CPU machine). Run each
in its own process, so that a crash ends only its own; each first prints the C++ runtime
libraries the process has mapped (two libstdc++ would explain a crash in number
formatting):

    for path in $(python tools/error_paths.py --list); do python tools/error_paths.py $path; done

tools/gpu_check.sh (step errorpaths) does, with a native backtrace (cuda-gdb) of the
first that crashes.
"""

import argparse
import sys

import torch

from fastrnn import _C


def bad_forward_arguments(device: str, number: bool) -> tuple:
    """rnn_forward's arguments refused by make_layout in the op library: a 2-D input
    without batch_sizes ("got 2-D": a number) or packed input without hx (text only)."""
    weights = [torch.randn(4, 3, device=device), torch.randn(4, 4, device=device)]
    x = torch.randn(2, 3, device=device)
    batch_sizes = None if number else torch.tensor([1, 1])
    return x, None, weights, batch_sizes, 1, False


def check(device: str, number: bool):
    """fastrnn._C's check, as the Triton launch runs it: thrown in the op library."""
    return lambda: _C.rnn_forward_outputs(*bad_forward_arguments(device, number))


def op(device: str, number: bool):
    """The op through the dispatcher: on CPU the C++ kernel refuses it, on CUDA the
    Triton launch's check."""
    return lambda: torch.ops.fastrnn.rnn_forward(*bad_forward_arguments(device, number), False)


PATHS = {
    f"{kind.__name__}-{device}-{'number' if number else 'text'}": kind(device, number)
    for kind in (check, op)
    for device in ("cpu", "cuda")
    for number in (True, False)
}
PATHS["setting"] = lambda: _C.set_cpu_gemm_backend("no such backend")  # a setting refused


def runtime_libraries() -> list[str]:
    """The C++ runtime and fastrnn libraries mapped into this process (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return []
    wanted = ("libstdc++", "libgcc_s", "libgomp", "fastrnn")
    return sorted(p for p in paths if any(w in p for w in wanted))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?", choices=list(PATHS))
    parser.add_argument("--list", action="store_true", help="print the paths' names")
    args = parser.parse_args()
    if args.list or args.path is None:
        print(" ".join(PATHS))
        return 0
    print(f"{args.path}: mapped {', '.join(runtime_libraries())}", flush=True)
    try:
        PATHS[args.path]()
    except (RuntimeError, ValueError) as error:
        message = str(error).splitlines()[0]
        print(f"{args.path}: raised {type(error).__name__}: {message}")
        if args.path.endswith("-number") and "got 2-D" not in message:
            print(f"{args.path}: the message lost its number")  # formatting broken
            return 1
        return 0
    print(f"{args.path}: did not raise")
    return 1


if __name__ == "__main__":
    sys.exit(main())
