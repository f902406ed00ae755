"""Builds fastrnn._C, the C++ CPU kernels, ahead of time (never at import)."""

import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

debug = os.environ.get("FASTRNN_DEBUG", "0") == "1"
# -fno-trapping-math lets GCC vectorise the selects in the activation loops (nothing
# here relies on floating-point exception flags); results are unchanged.
extra_compile_args = ["-O0", "-g"] if debug else ["-O3", "-fno-trapping-math"]
# OpenMP: the kernels split each step's columns over an OpenMP team (csrc/rnn_cpu.cpp).
# Only where torch itself runs on OpenMP, so that the extension shares torch's runtime
# (libgomp from torch's wheel, already loaded); elsewhere the kernels run one thread per
# step.  (ATen's at::parallel_for is a header template that is serial in code compiled
# without -fopenmp: that is how the first version's column split ran serially.)
openmp = ["-fopenmp"] if "OpenMP" in torch.__config__.parallel_info() else []

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
