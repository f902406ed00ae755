"""Builds the C++ extension ahead of time (never at import): the op library
fastrnn/libfastrnn_ops.so and the Python module fastrnn._C."""

import glob
import os
import subprocess
import sys
import tempfile

import torch
from setuptools import Extension, setup
from torch.utils.cpp_extension import (
    BuildExtension,
    CppExtension,
    get_cxx_compiler,
    include_paths,
    library_paths,
)

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

# The op library (kernels, op schemas, C++ autograd) needs no Python, so that a C++
# program running a TorchScript or AOTInductor model can load it; the Python module
# fastrnn._C (csrc/python/) links against it and finds it beside itself.
OPS_LIBRARY = "fastrnn.libfastrnn_ops"
OPS_LIBRARY_FILE = "libfastrnn_ops.so"  # its name in fastrnn/ and its soname
headers = sorted(glob.glob("csrc/*.h"))  # rebuild on a change; shipped in the sdist
ops_library = Extension(
    OPS_LIBRARY,
    sorted(glob.glob("csrc/*.cpp")),
    depends=headers,
    include_dirs=include_paths(),
    library_dirs=library_paths(),
    libraries=["c10", "torch", "torch_cpu"],
    language="c++",
    extra_compile_args={"cxx": [*extra_compile_args, *openmp, "-fvisibility=hidden"]},
    extra_link_args=[
        "-ldl",
        *openmp,
        f"-Wl,-install_name,@rpath/{OPS_LIBRARY_FILE}"
        if sys.platform == "darwin"
        else f"-Wl,-soname,{OPS_LIBRARY_FILE}",
    ],
)
python_module = CppExtension(
    "fastrnn._C",
    sorted(glob.glob("csrc/python/*.cpp")),
    depends=[*headers, *sorted(glob.glob("csrc/python/*.h"))],
    extra_compile_args={"cxx": [*extra_compile_args, "-fvisibility=hidden"]},
    extra_link_args=["-Wl,-rpath," + ("@loader_path" if sys.platform == "darwin" else "$ORIGIN")],
)


class BuildExtensions(BuildExtension):
    """torch's BuildExtension, naming the op library as a library (OPS_LIBRARY_FILE, not
    a Python module's name) and linking fastrnn._C against it."""

    def get_ext_filename(self, ext_name):
        filename = super().get_ext_filename(ext_name)  # ext_name: dotted, or its last part
        if ext_name.split(".")[-1] == OPS_LIBRARY.split(".")[-1]:
            return os.path.join(os.path.dirname(filename), OPS_LIBRARY_FILE)
        return filename

    def build_extension(self, ext):
        if ext is python_module:  # built after the op library (ext_modules' order)
            ext.extra_objects = [self.get_ext_fullpath(OPS_LIBRARY)]
        super().build_extension(ext)


setup(
    ext_modules=[ops_library, python_module],
    cmdclass={"build_ext": BuildExtensions.with_options(use_ninja=True)},
)
