"""Builds fastrnn._C, the C++ CPU kernels, ahead of time (never at import)."""

import glob
import os
import subprocess
import sys
import tempfile

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, get_cxx_compiler

debug = os.environ.get("FASTRNN_DEBUG", "0") == "1"
# -fno-trapping-math lets GCC vectorise the selects in the activation loops (nothing
# here relies on floating-point exception flags); results are unchanged.
extra_compile_args = ["-O0", "-g"] if debug else ["-O3", "-fno-trapping-math"]


def compiler_builds_openmp() -> bool:
    """Whether the compiler the build uses ($CXX, else c++) compiles and links an OpenMP
    program (Apple's clang refuses -fopenmp; a clang without libomp has no omp.h)."""
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "openmp.cpp")
        with open(source, "w") as file:
            file.write("#include <omp.h>\nint main() { return omp_get_max_threads() < 1; }\n")
        command = [get_cxx_compiler(), "-fopenmp", source, "-o", os.path.join(folder, "openmp")]
        try:
            return subprocess.run(command, capture_output=True).returncode == 0
        except OSError:
            return False


# OpenMP: the kernels split each step's columns over an OpenMP team (csrc/rnn_cpu.cpp).
# Only where torch itself runs on OpenMP, so that the extension shares torch's runtime
# (libgomp, already loaded), and on Linux: on macOS torch ships its own libomp, and a
# compiler's other one would be a second OpenMP runtime in the process.  Elsewhere the
# kernels run one thread per step.  (ATen's at::parallel_for is a header template that
# is serial in code compiled without -fopenmp: that is how the first version's column
# split ran serially.)
openmp = []
if sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info():
    if compiler_builds_openmp():
        openmp = ["-fopenmp"]
    else:
        print(
            f"fastrnn: {get_cxx_compiler()} cannot build OpenMP code: building without it "
            "(each step of the CPU kernels runs on one thread)"
        )

setup(
    ext_modules=[
        CppExtension(
            "fastrnn._C",
            sorted(glob.glob("csrc/*.cpp")),
            extra_compile_args={"cxx": [*extra_compile_args, *openmp, "-fvisibility=hidden"]},
            extra_link_args=["-ldl", *openmp],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
