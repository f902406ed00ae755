"""Builds fastrnn._C, the C++ CPU kernels, ahead of time (never at import)."""

import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

debug = os.environ.get("FASTRNN_DEBUG", "0") == "1"
# -fno-trapping-math lets GCC vectorise the selects in the activation loops (nothing
# here relies on floating-point exception flags); results are unchanged.
extra_compile_args = ["-O0", "-g"] if debug else ["-O3", "-fno-trapping-math"]
# -fopenmp: at::parallel_for is a header template that only forks threads when the
# including code is compiled with OpenMP; without it the kernels' per-step column split
# ran serially.  The extension links the libgomp that torch's wheel ships and loads
# (one OpenMP runtime in the process).
openmp = ["-fopenmp"]

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
