"""Shared helpers: paired fastrnn / nn.RNN modules, fp64 references, per-dtype tolerances."""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU the Triton kernels run on CPU tensors through the interpreter, which
# must be chosen before triton compiles (decorates) them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastrnn
from fastrnn import _C

# Largest error allowed, relative to the reference's magnitude (max |ref|, at least 1).
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}

# CPU backends the parity tests run: the C++ kernels with the BLAS torch links, the C++
# kernels with their portable GEMM (what runs where that BLAS is not exported), and the
# pure-PyTorch reference.
CPU_BACKENDS = ["cpp", "cpp-portable-gemm", "reference"]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if actual.numel() == 0 and expected.numel() == 0:
        return 0.0
    scale = max(1.0, expected.abs().max().item())
    return (actual.double() - expected.double()).abs().max().item() / scale


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what=""):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = relative_error(actual, expected)
    assert err <= TOLERANCE[dtype], f"{what}: relative error {err:.3g} > {TOLERANCE[dtype]:.0e}"


def paired_rnns(input_size, hidden_size, dtype, **kwargs):
    """(nn.RNN in float64, fastrnn.RNN in dtype) holding the same weights."""
    torch.manual_seed(0)
    reference = torch.nn.RNN(input_size, hidden_size, dtype=torch.float64, **kwargs)
    fast = fastrnn.RNN(input_size, hidden_size, dtype=dtype, **kwargs)
    fast.load_state_dict({k: v.to(dtype) for k, v in reference.state_dict().items()})
    return reference, fast


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """Runs the test once per CPU backend."""
    name = request.param
    if name == "cpp-portable-gemm":
        previous = _C.get_cpu_gemm_backend()
        _C.set_cpu_gemm_backend("portable")
        try:
            with fastrnn.use_backend("cpp"):
                yield name
        finally:
            _C.set_cpu_gemm_backend(previous)
    else:
        with fastrnn.use_backend(name):
            yield name
