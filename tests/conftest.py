"""Shared helpers: paired fastrnn / nn.RNN modules, fp64 references, per-dtype tolerances."""

from __future__ import annotations

import contextlib
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
# For bfloat16/float16 also the C++ kernels in that dtype on ATen's GEMMs, which backend
# auto runs where csrc/cpu_dtypes.h's rules say it pays.
REDUCED_CPU_BACKENDS = [*CPU_BACKENDS, "cpp-native"]


@contextlib.contextmanager
def reduced_precision(mode: str):
    """How the C++ kernels run bfloat16/float16 while active: auto, native or float32."""
    previous = _C.get_cpu_reduced_precision()
    _C.set_cpu_reduced_precision(mode)
    try:
        yield
    finally:
        _C.set_cpu_reduced_precision(previous)


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


def penalty_gradients(loss: torch.Tensor, inputs: list[torch.Tensor]) -> tuple:
    """Gradients of a gradient penalty: d/d inputs of sum(g^2), g = d loss / d inputs
    taken with create_graph=True (gradients of gradients)."""
    grads = torch.autograd.grad(loss, inputs, create_graph=True)
    return torch.autograd.grad(sum(g.pow(2).sum() for g in grads), inputs)


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """Runs the test once per CPU backend."""
    name = request.param
    if name == "cpp-native":
        with reduced_precision("native"), fastrnn.use_backend("cpp"):
            yield name
    elif name == "cpp-portable-gemm":
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


def bad_op_calls(device: torch.device | str = "cpu") -> list:
    """(what is wrong, op, arguments, words of the error) for calls of the ops with bad
    arguments, which every backend's kernels must refuse before reading out of bounds:
    a 2-layer bidirectional float64 RNN (I=3, H=4, T=4, B=3) with one thing wrong."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device)

    x, hx = rand(4, 3, 3), rand(4, 3, 4)
    weights = []
    for layer_in in (3, 8):
        for _ in range(2):
            weights += [rand(4, layer_in), rand(4, 4), rand(4), rand(4)]
    packed, sizes = rand(7, 3), torch.tensor([3, 2, 2])
    forward = torch.ops.fastrnn.rnn_forward.default
    backward = torch.ops.fastrnn.rnn_backward.default

    def replaced(i, tensor):
        return [tensor if j == i else w for j, w in enumerate(weights)]

    def fwd(x=x, hx=hx, weights=weights, batch_sizes=None, layers=2):
        return (x, hx, weights, batch_sizes, layers, True, False)

    output, h_n, layer_outputs = forward(*fwd())
    grads = (torch.ones_like(output), torch.ones_like(h_n))

    def bwd(grads=grads, output=output, layer_outputs=layer_outputs):
        return (*grads, x, hx, weights, None, output, layer_outputs, 2, True, False, True)

    return [
        ("a weight missing", forward, fwd(weights=weights[:-1]), r"8 \(no bias\) or 16 weight"),
        ("weight_ih of layer 1", forward, fwd(weights=replaced(8, rand(4, 7))),
         r"weight_ih of layer 1 must be \[4, 8\]"),
        ("weight_hh of layer 1", forward, fwd(weights=replaced(9, rand(4, 5))),
         r"weight_hh of layer 1 must be \[4, 4\]"),
        ("a bias", forward, fwd(weights=replaced(2, rand(5))), r"bias of layer 0 must be \[4\]"),
        ("a weight's dtype", forward, fwd(weights=replaced(3, weights[3].float())),
         "weight dtype"),
        ("hx's batch", forward, fwd(hx=hx[:, :2]), "hx must be"),
        ("hx's layers", forward, fwd(hx=hx[:2]), "hx must be"),
        ("hx's dtype", forward, fwd(hx=hx.float()), "hx dtype"),
        ("num_layers", forward, fwd(layers=0), "num_layers must be >= 1"),
        ("a 2-D input without batch_sizes", forward, fwd(x=packed), "input must be 3-D"),
        ("batch_sizes increasing", forward,
         fwd(x=packed, hx=hx[:, :3], batch_sizes=torch.tensor([2, 2, 3])), "non-increasing"),
        ("batch_sizes not summing to the rows", forward,
         fwd(x=packed, hx=hx[:, :3], batch_sizes=torch.tensor([3, 2, 1])), "batch_sizes sum to"),
        ("packed without hx", forward, fwd(x=packed, hx=None, batch_sizes=sizes),
         "packed input needs hx"),
        ("grad_output's shape", backward, bwd(grads=(grads[0][:2], grads[1])),
         "grad_output must be"),
        ("grad_h_n's shape", backward, bwd(grads=(grads[0], grads[1][:, :2])),
         "grad_h_n must be"),
        ("output's shape", backward, bwd(output=output[:2]), "output must be"),
        ("layer_outputs' shape", backward, bwd(layer_outputs=layer_outputs[:, :2]),
         "layer_outputs must be"),
    ]  # fmt: skip
