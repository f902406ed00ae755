"""Which implementation runs: ``FASTRNN_BACKEND`` or :func:`set_backend`.

======== ============================================================================
auto     C++ kernels for CPU tensors, Triton kernels for CUDA tensors; the reference
         inside torch.func transforms (grad, vjp, jacrev, vmap), which cannot trace the
         fused ops' C++ autograd, and inside forward-mode AD's dual levels, which it
         cannot differentiate
cpp      the C++ CPU kernels (csrc/, built into fastrnn/libfastrnn_ops.so); bfloat16 and
         float16 computed in float32, or in that dtype on ATen's GEMMs where
         csrc/cpu_dtypes.h's rules say it pays
triton   the fused Triton kernels; CUDA tensors
reference  fastrnn.reference, plain PyTorch ops (any device and dtype)
======== ============================================================================

A backend that cannot run the given tensors raises :class:`BackendUnavailableError`
saying why; nothing falls back silently.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import re

import torch
from torch._C._functorch import CInterpreter, peek_interpreter_stack
from torch.autograd import forward_ad

BACKENDS = ("auto", "cpp", "triton", "reference")
_CPP_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run these tensors on this machine."""


def _validated(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"fastrnn: {source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


_backend = _validated(os.environ.get("FASTRNN_BACKEND", "auto"), "FASTRNN_BACKEND")


def get_backend() -> str:
    """The backend name in force ("auto" unless set)."""
    return _backend


def set_backend(name: str) -> None:
    """Select the backend for every fastrnn module and op call from now on."""
    global _backend
    _backend = _validated(name, "backend")


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run the enclosed code with backend ``name``."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


# The oldest Triton tested with the kernels and launch functions (3.5; also 3.6, 3.9).
TRITON_MINIMUM = (3, 5)


def triton_missing(version: str | None) -> str | None:
    """Why backend 'triton' cannot run with this Triton installed (version None: none
    is; a version that does not parse passes), or None: it can."""
    if version is None:
        return "needs the triton package: pip install triton"
    numbers = re.match(r"(\d+)\.(\d+)", version)  # "3.6.0", "3.5.0+git..."
    if numbers and tuple(map(int, numbers.groups())) < TRITON_MINIMUM:
        return (
            f"needs triton >= {'.'.join(map(str, TRITON_MINIMUM))}, found {version}: "
            "pip install -U triton"
        )
    return None


def installed_triton_version() -> str | None:
    """The triton module's version, read from its distribution without importing it
    (triton's import takes about a tenth of a second); None: no triton module; "": one
    that no distribution named triton or pytorch-triton describes (a source tree)."""
    if importlib.util.find_spec("triton") is None:
        return None
    for distribution in ("triton", "pytorch-triton"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(distribution)
    return ""


# Checked once, at import: a constant to torch.compile, which traces resolve (torch
# 2.11's dynamo broke fullgraph on tracing the version parsing; found on a GPU).
_TRITON_MISSING = triton_missing(installed_triton_version())


def resolve(device: torch.device, dtype: torch.dtype) -> str:
    """The concrete backend ("cpp", "triton" or "reference") for tensors of this kind."""
    name = _backend
    # Inside a torch.func transform the interpreter stack is not empty (~80 ns to ask).
    # isinstance, not `is not None`: dynamo answers that one wrongly, this one rightly.
    # Forward-mode AD: a dual level is open (its level, which dynamo guards on too).
    transforming = (
        isinstance(peek_interpreter_stack(), CInterpreter) or forward_ad._current_level >= 0
    )
    if name == "auto" and device.type == "cpu" and dtype in _CPP_DTYPES and not transforming:
        return "cpp"  # the common case, first: this runs on every forward
    if transforming and name != "reference":
        if name == "auto":
            return "reference"
        raise BackendUnavailableError(
            f"fastrnn: backend {name!r} cannot run inside torch.func transforms (grad, vjp, "
            "jacrev, vmap) or forward-mode AD (torch.autograd.forward_ad): neither can go "
            "through its C++ autograd; use backend 'auto' or 'reference', which run the "
            "reference there"
        )
    if name == "auto":
        if device.type == "cuda":
            name = "triton"
        elif device.type == "cpu" and dtype in _CPP_DTYPES:
            name = "cpp"
        else:
            return "reference"  # CPU complex dtypes, other devices
    if name == "cpp":
        if device.type != "cpu":
            raise BackendUnavailableError(
                f"fastrnn: backend 'cpp' runs on CPU tensors, got a tensor on {device}; "
                "use backend 'triton' or 'auto' for CUDA tensors"
            )
        if dtype not in _CPP_DTYPES:
            raise BackendUnavailableError(
                "fastrnn: backend 'cpp' supports float32, float64, bfloat16 and float16, got "
                f"{dtype}; use backend 'reference' (or 'auto') for other dtypes"
            )
    elif name == "triton":
        if _TRITON_MISSING is not None:
            raise BackendUnavailableError(f"fastrnn: backend 'triton' {_TRITON_MISSING}")
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"fastrnn: backend 'triton' runs on CUDA tensors, got a tensor on {device}; "
                "use backend 'cpp' or 'auto' for CPU tensors"
            )
    return name
