"""One refused call per path a C++ argument error takes to Python, each of which must
raise RuntimeError or ValueError: on an H200 (torch 2.11, the build made there) the
Triton launch's check, fastrnn._C.check_rnn_arguments, crashed the process (SIGSEGV)
wherever it refused a call (docs/performance.md).  Run each in its own process, so that
a crash ends only its own:

    for path in $(python tools/error_paths.py --list); do python tools/error_paths.py $path; done

tools/gpu_check.sh (step errorpaths) does, with a native backtrace (cuda-gdb) of the
first that crashes.
"""

import argparse
import sys

import torch

from fastrnn import _C


def bad_forward_arguments(device: str) -> tuple:
    """rnn_forward's arguments with a 2-D input and no batch_sizes (refused by
    make_layout in the op library)."""
    weights = [torch.randn(4, 3, device=device), torch.randn(4, 4, device=device)]
    return torch.randn(2, 3, device=device), None, weights, None, 1, False


def check_on(device: str):
    """fastrnn._C's check, as the Triton launch runs it: thrown in the op library."""
    return lambda: _C.check_rnn_arguments(*bad_forward_arguments(device))


def op_on(device: str):
    """The op through the dispatcher: on CPU the C++ kernel refuses it, on CUDA the
    Triton launch's check."""
    return lambda: torch.ops.fastrnn.rnn_forward(*bad_forward_arguments(device), False)


PATHS = {
    "check-cpu": check_on("cpu"),
    "check-cuda": check_on("cuda"),
    "op-cpu": op_on("cpu"),
    "op-cuda": op_on("cuda"),
    "setting": lambda: _C.set_cpu_gemm_backend("no such backend"),  # a setting refused
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?", choices=list(PATHS))
    parser.add_argument("--list", action="store_true", help="print the paths' names")
    args = parser.parse_args()
    if args.list or args.path is None:
        print(" ".join(PATHS))
        return 0
    try:
        PATHS[args.path]()
    except (RuntimeError, ValueError) as error:
        print(f"{args.path}: raised {type(error).__name__}: {str(error).splitlines()[0]}")
        return 0
    print(f"{args.path}: did not raise")
    return 1


if __name__ == "__main__":
    sys.exit(main())
