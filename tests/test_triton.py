"""The Triton backend against nn.RNN in float64, forward and every gradient.

Without a GPU these run the kernels on CPU tensors through the Triton interpreter
(conftest.py sets TRITON_INTERPRET=1); with one they run on CUDA tensors, plus fp16/bf16.
Shapes stay small and odd: the interpreter executes every program in Python.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_close, paired_rnns
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn

pytest.importorskip("triton")
from fastrnn.triton import launch  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# (batch, hidden, steps, layers, bidirectional, packed, nonlinearity, bias, tier)
CASES = [
    (1, 1, 1, 1, False, False, "tanh", True, None),
    (1, 16, 7, 1, False, False, "relu", True, None),
    (1, 33, 7, 2, True, False, "tanh", False, None),
    (3, 1, 7, 2, False, False, "relu", False, None),
    (3, 16, 1, 1, True, False, "tanh", True, None),
    (3, 33, 7, 1, False, True, "tanh", True, None),
    (17, 1, 7, 1, True, True, "relu", True, None),
    (17, 16, 7, 2, True, True, "tanh", True, None),
    (17, 33, 1, 2, False, False, "relu", True, None),
    (3, 16, 7, 2, True, True, "relu", False, None),
    # The stepwise tier (what large H uses), forced on small shapes.
    (3, 33, 7, 2, True, False, "tanh", True, "stepwise"),
    (17, 16, 7, 1, True, True, "relu", False, "stepwise"),
    (1, 1, 1, 1, False, False, "tanh", True, "stepwise"),
    (3, 70, 7, 1, False, True, "tanh", True, "stepwise"),
]


def case_id(case):
    b, h, t, layers, bidir, packed, act, bias, tier = case
    return (
        f"B{b}-H{h}-T{t}-L{layers}-{'bi' if bidir else 'uni'}-{'packed' if packed else 'padded'}"
        f"-{act}-{'bias' if bias else 'nobias'}-{tier or 'auto'}"
    )


@pytest.fixture
def tier(request, monkeypatch):
    monkeypatch.setattr(launch, "FORCE_TIER", request.param)
    return request.param


def run_case(case, dtype):
    batch, hidden, steps, layers, bidir, packed, act, bias, _ = case
    input_size = 5
    reference, fast = paired_rnns(
        input_size,
        hidden,
        dtype,
        num_layers=layers,
        nonlinearity=act,
        bias=bias,
        bidirectional=bidir,
    )
    reference.to(DEVICE)
    fast.to(DEVICE)
    gen = torch.Generator().manual_seed(4)
    x64 = torch.randn(steps, batch, input_size, generator=gen, dtype=torch.float64)
    h64 = torch.randn(
        layers * (2 if bidir else 1), batch, hidden, generator=gen, dtype=torch.float64
    )
    x64, h64 = x64.to(DEVICE).requires_grad_(), h64.to(DEVICE).requires_grad_()
    x = x64.detach().to(dtype).requires_grad_()
    h0 = h64.detach().to(dtype).requires_grad_()
    x_before, h_before = x.detach().clone(), h0.detach().clone()
    lengths = None
    if packed:
        lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
        lengths[0] = steps

    def forward(module, inp, h):
        if lengths is None:
            return module(inp, h)
        out, h_n = module(pack_padded_sequence(inp, lengths, enforce_sorted=False), h)
        return out.data, h_n

    with fastrnn.use_backend("triton"):
        out, h_n = forward(fast, x, h0)
    out_ref, hn_ref = forward(reference, x64, h64)
    proj = torch.randn(out_ref.shape, generator=gen, dtype=torch.float64).to(DEVICE)
    grads = torch.autograd.grad(
        (out * proj.to(dtype)).sum() + h_n.sum(), [x, h0, *fast.parameters()]
    )
    ref_grads = torch.autograd.grad(
        (out_ref * proj).sum() + hn_ref.sum(), [x64, h64, *reference.parameters()]
    )
    assert torch.equal(x.detach(), x_before) and torch.equal(h0.detach(), h_before), (
        "input modified"
    )
    return [out, h_n, *grads], [out_ref, hn_ref, *ref_grads]


@pytest.mark.parametrize(
    ("case", "tier"),
    [(c, c[-1]) for c in CASES],
    ids=[case_id(c) for c in CASES],
    indirect=["tier"],
)
def test_triton_matches_nn_rnn_fp64(case, tier):
    got, want = run_case(case, torch.float64)
    names = ["output", "h_n", "grad input", "grad h0"] + [f"grad param {i}" for i in range(99)]
    for name, g, w in zip(names, got, want, strict=False):
        assert_close(g, w, torch.float64, name)


# fp16/bf16 on a real GPU: fp32 accumulation and state, outputs rounded to the dtype;
# errors relative to the output magnitude, measured against fp64 nn.RNN.
HALF_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("case", CASES[:10], ids=[case_id(c) for c in CASES[:10]])
def test_triton_low_precision_on_gpu(case, dtype):
    got, want = run_case(case, dtype)
    tol = HALF_TOLERANCE.get(dtype, 1e-4)
    for g, w in zip(got, want, strict=True):
        scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
        err = (g.double() - w).abs().max().item() / scale if w.numel() else 0.0
        assert err <= tol, f"{dtype}: relative error {err:.3g} > {tol}"


def test_plan_is_keyed_on_hidden_size_and_dtype_only():
    assert launch.plan(64, torch.float32).tier == "persistent"
    assert launch.plan(65, torch.float32).tier == "stepwise"
    assert launch.plan(128, torch.bfloat16).tier == "persistent"
    assert launch.plan(512, torch.float16).tier == "stepwise"
    assert launch.plan(64, torch.float64).tier == "persistent"


@pytest.mark.slow
def test_every_kernel_configuration_compiles_for_sm80_and_sm90_within_shared_memory():
    """Builds each configuration the dispatcher can choose to cubin (no GPU needed)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "fastrnn.triton.cubin_report"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "sm_" in line]
    assert len(rows) >= 2 * 20, result.stdout  # every configuration, both targets


def test_op_cuda_kernels_without_hx_use_zero_initial_state():
    """The functions registered as the ops' CUDA kernels, on this device: hx=None (what
    fastrnn.RNN passes for padded input) means zeros, forward and backward."""
    from fastrnn import ops

    reference, _ = paired_rnns(3, 5, torch.float64, num_layers=2, bidirectional=True)
    reference = reference.to(DEVICE)
    weights = [w.detach() for w in reference._flat_weights]
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64).to(DEVICE)
    output, h_n, layer_outputs = ops._rnn_forward_cuda(x, None, weights, None, 2, True, False)
    x_ref = x.clone().requires_grad_()
    out_ref, h_ref = reference(x_ref)
    assert_close(output, out_ref, torch.float64, "output")
    assert_close(h_n, h_ref, torch.float64, "h_n")
    grad_out, grad_h = torch.randn_like(output), torch.randn_like(h_n)
    grad_input, _, grad_weights = ops._rnn_backward_cuda(
        grad_out, grad_h, x, None, weights, None, output, layer_outputs, 2, True, False, True
    )
    expected = torch.autograd.grad(
        (out_ref * grad_out).sum() + (h_ref * grad_h).sum(), [x_ref, *reference._flat_weights]
    )
    for got, want in zip([grad_input, *grad_weights], expected, strict=True):
        assert_close(got, want, torch.float64, "gradient")
