"""The Triton kernels against nn.RNN in float64, forward and every gradient.

With a GPU they run on CUDA tensors (backend "triton"), plus fp16/bf16/fp32 against
cuDNN's own error, and CUDA-graph capture.  Without one the same launch functions are
registered as the ops' CPU kernels for the test (triton_kernels below) and run through
the Triton interpreter (conftest.py sets TRITON_INTERPRET=1), behind the same op and the
same C++ autograd.  Shapes stay small and odd: the interpreter executes every program in
Python, one after another, so cooperative grids run as one program there.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import assert_close, bad_op_calls, paired_rnns, penalty_gradients
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import fastrnn

pytest.importorskip("triton")
from fastrnn.triton import launch, registration  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def triton_kernels():
    """Runs the enclosed fastrnn calls on the Triton kernels, on DEVICE."""
    if DEVICE.type == "cuda":
        allow_tf32 = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False  # IEEE fp32, for fastrnn and cuDNN alike
        with fastrnn.use_backend("triton"):
            yield
        torch.backends.cudnn.allow_tf32 = allow_tf32
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        kernels = registration.register("cpu")
    try:
        with fastrnn.use_backend("cpp"):
            yield
    finally:
        del kernels  # the C++ CPU kernels are the ops' CPU kernels again


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
    # The cooperative tier (what large H uses), forced on small shapes: several batch
    # and column tiles (H=70: three 32-wide column tiles; B=17: two batch tiles).  Under
    # the interpreter one program runs all tiles, so W_hh's columns stay on chip only
    # where there is one column tile (H <= 32).
    (3, 33, 7, 2, True, False, "tanh", True, "cooperative"),
    (17, 16, 7, 1, True, True, "relu", False, "cooperative"),
    (1, 1, 1, 1, False, False, "tanh", True, "cooperative"),
    (3, 70, 7, 1, False, True, "tanh", True, "cooperative"),
    (17, 70, 5, 2, True, True, "tanh", True, "cooperative"),
    (17, 70, 6, 1, False, False, "relu", True, "cooperative"),
    (5, 33, 1, 2, True, True, "relu", True, "cooperative"),
    # The persistent tier reading a GEMM's input projections (FMA programs of short
    # sequences project their input in the kernel: every persistent case above).
    (17, 33, 5, 2, True, True, "tanh", True, "persistent-xp"),
    (1, 16, 7, 1, False, False, "relu", False, "persistent-xp"),
    (3, 1, 4, 2, True, False, "tanh", True, "persistent-xp"),
    # One-row FMA programs running the recurrence alone (over 32 steps: no input
    # projection or weight gradients in the kernel), summing in 8 parts (padded H=64)
    # and in 4 (H=32); and with the plan's warps and one sum (FMA_WHOLE_COLUMNS off).
    (3, 50, 40, 1, True, True, "tanh", True, None),
    (1, 20, 40, 2, False, False, "relu", True, None),
    (3, 50, 40, 2, True, True, "tanh", True, "persistent-onesum"),
    # On padded input they load each step's inputs 4 steps ahead (as the padded
    # "persistent-xp" and "persistent-gemm" cases do: T=4 and 7), here over 37 steps and
    # over 3 (fewer than a pass's 4) in both directions; and only the next step's.
    (3, 50, 37, 1, True, False, "tanh", True, None),
    (3, 16, 3, 1, True, False, "relu", True, "persistent-xp-gemm"),
    (3, 50, 40, 1, True, False, "tanh", True, "persistent-ahead1"),
    (3, 33, 5, 2, True, False, "relu", True, "persistent-xp-gemm-ahead1"),
    # The persistent backward's weight gradients from GEMMs where it would compute them.
    (1, 16, 7, 1, False, False, "tanh", True, "persistent-gemm"),
    (3, 33, 5, 2, True, True, "relu", True, "persistent-gemm"),
    # Over launch.WEIGHT_GRADS_MAX_BATCH rows: several persistent programs (FMA products),
    # weight gradients from GEMMs.
    (40, 16, 3, 1, False, True, "tanh", True, None),
    # The persistent tier on tl.dot (16 rows per program) where it would use FMAs.
    (40, 16, 3, 2, True, False, "relu", True, "persistent-dot"),
    (17, 33, 5, 2, True, True, "tanh", True, "persistent-dot"),
    (3, 16, 7, 1, False, False, "relu", False, "persistent-dot"),
    (1, 40, 4, 1, True, False, "tanh", True, "persistent-dot"),
    # W_hh's columns streamed from L2 (on a GPU they would fit on chip at these sizes).
    (17, 33, 5, 2, True, True, "tanh", True, "cooperative-streamed"),
    (3, 70, 4, 1, False, False, "relu", False, "cooperative-streamed"),
    # One 128-column tile (H=70): W_hh's columns on chip under the interpreter too, so
    # the product runs in launch.COOP_SPLIT_K parts; and a product in one part.
    (17, 70, 5, 2, True, True, "tanh", True, "cooperative-128"),
    (3, 70, 4, 1, False, False, "relu", True, "cooperative-unsplit"),
]

# One-row programs past FMA_PRODUCT_ELEMENTS (padded H=256): padded and packed, both
# directions, two layers, relu and tanh, without biases, H a multiple of 16 or not (on
# an H100/H200 fp32's then on the cooperative tier: launch.one_row_plan); over
# WEIGHT_GRADS_MAX_STEPS steps (the interpreter's plan has 16-row programs for a short
# sequence's weight gradients).
ONE_ROW_H256_CASES = [
    (3, 240, 33, 2, True, False, "tanh", True, None),
    (2, 256, 35, 1, False, True, "relu", False, None),
    (3, 200, 34, 1, True, True, "tanh", True, None),
]


def case_id(case):
    b, h, t, layers, bidir, packed, act, bias, tier = case
    return (
        f"B{b}-H{h}-T{t}-L{layers}-{'bi' if bidir else 'uni'}-{'packed' if packed else 'padded'}"
        f"-{act}-{'bias' if bias else 'nobias'}-{tier or 'auto'}"
    )


def force_tier(monkeypatch, name: str | None) -> None:
    """Run on variant `name` of the plan (launch.variant_settings; None: the plan's own
    choices), e.g. "persistent-dot" or "cooperative-streamed"."""
    for setting, value in launch.variant_settings(name).items():
        monkeypatch.setattr(launch, setting, value)


@pytest.fixture
def tier(request, monkeypatch):
    force_tier(monkeypatch, request.param)
    return request.param


def watch_layer_launches(monkeypatch, record, directions=("forward", "backward")) -> None:
    """record(direction, layer_launch) at each layer's recurrence launch (launch.
    recurrence_forward / recurrence_backward), which then runs as usual."""
    for direction in directions:
        run = getattr(launch, f"recurrence_{direction}")

        def watched(layer_launch, *args, direction=direction, run=run):
            record(direction, layer_launch)
            return run(layer_launch, *args)

        monkeypatch.setattr(launch, f"recurrence_{direction}", watched)


def run_case_planned_afresh(case, dtype):
    """run_case with the kept layer launches dropped before and after: they are kept per
    call key, which device facts that a test changes (shared memory, tensor-core dots)
    are not in."""
    launch.forward_launch.cache_clear()
    launch.backward_launch.cache_clear()
    try:
        return run_case(case, dtype)
    finally:
        launch.forward_launch.cache_clear()
        launch.backward_launch.cache_clear()


# The names of run_case's results, in order (zip with them, strict=False).
RESULT_NAMES = ["output", "h_n", "grad input", "grad h0"] + [f"grad param {i}" for i in range(99)]


def run_case(case, dtype, with_h0=True, contender=fastrnn.RNN, loss_reads=("output", "h_n")):
    """([outputs and gradients of contender in dtype], [the same of nn.RNN in fp64]), of a
    loss that reads the outputs named in loss_reads; with_h0 "detached": h0 given but
    needing no gradient (a state carried over from an earlier batch)."""
    batch, hidden, steps, layers, bidir, packed, act, bias, _ = case
    input_size = 5
    options = dict(num_layers=layers, nonlinearity=act, bias=bias, bidirectional=bidir)
    reference, _ = paired_rnns(input_size, hidden, dtype, **options)
    fast = contender(input_size, hidden, dtype=dtype, **options)
    fast.load_state_dict({k: v.to(dtype) for k, v in reference.state_dict().items()})
    reference.to(DEVICE)
    fast.to(DEVICE)
    gen = torch.Generator().manual_seed(4)
    x64 = torch.randn(steps, batch, input_size, generator=gen, dtype=torch.float64)
    h64 = torch.randn(
        layers * (2 if bidir else 1), batch, hidden, generator=gen, dtype=torch.float64
    )
    x64, h64 = x64.to(DEVICE).requires_grad_(), h64.to(DEVICE).requires_grad_()
    x = x64.detach().to(dtype).requires_grad_()
    h0_grad = with_h0 is True  # else no h0, or a "detached" one
    h0 = h64.detach().to(dtype).requires_grad_(h0_grad)
    if not h0_grad:
        h64 = h64.detach()
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

    out, h_n = forward(fast, x, h0 if with_h0 else None)
    out_ref, hn_ref = forward(reference, x64, h64 if with_h0 else None)
    proj = torch.randn(out_ref.shape, generator=gen, dtype=torch.float64).to(DEVICE)

    def loss(out, h_n):
        # A plain sum's gradient is expanded (strides 0), read as such by the kernels.
        terms = {"output": (out * proj.to(out.dtype)).sum(), "h_n": h_n.sum(),
                 "output summed": out.sum()}  # fmt: skip
        return sum(terms[name] for name in loss_reads)

    inputs = [x, h0] if h0_grad else [x]
    grads = torch.autograd.grad(loss(out, h_n), [*inputs, *fast.parameters()])
    ref_inputs = [x64, h64] if h0_grad else [x64]
    ref_grads = torch.autograd.grad(loss(out_ref, hn_ref), [*ref_inputs, *reference.parameters()])
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
def test_triton_matches_nn_rnn_fp64(case, tier, triton_kernels):
    got, want = run_case(case, torch.float64)
    for name, g, w in zip(RESULT_NAMES, got, want, strict=False):
        assert_close(g, w, torch.float64, name)


@pytest.mark.parametrize("tier", ["persistent", "cooperative"], indirect=True)
def test_triton_without_h0_is_zero_initial_state(tier, triton_kernels):
    got, want = run_case((5, 20, 6, 2, True, False, "tanh", True, tier), torch.float64, False)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, torch.float64, "without h0")


# Copies a call of 2 layers takes of an input whose rows are not time-major: the GEMMs
# need one matrix of rows, the kernels none.  Per (tier, layout): (forward, backward).
STRIDED_INPUT_COPIES = {
    # Projection and weight gradients in the kernels (a short sequence): none.
    ("persistent", "batch_first"): (0, 0),
    ("persistent", "every-other-step"): (0, 0),
    # The input projection's GEMM runs on a batch_first input's rows in batch-major
    # order (a view); every other step's rows are one matrix in neither order.
    ("persistent-xp", "batch_first"): (0, 0),
    ("persistent-xp", "every-other-step"): (1, 0),
    # dW_ih's GEMM pairs the input's rows with dz's, which are time-major.
    ("persistent-gemm", "batch_first"): (0, 1),
    ("persistent-gemm", "every-other-step"): (0, 1),
    ("cooperative", "batch_first"): (0, 1),
    ("cooperative", "every-other-step"): (1, 1),
}


@pytest.mark.parametrize("layout", ["batch_first", "every-other-step"])
@pytest.mark.parametrize(
    "tier", ["persistent", "persistent-xp", "persistent-gemm", "cooperative"], indirect=True
)
def test_triton_input_of_any_strides_matches_nn_rnn(tier, layout, monkeypatch,
                                                    triton_kernels):  # fmt: skip
    """A padded input whose rows are not time-major: batch_first (the op gets a
    transposed view, and its output's gradient arrives transposed; bidirectional), or
    every other step of a longer sequence.  The results are nn.RNN's, and the launch
    functions copy rows only for the GEMMs (STRIDED_INPUT_COPIES): the kernels read the
    input, the input projections and the output's gradient at their (step, batch)
    strides."""
    batch_first = layout == "batch_first"
    reference, fast = paired_rnns(3, 20, torch.float64, num_layers=2, batch_first=batch_first,
                                  bidirectional=batch_first)  # fmt: skip
    reference, fast = reference.to(DEVICE), fast.to(DEVICE)
    full = torch.randn(5 if batch_first else 10, 7, 3, dtype=torch.float64, device=DEVICE)
    results = []
    for module in (fast, reference):
        inp = full.clone().requires_grad_()
        inp_rows = inp if batch_first else inp[::2]  # grads w.r.t. the view: no slice backward
        out, h_n = module(inp_rows)
        loss = (out * torch.arange(out.numel(), device=DEVICE).view_as(out).sin()).sum()
        grads = torch.autograd.grad(loss + h_n.square().sum(), [inp_rows, *module.parameters()])
        results.append([out, h_n, *grads])
    for got, want in zip(*results, strict=True):
        assert_close(got, want, torch.float64, layout)

    # What the module hands the op: [T, B, *] views, the output's gradient as it arrives.
    x = full.transpose(0, 1) if batch_first else full[::2]
    grad_output = torch.randn(5, 7, 40 if batch_first else 20, dtype=torch.float64,
                              device=DEVICE)  # fmt: skip
    if batch_first:  # [B, T, *] as it arrives, seen as [T, B, *]
        grad_output = grad_output.transpose(0, 1)
    # No biases: the GEMM path's other copy, db_hh from db_ih, is not one of rows.
    weights = [w.detach() for i, w in enumerate(fast._flat_weights) if i % 4 < 2]
    device_ops, copies = DeviceOps(), []
    for name in ("forward_persistent", "forward_cooperative", "backward_persistent",
                 "backward_cooperative"):  # fmt: skip
        device_ops.watch(monkeypatch, f"rnn_{name}_kernel")  # not the interpreter's ops
    with device_ops:
        output, _, layer_outputs = launch.rnn_forward_triton(x, None, weights, None, 2,
                                                             batch_first, False)  # fmt: skip
    copies.append(sum(op in ("clone", "copy_") for op in device_ops.ops))
    device_ops.ops.clear()
    with device_ops:
        launch.rnn_backward_triton(grad_output, None, x, None, weights, None, output,
                                   layer_outputs, 2, batch_first, False, True)  # fmt: skip
    copies.append(sum(op in ("clone", "copy_") for op in device_ops.ops))
    assert tuple(copies) == STRIDED_INPUT_COPIES[tier, layout], copies


@pytest.mark.parametrize("tier", ["persistent", "persistent-gemm", "cooperative"],
                         indirect=True)  # fmt: skip
def test_triton_weights_of_any_strides(tier, triton_kernels):
    """Weights that are views with other strides (every other column of a wider W_ih, a
    transposed W_hh, a strided bias) or at an address that is no multiple of 16 bytes,
    as a functional call may pass them: the launch functions hand the kernels
    contiguous, aligned copies (launch.contiguous_weights), so the forward and every
    gradient equal those of the same weights made contiguous."""
    gen = torch.Generator().manual_seed(5)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(DEVICE)

    steps, batch, inputs, hidden = 6, 4, 3, 20
    x, hx = rand(steps, batch, inputs), rand(2, batch, hidden)
    strided = [w for _ in range(2)  # one bidirectional layer
               for w in (rand(hidden, 2 * inputs)[:, ::2], rand(hidden, hidden).t(),
                         rand(2 * hidden)[::2], rand(hidden))]  # fmt: skip
    assert sum(not w.is_contiguous() for w in strided) == 6
    strided[-1] = rand(hidden + 1)[1:]  # contiguous, 8 bytes off alignment
    assert all(not w.data_ptr() & 15 for w in launch.contiguous_weights(strided))
    grad_output, grad_h_n = rand(steps, batch, 2 * hidden), rand(2, batch, hidden)
    results = []
    for weights in (strided, [w.contiguous() for w in strided]):
        output, h_n, layer_outputs = launch.rnn_forward_triton(x, hx, weights, None, 1, True,
                                                               False)  # fmt: skip
        grad_input, grad_hx, grad_weights = launch.rnn_backward_triton(
            grad_output, grad_h_n, x, hx, weights, None, output, layer_outputs, 1, True, False,
            True,
        )  # fmt: skip
        results.append([output, h_n, grad_input, grad_hx, *grad_weights])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# A loss that reads one output: the backward gets no gradient (None) for the other and
# takes it as zeros without reading any (HAS_DY, HAS_DHN), nor writes dh0 without h0.
# And one whose gradients are both expanded (strides 0), read without a copy.
ONE_OUTPUT_CASES = [
    (3, 16, 7, 2, True, False, "tanh", True, None),  # FMA rows, weight gradients in-kernel
    (1, 20, 40, 1, False, False, "relu", True, None),  # one row summing whole columns
    (17, 33, 5, 2, True, True, "tanh", True, "persistent-dot"),
    (3, 33, 7, 2, True, False, "tanh", True, "cooperative"),
    (17, 16, 7, 1, True, True, "relu", False, "cooperative"),
]


@pytest.mark.parametrize(
    ("loss_reads", "with_h0"),
    [
        (("output",), False),
        (("h_n",), True),
        (("output summed", "h_n"), True),
        (("output", "h_n"), "detached"),
    ],
    ids=["output-no-h0", "h_n", "sums", "h0-detached"],
)
@pytest.mark.parametrize(
    ("case", "tier"),
    [(c, c[-1]) for c in ONE_OUTPUT_CASES],
    ids=[case_id(c) for c in ONE_OUTPUT_CASES],
    indirect=["tier"],
)
def test_triton_matches_nn_rnn_with_a_loss_reading_one_output(case, tier, loss_reads, with_h0,
                                                              triton_kernels,
                                                              monkeypatch):  # fmt: skip
    """Gradients of a loss reading one output or both, with and without h0, equal to
    nn.RNN's; with an h0 that needs no gradient the backward launches write none (DH0)."""
    wants_dh0 = []
    watch_layer_launches(monkeypatch, lambda direction, layer_launch: wants_dh0.append(
        layer_launch.meta["DH0"]), directions=("backward",))  # fmt: skip
    got, want = run_case(case, torch.float64, with_h0, loss_reads=loss_reads)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, torch.float64, f"loss reading {loss_reads}")
    assert wants_dh0 and set(wants_dh0) == {with_h0 is True}


# Lowest error bound per dtype, for shapes where cuDNN's own error is near zero.
ERROR_FLOOR = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}


def relative_errors(got, want):
    errors = []
    for g, w in zip(got, want, strict=True):
        scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
        errors.append((g.double() - w).abs().max().item() / scale if w.numel() else 0.0)
    return errors


def assert_error_at_most_twice_cudnns(case, dtype, got, want):
    """Each of run_case's results `got` (fastrnn's, in dtype) is within twice cuDNN's own
    error against fp64 `want` on the same case under the same flags (or ERROR_FLOOR)."""
    cudnn_got, _ = run_case(case, dtype, contender=torch.nn.RNN)
    cudnn_errors = relative_errors(cudnn_got, want)
    for i, (mine, theirs) in enumerate(zip(relative_errors(got, want), cudnn_errors,
                                           strict=True)):  # fmt: skip
        bound = max(2 * theirs, ERROR_FLOOR[dtype])
        assert mine <= bound, f"{dtype} value {i}: error {mine:.3g}, cuDNN {theirs:.3g}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize(
    "case", CASES + ONE_ROW_H256_CASES, ids=[case_id(c) for c in CASES + ONE_ROW_H256_CASES]
)
def test_triton_error_at_most_twice_cudnn_on_gpu(case, dtype, triton_kernels, monkeypatch):
    """Every output and gradient in dtype: fastrnn's error against fp64 nn.RNN is at most
    twice cuDNN's own error on the same inputs and weights (or a small floor)."""
    force_tier(monkeypatch, case[-1])
    got, want = run_case(case, dtype)
    assert_error_at_most_twice_cudnns(case, dtype, got, want)


def test_plan_by_hidden_size_dtype_and_the_devices_shared_memory():
    assert launch.plan(128, torch.float32).tier == "persistent"
    assert launch.plan(129, torch.float32).tier == "cooperative"
    assert launch.plan(128, torch.bfloat16).tier == "persistent"
    assert launch.plan(256, torch.float16).tier == "persistent"
    assert launch.plan(257, torch.bfloat16).tier == "cooperative"
    assert launch.plan(64, torch.float64).tier == "persistent"
    # Opt-in shared memory per block: consumer Ampere/Ada GPUs, H100/H200.
    consumer, hopper = 101_376, 232_448
    assert launch.plan(128, torch.float32, "tf32x3", hopper).tier == "persistent"
    assert launch.plan(128, torch.float32, "tf32x3", consumer).tier == "cooperative"
    assert launch.plan(128, torch.float32, "ieee", consumer).tier == "persistent"
    assert launch.plan(64, torch.float32, "tf32x3", consumer).tier == "persistent"
    assert launch.plan(128, torch.float16, "ieee", consumer).tier == "persistent"
    assert launch.plan(256, torch.float16, "ieee", consumer).tier == "cooperative"
    # Persistent programs: one batch row each with FMA products, more rows where the
    # grid would pass the SMs, tl.dot on 16 rows where [rows, H, H] would not fit.
    assert launch.persistent_rows(1, 128, 132) == 1
    assert launch.persistent_rows(70, 128, 132) == 1
    assert launch.persistent_rows(1024, 64, 66) == 16  # 16 x 64 x 64 products: tl.dot
    assert launch.persistent_rows(500, 64, 132) == 4
    assert launch.persistent_rows(133, 128, 132) == 2
    assert launch.persistent_rows(300, 128, 132) == 16
    assert launch.persistent_rows(3, 256) == 16
    # Cooperative tiles: 16 columns up to padded H=512, 64 above.
    assert launch.plan(512, torch.float16).block_n == 16
    assert launch.plan(513, torch.float32).block_n == 64


def test_cooperative_tiles_widen_where_a_program_would_take_several(monkeypatch):
    """16-column cooperative tiles where each gets a program of its own, 32 where the
    batch's 16-column tiles would outnumber a direction's programs (bigbatch, B=1024 at
    H=256, on an H200's 132 SMs), 64 above padded H=512 (launch.cooperative_block_n);
    a layer's plan takes the programs its device gives a direction."""
    assert launch.cooperative_block_n(256, 64, 132) == 16  # 4 x 16 tiles
    assert launch.cooperative_block_n(512, 64, 132) == 16  # 4 x 32
    assert launch.cooperative_block_n(512, 80, 132) == 32  # 5 x 32
    assert launch.cooperative_block_n(256, 1024, 132) == 32  # 64 x 16
    assert launch.cooperative_block_n(256, 32, 66) == 16  # bidirectional: 2 x 16 each
    assert launch.cooperative_block_n(1024, 1024, 132) == 64
    assert launch.cooperative_block_n(256) == 16  # no bound on the programs
    monkeypatch.setattr(launch, "FORCE_TIER", "cooperative")
    monkeypatch.setattr(launch, "direction_programs", lambda device, directions: 8 // directions)
    call = launch.call_key([torch.zeros(40, 5), torch.zeros(40, 40)])
    assert launch._layer_plan(call, 40, 16, 1).block_n == 16  # 1 x 3 tiles, 8 programs
    assert launch._layer_plan(call, 40, 40, 1).block_n == 32  # 3 x 3 tiles
    assert launch._layer_plan(call, 40, 16, 2).block_n == 16  # 3 tiles, 4 programs
    assert launch._layer_plan(call, 40, 32, 2).block_n == 32  # 6 tiles
    monkeypatch.setattr(launch, "COOP_BLOCK_N", 64)
    assert launch._layer_plan(call, 40, 40, 1).block_n == 64


def test_plan_on_gpus_whose_dots_are_fmas(monkeypatch):
    """Below compute capability 8.0 Triton builds tl.dot from FMAs with W_hh staged in
    shared memory as fp32 (launch.device_tensor_core_dots): the fp16 persistent forward
    on 16 rows at H=128 takes 73,728 bytes for sm_75 (tools/cubin_report.py), over a
    T4's 65,536, where its FMA-row programs take 32,768.  So a T4 runs fp16 at H=128 on
    the persistent tier while the batch fits FMA rows on its SMs, else on the
    cooperative tier; a V100 (98,304) keeps the persistent tier's 16 rows."""
    t4, v100 = 65_536, 98_304  # opt-in shared memory per block
    for dtype in (torch.float16, torch.bfloat16):
        assert launch.plan(128, dtype, "ieee", t4).dot_rows  # tensor cores
        p = launch.plan(128, dtype, "ieee", t4, tensor_core_dots=False)
        assert (p.tier, p.dot_rows) == ("persistent", False)
        assert launch.plan(64, dtype, "ieee", t4, tensor_core_dots=False).dot_rows
        assert launch.plan(128, dtype, "ieee", v100, tensor_core_dots=False).dot_rows
    # The launch functions plan by the call's device, a T4 (40 SMs) here.
    monkeypatch.setattr(launch, "interpreting", lambda device: False)
    monkeypatch.setattr(launch, "device_sms", lambda device: 40)
    monkeypatch.setattr(launch, "device_shared_memory", lambda device: t4)
    monkeypatch.setattr(launch, "device_major", lambda device: 7)
    monkeypatch.setattr(launch, "device_tensor_core_dots", lambda device: False)

    def call(dtype):
        weights = [torch.empty(128, 8, dtype=dtype), torch.empty(128, 128, dtype=dtype)]
        return launch.call_key(weights)

    fp16 = call(torch.float16)
    assert launch._layer_plan(fp16, 128, 80, 1).tier == "persistent"  # 40 programs of 2 rows
    assert launch._layer_plan(fp16, 128, 81, 1).tier == "cooperative"  # 16-row programs
    assert launch._layer_plan(fp16, 128, 41, 2).tier == "cooperative"  # 20 SMs a direction
    # fp32 as the IEEE FMAs Triton builds there whatever the TF32 flag: W_hh's columns on
    # chip, which tf32x3's two copies would not be.
    monkeypatch.setattr(launch, "FP32_DOT_PRECISION", "tf32x3")
    p = launch._layer_plan(call(torch.float32), 128, 8, 1)
    assert (p.tier, p.precision, p.w_on_chip) == ("cooperative", "ieee", True)
    monkeypatch.setattr(launch, "device_tensor_core_dots", lambda device: True)
    assert launch._layer_plan(call(torch.float32), 128, 8, 1).precision == "tf32x3"
    # The persistent backward computing its weight gradients counts W_hh in fp32 too.
    needed = launch.persistent_shared_memory(64, torch.float16, "ieee", weight_grads=True,
                                             tensor_core_dots=False)  # fmt: skip
    assert needed > launch.persistent_shared_memory(64, torch.float16, "ieee", weight_grads=True)


def test_a_plan_without_tensor_core_dots_runs_like_nn_rnn(monkeypatch, triton_kernels):
    """On a V100's plan (98,304 bytes, dots built from FMAs: device_tensor_core_dots
    False) a cooperative program's product with W_hh on chip is one K part where a
    tensor-core GPU's is two (launch.split_k), and matches nn.RNN in fp64, forward and
    backward, both directions.  H=20 in one 32-column tile, which one program holds on
    chip (the interpreter's grid)."""
    force_tier(monkeypatch, "cooperative-32")
    monkeypatch.setattr(launch, "device_shared_memory", lambda device: 98_304)
    launched = []

    def record(_, layer):
        launched.append((layer.meta["SPLIT_K"], layer.meta["W_ON_CHIP"]))

    watch_layer_launches(monkeypatch, record, directions=("forward",))
    case = (3, 20, 4, 1, True, False, "tanh", True, None)
    for tensor_cores, parts in ((True, 2), (False, 1)):
        monkeypatch.setattr(launch, "device_tensor_core_dots", lambda _, cores=tensor_cores: cores)
        launched.clear()
        got, want = run_case_planned_afresh(case, torch.float64)
        assert launched == [(parts, True)]
        for name, g, w in zip(RESULT_NAMES, got, want, strict=False):
            assert_close(g, w, torch.float64, f"tensor-core dots {tensor_cores}: {name}")


def test_plan_holds_cooperative_w_hh_on_chip_where_it_fits():
    a100, hopper = 166_912, 232_448  # opt-in shared memory per block
    assert launch.plan(512, torch.float16, "ieee", hopper).w_on_chip
    assert not launch.plan(1024, torch.float16, "ieee", hopper).w_on_chip
    assert launch.plan(256, torch.float32, "tf32x3", a100).w_on_chip
    assert launch.plan(512, torch.float32, "tf32x3", hopper).w_on_chip  # 16-column tiles
    assert not launch.plan(512, torch.float32, "tf32x3", a100).w_on_chip
    assert launch.plan(512, torch.float32, "ieee", a100).w_on_chip
    assert not launch.plan(1024, torch.float32, "ieee", hopper).w_on_chip
    # Its K parts' products count (launch.split_k): a limit that fits one part only.
    one_part = launch.cooperative_shared_memory(512, torch.float16, "ieee", 16, 1)
    assert launch.plan(512, torch.float16, "ieee", one_part, most_parts=1).w_on_chip
    assert not launch.plan(512, torch.float16, "ieee", one_part, most_parts=4).w_on_chip


def test_cooperative_tensor_core_products_run_in_k_parts(monkeypatch):
    """launch.split_k: a product on tensor cores in COOP_SPLIT_K parts of at least 16
    rows of K (the whole padded H on chip, BLOCK_K rows streamed), an FMA product (fp32
    IEEE) in one; and the cooperative launch passes it to the kernel."""
    assert launch.split_k(torch.float32, "tf32x3", 256) == 4
    assert launch.split_k(torch.float16, "ieee", 512) == 4
    assert launch.split_k(torch.float64, "ieee", 32) == 2
    assert launch.split_k(torch.bfloat16, "ieee", 0) == 4  # streamed, 64 rows a chunk
    assert launch.split_k(torch.float32, "ieee", 256) == 1
    # Without tensor-core dots (T4, V100) every product on chip is one of FMAs.
    assert launch.split_k(torch.float16, "ieee", 256, tensor_core_dots=False) == 1
    assert launch.split_k(torch.float16, "ieee", 0, tensor_core_dots=False) == 4  # streamed
    force_tier(monkeypatch, "cooperative-128")
    call = launch.call_key([torch.zeros(70, 3, dtype=torch.float64),
                            torch.zeros(70, 70, dtype=torch.float64)])  # fmt: skip
    layer = launch.forward_launch(call, 70, 1, 5, 17, 85, True, 3, (51, 3), 70, False, False,
                                  False)  # fmt: skip
    assert layer.meta["W_ON_CHIP"] and layer.meta["SPLIT_K"] == 4


@pytest.mark.parametrize("tier", ["persistent", "cooperative"], indirect=True)
def test_every_launch_compiles_with_fp_fusion_on(tier):
    """Forward and backward pass launch.COMPILE_OPTIONS to Triton: FMA contraction on
    whatever Triton's default (Triton 3.10 turns it off), as the kernels were built."""
    assert launch.COMPILE_OPTIONS == {"enable_fp_fusion": True}
    call = launch.call_key([torch.zeros(70, 3), torch.zeros(70, 70)])
    shape = (70, 1, 5, 17, 85, True, 3, (51, 3), 70, False, False, False)
    forward = launch.forward_launch(call, *shape)
    backward = launch.backward_launch(call, *shape, False, True, None, None)
    for direction, layer in (("forward", forward), ("backward", backward)):
        assert layer.kernel_name == f"rnn_{direction}_{tier}_kernel"
        assert layer.meta["enable_fp_fusion"] is True, layer.meta


def test_a_forward_cooperative_program_with_one_tile_pipelines_as_the_setting_says(
    monkeypatch,
):
    """B=17, H=70 in 64-column tiles: 4 tiles.  On 2 programs each has two, and the
    forward's tile loop is pipelined; on 4 each has one, and it is pipelined where
    COOP_PIPELINE_ONE_TILE says so (the plan's choice; the A/B's "unpipelined": not)."""
    force_tier(monkeypatch, "cooperative-64")
    call_weights = [torch.zeros(70, 3), torch.zeros(70, 70)]
    shape = (70, 1, 5, 17, 85, True, 3, (51, 3), 70, False, False, False)
    for programs, pipelined, setting in [(4, False, False), (2, True, False), (4, True, True)]:
        monkeypatch.setattr(launch, "FORCE_PROGRAMS", programs)
        monkeypatch.setattr(launch, "COOP_PIPELINE_ONE_TILE", setting)
        layer = launch.forward_launch(launch.call_key(call_weights), *shape)
        assert (layer.grid, layer.meta["PIPELINE_TILES"]) == ((programs, 1), pipelined)
    backward = launch.backward_launch(
        launch.call_key(call_weights), *shape, False, True, None, None
    )
    assert "PIPELINE_TILES" not in backward.meta  # its unpipelined loop synchronises more


class DeviceOps(TorchDispatchMode):
    """Records the ATen ops that run on tensor data (each a kernel launch on a GPU) and
    the Triton kernels launched (in `ops`; their grids and keyword arguments in
    `launches`), leaving out what the interpreter runs inside those."""

    NO_KERNEL = {
        "empty",
        "empty_like",
        "new_empty",
        "view",
        "reshape",
        "t",
        "slice",
        "select",
        "_unsafe_view",
    }

    def __init__(self):
        super().__init__()
        self.ops = []
        self.launches = []
        self.in_kernel = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.in_kernel and func.overloadpacket.__name__ not in self.NO_KERNEL:
            self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

    def watch(self, monkeypatch, name):
        """Record each launch of launch.kernels.<name>."""
        kernel = getattr(launch.kernels, name)
        mode = self

        class Watched:
            def __getitem__(self, grid):
                def run(*args, **kwargs):
                    mode.ops.append(name)
                    mode.launches.append((grid, kwargs))
                    mode.in_kernel = True
                    try:
                        return kernel[grid](*args, **kwargs)
                    finally:
                        mode.in_kernel = False

                return run

        monkeypatch.setattr(launch.kernels, name, Watched())


@pytest.mark.parametrize(
    ("programs", "launched", "one_tile_pipelined"), [(4, 4, False), (4, 4, True), (3, 2, False)]
)
def test_cooperative_w_on_chip_with_several_programs(programs, launched, one_tile_pipelined,
                                                      monkeypatch, triton_kernels):  # fmt: skip
    """B=17, H=70 in 64-column tiles: 2 batch x 2 column tiles.  Each program holds its
    W_hh columns on chip, so a program's tiles must share them: 4 programs for 4 tiles,
    and 3 rounded down to 2.  On a GPU: 3 steps from h0.  Under the interpreter, which runs one
    program after another, only what needs no grid barrier: T=1 without h0, where the
    product with W_hh is skipped (h_prev = 0), so there this checks the program count
    and the rest of the tile logic, not the columns on chip."""
    force_tier(monkeypatch, "cooperative")
    monkeypatch.setattr(launch, "COOP_BLOCK_N", 64)
    monkeypatch.setattr(launch, "FORCE_PROGRAMS", programs)
    monkeypatch.setattr(launch, "COOP_PIPELINE_ONE_TILE", one_tile_pipelined)
    device_ops = DeviceOps()
    device_ops.watch(monkeypatch, "rnn_forward_cooperative_kernel")
    reference, fast = paired_rnns(5, 70, torch.float64)
    reference, fast = reference.to(DEVICE), fast.to(DEVICE)
    steps = 3 if DEVICE.type == "cuda" else 1
    x = torch.randn(steps, 17, 5, dtype=torch.float64, device=DEVICE)
    h0 = torch.randn(1, 17, 70, dtype=torch.float64, device=DEVICE)
    h0 = h0 if DEVICE.type == "cuda" else None
    with torch.no_grad():
        out, h_n = fast(x, h0)
        out_ref, h_ref = reference(x, h0)
    # Pipelined where a program has several tiles, or by COOP_PIPELINE_ONE_TILE.
    assert [(grid, kw["W_ON_CHIP"], kw["PIPELINE_TILES"]) for grid, kw in device_ops.launches] == [
        ((launched, 1), True, launched < 4 or one_tile_pipelined)
    ]
    assert_close(out, out_ref, torch.float64, "output")
    assert_close(h_n, h_ref, torch.float64, "h_n")


def run_tool(name: str, *args: str, timeout: int = 300) -> str:
    """What tools/<name> prints, run without the interpreter; it must succeed."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(ROOT / "tools" / name), *args],
                            capture_output=True, text=True, timeout=timeout, env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def import_tool(name: str):
    """tools/<name>.py as a module, imported in this process."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_host_cost_tool_runs_the_triton_chain_on_cpu():
    """tools/host_cost_cpu.py (the docs' host-cost figures) still runs: it replaces
    launch internals, which a rename would break."""
    stdout = run_tool("host_cost_cpu.py", "--smoke")
    assert "| hello |" in stdout and "| packed bi2L |" in stdout


def test_tier_ab_tool_validates_times_and_records_on_cpu(tmp_path):
    """tools/gpu_tier_ab.py's plumbing (validation errors kept per contender, timing, the
    JSON) runs, on CPU tensors (fastrnn's C++ kernels; the variants' launch settings
    unused), so a GPU session does not find it broken."""
    out = tmp_path / "tiers.json"
    run_tool("gpu_tier_ab.py", "--device", "cpu", "--cases", "float32/hello", "--repeats", "1",
             "--json", str(out))  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [row["mode"] for row in rows] == ["inference", "training"] * 2
    replay = {"fastrnn", "fastrnn-replay", "nn.RNN"}
    project = {"persistent", "persistent-xp", "persistent-gemm", "nn.RNN"}
    for row, contenders in zip(rows, [replay, replay, project, project], strict=True):
        assert set(row["errors"]) == set(row["timings"]) == contenders
        assert max(row["errors"].values()) <= row["allowed"]


def test_step_profile_tool_validates_times_and_records_on_cpu(tmp_path):
    """tools/gpu_step_profile.py's plumbing (validation, wall times, the profile's busy
    time and top kernels, the JSON) runs on CPU tensors (fastrnn's C++ kernels; the CPU
    ops stand in for kernels), so a GPU session does not find it broken; its union of
    kernel intervals counts overlapping ones once."""
    out = tmp_path / "steps.json"
    run_tool("gpu_step_profile.py", "--device", "cpu", "--rows", "hello", "--dtypes", "float32",
             "--repeats", "1", "--json", str(out))  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["contender"]) for r in rows] == [
        (mode, name) for mode in ("inference", "training") for name in ("fastrnn", "nn.RNN")
    ]
    for row in rows:
        assert row["wall_us"] > 0 and row["device_us"] > 0 and row["kernels_per_call"] >= 1
        assert row["top"] and all(us > 0 for _, us, _ in row["top"]), row
    busy_us = import_tool("gpu_step_profile").busy_us
    assert busy_us([(5, 7), (0, 2), (1, 3), (6, 6.5)]) == 5


def test_gemm_ab_tool_validates_times_and_records(tmp_path):
    """tools/gpu_gemm_ab.py's plumbing (each contender validated, timed, the JSON) runs on
    DEVICE: on CPU tensors fastrnn's TF32 GEMM through the interpreter, so a GPU session
    does not find it broken."""
    gpu_gemm_ab = import_tool("gpu_gemm_ab")
    out = tmp_path / "gemms.json"
    gpu_gemm_ab.main(["--device", DEVICE.type, "--shapes", "hello", "--repeats", "1",
                      "--json", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [row["gemm"] for row in rows] == ["projection", "input grad", "dW_ih", "dW_hh"]
    for row in rows:
        assert set(row["seconds"]) == set(row["errors"]) == set(gpu_gemm_ab.CONTENDERS)
        assert max(row["errors"].values()) <= 1


def test_error_paths_tool_raises_on_every_path_in_its_own_process():
    """tools/error_paths.py: each path a C++ argument error takes to Python raises, each
    in its own process, so that a crash (the H200's build crashed on the CUDA paths whose
    message formats a number: docs/performance.md) fails a test rather than the run; the
    CUDA paths where there is a GPU."""
    paths = run_tool("error_paths.py", "--list").split()
    assert len(paths) == 9
    for path in paths:
        if "cuda" not in path or torch.cuda.is_available():
            assert f"{path}: raised" in run_tool("error_paths.py", path, timeout=120)


def test_sanitizer_cases_run_and_match_nn_rnn(monkeypatch, triton_kernels):
    """tools/sanitize_kernels.py's cases, which compute-sanitizer runs on a GPU
    (tools/gpu_check.sh), run here too, on DEVICE: each case's parameter gradients within
    1e-3 of nn.RNN's (fp32), so a GPU session does not find the tool broken."""
    force_tier(monkeypatch, None)  # the plan's settings, restored after the cases set theirs
    tool = import_tool("sanitize_kernels")
    # On the CPU, backend "cpp" runs the Triton kernels the fixture registered there.
    errors = tool.run_cases(DEVICE.type, "triton" if DEVICE.type == "cuda" else "cpp")
    assert len(errors) == len(tool.CASES) and max(errors) < 1e-3, errors


@pytest.mark.slow
def test_every_kernel_family_compiles_for_sm75_sm80_and_sm90_within_shared_memory():
    """Builds each family of configurations the dispatcher can choose to cubin (no GPU
    needed) at its largest tile, where shared memory peaks, and at its smallest, for a
    T4, an A100 and an H100 (tools/cubin_report.py --edges: under half the whole
    report's builds, which a cold Triton cache makes ~10 minutes here)."""
    stdout = run_tool("cubin_report.py", "--edges", timeout=900)  # cold cache: every build
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "sm_" in line]
    for target in ("sm_75", "sm_80", "sm_90"):
        assert sum(f"| {target} |" in row for row in rows) >= 150, stdout


def sass_counts(*args: str) -> dict[str, int]:
    """tools/sass_report.py's counts of one kernel configuration's time loop."""
    stdout = run_tool("sass_report.py", *args)
    header, _, row = [line for line in stdout.splitlines() if line.startswith("|")]
    names = [cell.strip() for cell in header.strip("|").split("|")][1:]
    cells = [cell.strip() for cell in row.strip("|").split("|")[1:]]
    return dict(zip(names, [float(c) if c != "-" else None for c in cells], strict=True))


@pytest.mark.slow
def test_launch_layouts_in_the_sass():
    """As built for sm_90: a one-row FMA program on launch.persistent_program's warps,
    summing whole columns, synchronises its threads less a step than on the plan's warps
    and does not spill; loading its inputs 4 steps ahead, it reads a load's result 3
    steps or more after the load, where loading one step ahead it waits within the step;
    at padded H=256 (launch.one_row_plan) on 255 registers it spills under 512 bytes
    (fp32, where ptxas left alone takes 128 and spills 1,336), and its fp32 backward
    prefetches the dy and y of the step after next (launch.ONE_ROW_PREFETCH: 2
    prefetches a step, none without); a cooperative program's
    product in K parts is each warp's share of the tile, not the whole tile (which
    Triton 3.6 built on every warp with one part);
    a 16-row fp32 IEEE program at H=128 in K parts (launch.dot_parts) does not spill,
    and its longest chain of dependent FMAs is shorter than one product's, forward and
    backward."""
    p = launch.plan(128, torch.float32)
    one_row = ["forward_persistent", "float32", "--block-h", "128", "--rows", "1"]
    program = launch.persistent_program(p, 1)
    assert program["STEPS_AHEAD"] == 4
    whole = sass_counts(*one_row, "--sum-in-parts", "--warps", str(program["num_warps"]),
                        "--steps-ahead", "4")  # fmt: skip
    split = sass_counts(*one_row, "--warps", str(p.num_warps))
    assert whole["BAR"] == 2 < split["BAR"] and whole["local"] == 0, (whole, split)
    next_step = sass_counts(*one_row, "--sum-in-parts", "--warps", str(program["num_warps"]))
    assert whole["load cover"] >= 3 > 1 > next_step["load cover"], (whole, next_step)
    p256 = launch.one_row_plan(launch.plan(256, torch.float32, force_tier="persistent"),
                               torch.float32, None, True)  # fmt: skip
    program = launch.persistent_program(p256, 1)
    wide = sass_counts("forward_persistent", "float32", "--block-h", "256", "--rows", "1",
                       "--sum-in-parts", "--warps", str(program["num_warps"]),
                       "--one-row")  # fmt: skip
    assert wide["BAR"] == 2 and wide["registers"] == program["maxnreg"], wide
    assert wide["local"] < 512, wide
    backward = ["backward_persistent", "float32", "--block-h", "256", "--rows", "1",
                "--sum-in-parts", "--warps", str(program["num_warps"]), "--one-row"]  # fmt: skip
    prefetching = sass_counts(*backward)
    plain = sass_counts(*backward, "--no-prefetch")
    assert prefetching["CCTL"] == 2 and plain["CCTL"] == 0, (prefetching, plain)
    assert prefetching["registers"] == program["maxnreg"] and prefetching["local"] < 512
    parts = launch.split_k(torch.float32, "tf32x3", 256)
    coop = sass_counts("forward_cooperative", "float32", "--precision", "tf32x3", "--block-h",
                       "256", "--block-n", "32", "--split-k", str(parts))  # fmt: skip
    tile_products = (16 * 32 * 256) // (16 * 8 * 8) * 3  # tf32x3: 3 m16n8k8 per block
    assert coop["HMMA"] == tile_products // launch.COOP_NUM_WARPS, coop
    for kernel in ("forward_persistent", "backward_persistent"):
        ieee_rows = [kernel, "float32", "--block-h", "128", "--warps", str(p.num_warps)]
        in_parts = sass_counts(*ieee_rows)
        in_one = sass_counts(*ieee_rows, "--dot-parts", "1")
        assert in_parts["local"] == 0 and in_parts["chain"] < in_one["chain"], (in_parts, in_one)


@pytest.mark.parametrize("tier", ["persistent", "persistent-xp", "cooperative"], indirect=True)
def test_one_recurrence_launch_per_layer_for_both_directions(tier, monkeypatch):
    """An inference call of a 2-layer bidirectional RNN: per layer one recurrence launch,
    which projects the input itself on the persistent tier (a short sequence), else
    after one input GEMM per direction; one zero-fill of the barrier counters on the
    cooperative tier; nothing else (cuDNN takes 9 kernels for this on a GPU).  Its
    backward: one recurrence launch per layer too."""
    tier = tier.removesuffix("-xp")
    device_ops = DeviceOps()
    for name in ("forward_persistent", "forward_cooperative", "backward_persistent",
                 "backward_cooperative"):  # fmt: skip
        device_ops.watch(monkeypatch, f"rnn_{name}_kernel")
    reference, _ = paired_rnns(3, 5, torch.float64, num_layers=2, bidirectional=True)
    reference = reference.to(DEVICE)
    weights = [w.detach() for w in reference._flat_weights]
    x = torch.randn(4, 2, 3, dtype=torch.float64, device=DEVICE)
    with device_ops:
        output, _, layer_outputs = launch.rnn_forward_triton(x, None, weights, None, 2, True,
                                                             False)  # fmt: skip
    layer = ["addmm", "addmm", f"rnn_forward_{tier}_kernel"]
    if launch.PROJECT_INPUT_MAX_STEPS and tier == "persistent":
        layer = layer[2:]
    assert device_ops.ops == (["zeros"] if tier == "cooperative" else []) + layer * 2
    device_ops.ops.clear()
    with device_ops:
        launch.rnn_backward_triton(torch.ones_like(output), output.new_ones(4, 2, 5),
                                   x, None, weights, None, output, layer_outputs, 2, True,
                                   False, True)  # fmt: skip
    assert device_ops.ops.count(f"rnn_backward_{tier}_kernel") == 2
    assert device_ops.ops.count("zeros") == (1 if tier == "cooperative" else 0)
    # A short sequence's persistent backward computes the weight gradients itself: then
    # the only GEMMs are each bidirectional layer's input gradient, one per direction.
    gemms = [op for op in device_ops.ops if op in ("mm", "addmm_", "addmm", "sum", "clone")]
    if tier == "persistent":
        assert gemms == ["mm", "addmm_"] * 2
    else:
        assert len(gemms) > 4


FILLS = ("zeros", "zeros_like", "new_zeros", "zero_", "fill_")


@pytest.mark.parametrize("tier", ["persistent", "cooperative"], indirect=True)
def test_a_backward_fills_and_copies_no_gradient(tier, triton_kernels, monkeypatch):
    """The gradient of an output that did not reach the loss reaches the backward op as
    None, not as a zero fill (nor is a gradient of h0 made without h0): in a training
    step through the module, and in the launch function, whose only fill is the
    cooperative tier's barrier counters.  Expanded gradients (a sum's) are read as they
    are: the same ops as dense ones, no copy."""
    rnn = fastrnn.RNN(3, 5, num_layers=2, dtype=torch.float64, device=DEVICE)
    x = torch.randn(4, 2, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    for loss_of in (lambda out, h_n: out.square().sum(), lambda out, h_n: h_n.square().sum()):
        device_ops = DeviceOps()
        loss = loss_of(*rnn(x))
        with device_ops:
            loss.backward()
        assert "rnn_backward" in device_ops.ops
        assert not [op for op in device_ops.ops if op in FILLS], device_ops.ops
    weights = [w.detach() for w in rnn._flat_weights]
    output, h_n, layer_outputs = launch.rnn_forward_triton(x.detach(), None, weights, None, 2,
                                                           False, False)  # fmt: skip

    device_ops = DeviceOps()
    device_ops.watch(monkeypatch, f"rnn_backward_{tier}_kernel")

    def backward_ops(grad_output, grad_h_n):
        device_ops.ops = []
        with device_ops:
            launch.rnn_backward_triton(grad_output, grad_h_n, x.detach(), None, weights, None,
                                       output, layer_outputs, 2, False, False, True)  # fmt: skip
        return device_ops.ops

    for grads in ((torch.ones_like(output), None), (None, torch.ones_like(h_n))):
        fills = [op for op in backward_ops(*grads) if op in FILLS]
        assert fills == (["zeros"] if tier == "cooperative" else [])
    one = torch.ones((), dtype=torch.float64, device=DEVICE)
    dense_ops = backward_ops(torch.ones_like(output), torch.ones_like(h_n))
    assert backward_ops(one.expand(output.shape), one.expand(h_n.shape)) == dense_ops


def test_a_short_one_direction_backward_is_its_kernels_alone(monkeypatch):
    """A 2-layer one-direction backward of a short sequence: per layer one recurrence
    launch that computes the weight gradients and the input gradient too; no other op
    but allocations and views."""
    device_ops = DeviceOps()
    device_ops.watch(monkeypatch, "rnn_backward_persistent_kernel")
    reference, _ = paired_rnns(3, 5, torch.float64, num_layers=2)
    reference = reference.to(DEVICE)
    weights = [w.detach() for w in reference._flat_weights]
    x = torch.randn(4, 2, 3, dtype=torch.float64, device=DEVICE)
    output, h_n, layer_outputs = launch.rnn_forward_triton(x, None, weights, None, 2, False,
                                                           False)  # fmt: skip
    grad_out, grad_h = torch.randn_like(output), torch.randn_like(h_n)
    with device_ops:
        grad_input, _, grad_weights = launch.rnn_backward_triton(
            grad_out, grad_h, x, None, weights, None, output, layer_outputs, 2, False, False, True
        )  # fmt: skip
    assert device_ops.ops == ["rnn_backward_persistent_kernel"] * 2
    x_ref = x.clone().requires_grad_()
    out_ref, h_ref = reference(x_ref)
    expected = torch.autograd.grad(
        (out_ref * grad_out).sum() + (h_ref * grad_h).sum(), [x_ref, *reference._flat_weights]
    )
    for got, want in zip([grad_input, *grad_weights], expected, strict=True):
        assert_close(got, want, torch.float64, "gradient")
    assert_close(output, reference(x)[0], torch.float64, "output")


@pytest.mark.parametrize("tier", ["persistent", "cooperative"], indirect=True)
def test_ops_on_triton_kernels_without_hx_and_opcheck(tier, triton_kernels):
    """The ops themselves on the Triton kernels: hx=None (what fastrnn.RNN passes for
    padded input) means zeros, forward and backward; opcheck of both ops."""
    reference, _ = paired_rnns(3, 5, torch.float64, num_layers=2, bidirectional=True)
    reference = reference.to(DEVICE)
    weights = [w.detach() for w in reference._flat_weights]
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64).to(DEVICE)
    args = (x, None, weights, None, 2, True, False)
    output, h_n, layer_outputs = torch.ops.fastrnn.rnn_forward(*args)
    x_ref = x.clone().requires_grad_()
    out_ref, h_ref = reference(x_ref)
    assert_close(output, out_ref, torch.float64, "output")
    assert_close(h_n, h_ref, torch.float64, "h_n")
    grad_out, grad_h = torch.randn_like(output), torch.randn_like(h_n)
    backward_args = (grad_out, grad_h, x, None, weights, None, output, layer_outputs,
                     2, True, False, True)  # fmt: skip
    grad_input, grad_hx, grad_weights = torch.ops.fastrnn.rnn_backward(*backward_args)
    assert grad_hx.numel() == 0
    expected = torch.autograd.grad(
        (out_ref * grad_out).sum() + (h_ref * grad_h).sum(), [x_ref, *reference._flat_weights]
    )
    for got, want in zip([grad_input, *grad_weights], expected, strict=True):
        assert_close(got, want, torch.float64, "gradient")
    torch.library.opcheck(torch.ops.fastrnn.rnn_forward.default, args)
    torch.library.opcheck(torch.ops.fastrnn.rnn_backward.default, backward_args)
    for missing in (0, 1):  # the gradient of an output that did not reach the loss: None
        without = tuple(None if i == missing else a for i, a in enumerate(backward_args))
        torch.library.opcheck(torch.ops.fastrnn.rnn_backward.default, without)


@pytest.mark.parametrize("case", range(len(bad_op_calls())), ids=[c[0] for c in bad_op_calls()])
def test_triton_kernels_refuse_bad_arguments_as_the_cpu_kernels_do(case, triton_kernels):
    """The CPU kernels' argument checks (tests/test_ops.py), before any Triton kernel
    reads out of bounds."""
    _, op, args, words = bad_op_calls(DEVICE)[case]
    with pytest.raises(RuntimeError, match=words):
        op(*args)


@pytest.mark.parametrize("tier", ["persistent", "cooperative"], indirect=True)
def test_gradient_penalty_on_triton_kernels_matches_nn_rnn_on_the_cpu(tier, triton_kernels):
    """create_graph=True on the Triton path (where nn.RNN on cuDNN cannot): the forward
    on the kernels, the recorded backward through the reference; against nn.RNN in fp64
    on the CPU."""
    reference, fast = paired_rnns(3, 5, torch.float64, num_layers=2, bidirectional=True)
    fast.to(DEVICE)
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    results = []
    for rnn, inp in ((reference, x.clone()), (fast, x.to(DEVICE))):
        inp.requires_grad_()
        out, h_n = rnn(inp)
        loss = out.pow(2).sum() + h_n.pow(3).sum()
        results.append(penalty_gradients(loss, [inp, *rnn.parameters()]))
    for got, want in zip(results[1], results[0], strict=True):
        assert_close(got.cpu(), want, torch.float64, "second-order gradient")


def test_batched_gradients_on_triton_kernels_match_nn_rnn_on_the_cpu(triton_kernels):
    """A vectorized Jacobian (vmapped gradients) after a forward on the Triton kernels:
    the backward through the reference, against nn.RNN in fp64 on the CPU."""
    reference, fast = paired_rnns(3, 4, torch.float64, num_layers=2, bidirectional=True)
    fast.to(DEVICE)
    x = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    jacobians = [
        torch.autograd.functional.jacobian(lambda x, rnn=rnn: rnn(x)[1], inp, vectorize=True)
        for rnn, inp in ((reference, x), (fast, x.to(DEVICE)))
    ]
    assert_close(jacobians[1].cpu(), jacobians[0], torch.float64, "Jacobian of h_n")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("tf32", [False, True], ids=["ieee", "tf32"])
@pytest.mark.parametrize("tier", ["persistent", "cooperative"], indirect=True)
def test_forward_and_backward_capture_in_a_cuda_graph(tier, tf32, triton_kernels, monkeypatch):
    """Padded input: capture a training step, replay it, get eager's numbers; in IEEE
    fp32, and under nn.RNN's TF32 flag, where fp32 GEMMs run on TF32 (launch.TF32_GEMMS;
    here however few their multiply-adds)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    monkeypatch.setattr(launch, "GEMM_TF32_MIN_WORK", 0)
    torch.manual_seed(0)
    rnn = fastrnn.RNN(8, 48, num_layers=2, bidirectional=True, device=DEVICE)
    x = torch.randn(12, 5, 8, device=DEVICE, requires_grad=True)

    def step():
        out, h_n = rnn(x)
        (out.square().sum() + h_n.sum()).backward()
        return out.detach().clone(), x.grad.clone(), [p.grad.clone() for p in rnn.parameters()]

    eager_out, eager_dx, eager_dw = step()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm up on a side stream, as torch.cuda.graphs advises
            x.grad = None
            rnn.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    x.grad = None
    rnn.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        out, h_n = rnn(x)
        (out.square().sum() + h_n.sum()).backward()
    with torch.no_grad():
        x.grad.zero_()
        for p in rnn.parameters():
            p.grad.zero_()
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, eager_out)
    torch.testing.assert_close(x.grad, eager_dx)
    for got, want in zip([p.grad for p in rnn.parameters()], eager_dw, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("tier", ["persistent", "cooperative"], indirect=True)
def test_a_training_step_never_waits_for_the_device(packed, tier, triton_kernels):
    """No device-to-host copy, .item() or stream synchronisation in a forward and
    backward: packed input's tables go to the device in one asynchronous copy."""
    torch.manual_seed(0)
    rnn = fastrnn.RNN(8, 48, num_layers=2, bidirectional=True, device=DEVICE)
    x = torch.randn(12, 5, 8, device=DEVICE, requires_grad=True)

    def make_batch():  # a pack per step: a backward frees the pack's graph
        return pack_padded_sequence(x, [12, 9, 9, 4, 1]) if packed else x

    def training_step(batch):
        out, h_n = rnn(batch)
        ((out.data if packed else out).square().sum() + h_n.sum()).backward()

    training_step(make_batch())  # compiles the kernels
    batch = make_batch()  # torch's packing, outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        training_step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_capturing_a_packed_sequence_says_why_it_cannot(triton_kernels):
    """Packed input's batch sizes are host data copied per call: capture refuses it
    rather than record a copy from a host buffer that is reused afterwards."""
    rnn = fastrnn.RNN(8, 16, device=DEVICE)
    x = torch.randn(6, 3, 8, device=DEVICE)
    packed = pack_padded_sequence(x, [6, 4, 2])
    rnn(packed)  # compiled outside the capture
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        rnn(packed)
    torch.cuda.current_stream().wait_stream(stream)
    with pytest.raises(RuntimeError, match="packed sequence cannot be captured"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            rnn(packed)


class ScriptedTagger(torch.nn.Module):
    """A model for torch.jit.script: the RNN on padded and packed input, then the cell."""

    def __init__(self, module):
        super().__init__()
        self.rnn = module.RNN(5, 7, num_layers=2, bidirectional=True, batch_first=True)
        self.cell = module.RNNCell(14, 3, nonlinearity="relu")

    def forward(self, x, lengths):
        out, h_n = self.rnn(x)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        packed_out, packed_h_n = self.rnn(packed, h_n)
        return [out, h_n, packed_out.data, packed_h_n, self.cell(out[:, -1])]


@pytest.mark.parametrize("tier", ["persistent", "cooperative"], indirect=True)
def test_a_scripted_model_runs_the_triton_kernels(tier, triton_kernels):
    """torch.jit.script: the scripted graph calls the op whose kernels these are, with
    nn.RNN's results, forward and backward (CPU: the interpreter, behind the same op)."""
    torch.manual_seed(0)
    reference = ScriptedTagger(torch.nn).double().to(DEVICE)
    model = ScriptedTagger(fastrnn).double().to(DEVICE)
    model.load_state_dict(reference.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script's own
        scripted = torch.jit.script(model)
    x = torch.randn(3, 4, 5, dtype=torch.float64, device=DEVICE)
    lengths = torch.tensor([4, 1, 3])
    results = []
    for contender in (reference, scripted):
        x_leaf = x.clone().requires_grad_()
        outputs = contender(x_leaf, lengths)
        sum(o.square().sum() for o in outputs).backward()
        results.append(outputs + [x_leaf.grad] + [p.grad for p in contender.parameters()])
    for got, want in zip(results[1], results[0], strict=True):
        assert_close(got, want, torch.float64, "scripted")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compile_reduce_overhead_replays_training_steps_as_eager(triton_kernels):
    """torch.compile(mode="reduce-overhead"): forward and backward recorded in CUDA graphs
    (none skipped) and replayed, with eager's numbers at every step."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    rnn = fastrnn.RNN(8, 48, num_layers=2, bidirectional=True, device=DEVICE)
    compiled = torch.compile(rnn, mode="reduce-overhead", fullgraph=True)

    def training_step(module, x):
        out, h_n = module(x)
        (out.square().sum() + h_n.sum()).backward()
        results = [out.detach().clone(), h_n.detach().clone(), x.grad.clone()]
        results += [p.grad.clone() for p in rnn.parameters()]
        rnn.zero_grad(set_to_none=True)
        return results

    for _ in range(4):  # warm-up, recording, then replays
        torch.compiler.cudagraph_mark_step_begin()
        x = torch.randn(12, 5, 8, device=DEVICE)
        got = training_step(compiled, x.clone().requires_grad_())
        want = training_step(rnn, x.clone().requires_grad_())
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)
    assert counters["inductor"]["cudagraph_skips"] == 0
    torch._dynamo.reset()


def test_input_projected_in_the_kernel_for_short_sequences_on_fma_programs(monkeypatch):
    """input_block: the persistent forward projects the input itself (BLOCK_I, the input
    size padded to a power of two, at least 16) up to PROJECT_INPUT_MAX_STEPS steps where
    its FMA product fits PROJECT_INPUT_ELEMENTS; a GEMM does it otherwise (0)."""

    def block(steps, input_size, batch=3):
        call = launch.call_key([torch.zeros(16, input_size), torch.zeros(16, 16)])
        return launch.forward_launch(call, 16, 1, steps, batch, steps * batch, True, input_size,
                                     (batch * input_size, input_size), 16, False, False,
                                     False).block_i  # fmt: skip

    assert block(5, 4) == 16 and block(1, 40) == 64
    assert block(launch.PROJECT_INPUT_MAX_STEPS, 512) == 512
    assert block(launch.PROJECT_INPUT_MAX_STEPS + 1, 4) == 0  # long: a GEMM is cheaper
    assert block(5, 513) == 0  # 1 row x 1024 x 16 is over PROJECT_INPUT_ELEMENTS
    monkeypatch.setattr(launch, "FMA_PRODUCT_ELEMENTS", 0)  # 16-row tl.dot programs
    assert block(5, 4) == 0
    monkeypatch.setattr(launch, "FMA_PRODUCT_ELEMENTS", 8 * 64 * 64)
    monkeypatch.setattr(launch, "FORCE_TIER", "cooperative")
    assert block(5, 4) == 0


def one_layer_launches(hidden: int, batch: int, steps: int, padded: bool = True,
                       dtype: torch.dtype = torch.float32):  # fmt: skip
    """(forward, backward) KernelLaunch of one unidirectional CPU layer (I=4, no bias or
    h0; the backward with dy and dh_n given, the input gradient wanted)."""
    weights = [torch.zeros(hidden, 4, dtype=dtype), torch.zeros(hidden, hidden, dtype=dtype)]
    call = launch.call_key(weights)
    args = (hidden, 1, steps, batch, steps * batch, padded, 4, (batch * 4, 4), hidden, False,
            False, False)  # fmt: skip
    gradient_strides = (batch * hidden, hidden, 1)
    return (launch.forward_launch(call, *args),
            launch.backward_launch(call, *args, False, True, gradient_strides,
                                   gradient_strides))  # fmt: skip


def test_one_row_fma_programs_sum_whole_columns(monkeypatch):
    """persistent_program: a one-row persistent program (FMA products) that runs the
    recurrence alone runs one warp per 32 padded columns of W_hh, summing in parts
    (SUM_IN_PARTS), forward and backward; one that also projects its input or computes
    the weight gradients (short sequences), programs of more rows, and every program
    with FMA_WHOLE_COLUMNS off, the plan's warps and one sum."""

    def programs(hidden, batch=3, steps=40):
        return [(layer.meta["BLOCK_B"], layer.meta["num_warps"], layer.meta["SUM_IN_PARTS"])
                for layer in one_layer_launches(hidden, batch, steps)]  # fmt: skip

    assert programs(100) == [(1, 4, True)] * 2  # padded H=128
    assert programs(33) == [(1, 2, True)] * 2
    assert programs(20) == programs(1) == [(1, 1, True)] * 2
    p = launch.plan(128, torch.float32)
    plan_warps = p.num_warps
    assert programs(100, batch=1, steps=5) == [(1, plan_warps, False)] * 2  # short: fused
    assert launch.persistent_program(p, 2) == {
        "num_warps": plan_warps,
        "SUM_IN_PARTS": False,
        "STEPS_AHEAD": 1,
    }
    monkeypatch.setattr(launch, "FMA_WHOLE_COLUMNS", False)
    assert programs(100) == [(1, plan_warps, False)] * 2


def test_one_row_programs_load_their_inputs_steps_ahead(monkeypatch):
    """persistent_program: a one-row program summing whole columns (the recurrence alone)
    loads its inputs PERSISTENT_STEPS_AHEAD (4) steps ahead on padded input, forward
    and backward; on packed input, one that also projects its input or computes the
    weight gradients, programs of more rows, and every program with the setting at 1,
    one step ahead."""

    def ahead(hidden, batch=3, steps=40, padded=True):
        return [layer.meta["STEPS_AHEAD"]
                for layer in one_layer_launches(hidden, batch, steps, padded)]  # fmt: skip

    assert launch.PERSISTENT_STEPS_AHEAD == 4
    assert ahead(100) == ahead(33) == [4, 4]
    assert ahead(100, padded=False) == [1, 1]
    assert ahead(100, batch=1, steps=5) == [1, 1]  # short: input and weight grads fused
    p = launch.plan(128, torch.float32)
    assert launch.persistent_program(p, 1)["STEPS_AHEAD"] == 4
    assert launch.persistent_program(p, 1, recurrence_only=False)["STEPS_AHEAD"] == 1
    assert launch.persistent_program(p, 2)["STEPS_AHEAD"] == 1
    monkeypatch.setattr(launch, "PERSISTENT_STEPS_AHEAD", 1)
    assert ahead(100) == [1, 1]


def as_h200(monkeypatch) -> None:
    """launch's device facts of an H200: 132 SMs, 227 KB of shared memory a block,
    tensor-core dots, compute capability 9; not the interpreter."""
    monkeypatch.setattr(launch, "interpreting", lambda device: False)
    monkeypatch.setattr(launch, "device_sms", lambda device: 132)
    monkeypatch.setattr(launch, "device_shared_memory", lambda device: 232_448)
    monkeypatch.setattr(launch, "device_tensor_core_dots", lambda device: True)
    monkeypatch.setattr(launch, "device_major", lambda device: 9)


def test_fp32_one_row_backward_prefetches_on_padded_input(monkeypatch):
    """backward_launch: a one_row plan's fp32 backward programs prefetch their inputs
    (kernels._prefetch) on padded input, whether or not a short sequence's weight
    gradients leave them (GEMMs); not on packed input, in fp16, in programs of 4 steps
    ahead (H=128), with "noprefetch" (ONE_ROW_PREFETCH), on a ROCm build, or under the
    interpreter, which run no PTX (the interpreter takes one-row programs without a
    shared-memory bound)."""

    def prefetches(dtype=torch.float32, hidden=256, padded=True, steps=40, interpreting=False):
        as_h200(monkeypatch)
        if interpreting:
            monkeypatch.setattr(launch, "interpreting", lambda device: True)
            monkeypatch.setattr(launch, "device_shared_memory", lambda device: None)
        launch.backward_launch.cache_clear()
        _, backward = one_layer_launches(hidden, 8, steps, padded, dtype)
        assert backward.kernel_name == "rnn_backward_persistent_kernel"
        return backward.meta["PREFETCH"]

    assert prefetches() and prefetches(steps=5)
    assert not any([prefetches(padded=False), prefetches(torch.float16), prefetches(hidden=128),
                    prefetches(interpreting=True)])  # fmt: skip
    with monkeypatch.context() as rocm:
        rocm.setattr(torch.version, "hip", "6.4")
        assert not prefetches()
    monkeypatch.setattr(launch, "ONE_ROW_PREFETCH", False)
    assert not prefetches()
    launch.backward_launch.cache_clear()


def test_one_row_programs_run_to_h256_where_each_row_gets_a_program(monkeypatch):
    """_layer_plan on an H200's 132 SMs: one-row programs summing whole columns up to
    padded H=256 (ONE_ROW_MAX_H) for fp32 (the cooperative tier's otherwise), fp16 and
    bf16 (16-row tl.dot otherwise) where B x D is within the SMs, on 8 warps of up to
    255 registers, a step ahead; no input projection or weight gradients in them
    (short sequences); where H is no multiple of 16 only within shared memory; the
    cooperative tier or 16-row programs for more rows, above H=256, for fp64, with
    "onerow128" and with the tier forced."""
    as_h200(monkeypatch)

    def program(dtype, hidden, batch, directions=1, steps=40):
        weights = [torch.zeros(hidden, 4, dtype=dtype), torch.zeros(hidden, hidden, dtype=dtype)]
        call = launch.call_key(weights)
        args = (hidden, directions, steps, batch, steps * batch, True, 4, (batch * 4, 4),
                directions * hidden, False, False, False)  # fmt: skip
        gradient_strides = (batch * directions * hidden, directions * hidden, 1)
        layers = (launch.forward_launch(call, *args),
                  launch.backward_launch(call, *args, False, True, gradient_strides,
                                         (batch * hidden, hidden, 1)))  # fmt: skip
        return {(layer.kernel_name.split("_")[2], layer.meta["BLOCK_B"],
                 layer.meta["num_warps"], layer.meta.get("SUM_IN_PARTS"),
                 layer.meta.get("STEPS_AHEAD"), layer.meta.get("PROJECT_INPUT", False),
                 layer.meta.get("WEIGHT_GRADS", False), layer.meta.get("maxnreg"))
                for layer in layers}  # fmt: skip

    launch.forward_launch.cache_clear()
    launch.backward_launch.cache_clear()
    one_row = {("persistent", 1, 8, True, 1, False, False, 255)}
    cooperative = {("cooperative", 16, 4, None, None, False, False, None)}
    sixteen_rows = {("persistent", 16, 8, False, 1, False, False, None)}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert program(dtype, 256, 64) == program(dtype, 144, 132) == one_row
        assert program(dtype, 256, 66, directions=2) == one_row
        # Short: the forward's input from a GEMM; fp16's weight gradients in a 16-row
        # tl.dot backward as before, fp32's (W_hh not in shared memory) from GEMMs.
        short = one_row if dtype == torch.float32 else {
            ("persistent", 1, 8, True, 1, False, False, 255),
            ("persistent", 16, 8, False, 1, False, True, None),
        }  # fmt: skip
        assert program(dtype, 256, 8, steps=5) == short
        assert program(dtype, 128, 64) == {("persistent", 1, 4, True, 4, False, False, None)}
        assert program(dtype, 512, 8) == cooperative
    assert program(torch.float32, 256, 133) == cooperative
    assert program(torch.float16, 256, 133) == sixteen_rows
    assert program(torch.float64, 128, 8) == cooperative
    fp64 = launch.plan(256, torch.float64, force_tier="persistent")
    assert launch.one_row_plan(fp64, torch.float64, None, False) is None
    # W_hh^T passes through shared memory as it loads: on sm_90 a quarter at a time
    # where H is a multiple of 16, else all of it, which fp32's does not fit.
    assert program(torch.float32, 200, 64) == cooperative
    assert program(torch.float16, 200, 64) == one_row

    def device(major: int, shared_memory: int) -> None:
        monkeypatch.setattr(launch, "device_major", lambda device: major)
        monkeypatch.setattr(launch, "device_shared_memory", lambda device: shared_memory)
        launch.forward_launch.cache_clear()
        launch.backward_launch.cache_clear()

    device(8, 166_912)  # an A100
    assert program(torch.float32, 256, 64) == cooperative
    assert program(torch.float16, 256, 64) == one_row
    device(8, 101_376)  # a consumer GPU
    assert program(torch.float16, 256, 64) == cooperative
    device(9, 232_448)
    force_tier(monkeypatch, "fastrnn-onerow128")
    assert program(torch.float32, 256, 64) == cooperative
    assert program(torch.float16, 256, 64) == sixteen_rows
    force_tier(monkeypatch, "cooperative")
    assert program(torch.float32, 128, 8) == cooperative
    launch.forward_launch.cache_clear()
    launch.backward_launch.cache_clear()


@pytest.mark.parametrize("case", ONE_ROW_H256_CASES, ids=[case_id(c) for c in ONE_ROW_H256_CASES])
def test_one_row_programs_at_h256_match_nn_rnn(case, monkeypatch, triton_kernels):
    """fp32 on one-row programs summing whole columns at padded H=256 (the interpreter
    gives every row a program), every output and gradient within fp32's tolerance of
    fp64 nn.RNN."""
    layers = []
    watch_layer_launches(monkeypatch, lambda _, layer: layers.append(
        (layer.kernel_name, layer.meta["BLOCK_B"], layer.meta["BLOCK_H"],
         layer.meta["SUM_IN_PARTS"])))  # fmt: skip
    got, want = run_case(case, torch.float32)
    for name, g, w in zip(RESULT_NAMES, got, want, strict=False):
        assert_close(g, w, torch.float32, f"{case_id(case)} {name}")
    if DEVICE.type == "cpu":  # a GPU gives a row its own program within its SMs alone
        assert {(name.split("_")[2], *meta) for name, *meta in layers} == {
            ("persistent", 1, 256, True)
        }, layers


@pytest.mark.parametrize(
    "tier", ["cooperative", "cooperative-streamed", "cooperative-chunksplit"], indirect=True
)
def test_cooperative_tf32x3_products_of_split_weights(tier, monkeypatch, triton_kernels):
    """fp32 under nn.RNN's TF32 flag (tf32x3) on the cooperative tier: where W_hh streams,
    a program multiplies its TF32 parts (kernels._tf32_parts), the low ones split once
    into a workspace before the first product (W_LOW_PARTS), forward and backward, or
    with "chunksplit" (launch.COOP_W_LOW_PARTS off) Triton's tf32x3 at every chunk; on
    chip Triton's own tf32x3.  Every output and gradient matches fp64 nn.RNN at fp32
    accuracy (the interpreter multiplies the parts exactly; a part left out is an error
    of ~1e-3; the GEMMs outside the recurrence in IEEE fp32, TF32_GEMMS off).  In
    32-column tiles H=20 is one, on chip unless streamed; H=70 streams (one program
    holds its three)."""
    monkeypatch.setattr(launch, "FP32_DOT_PRECISION", "tf32x3")
    monkeypatch.setattr(launch, "TF32_GEMMS", False)
    monkeypatch.setattr(launch, "COOP_BLOCK_N", 32)
    layers = []
    watch_layer_launches(monkeypatch, lambda _, layer: layers.append(
        (layer.meta["W_ON_CHIP"], layer.meta["W_LOW_PARTS"])))  # fmt: skip
    low_parts = tier != "cooperative-chunksplit"
    streamed = tier == "cooperative-streamed"
    for case, chip in [((17, 20, 5, 2, True, True, "tanh", True, tier), not streamed),
                       ((3, 70, 7, 1, False, False, "relu", True, tier), False)]:  # fmt: skip
        layers.clear()
        got, want = run_case(case, torch.float32)
        for name, g, w in zip(RESULT_NAMES, got, want, strict=False):
            assert_close(g, w, torch.float32, f"{case_id(case)} {name}")
        if DEVICE.type == "cpu":  # a GPU's grid may keep more columns on chip
            assert set(layers) == {(chip, low_parts and not chip)}, layers


# (case, programs, FP32_DOT_PRECISION, whether the exchange is tagged): W_hh on chip
# (one 32-column tile) in tf32x3; several column tiles in IEEE fp32 and in tf32x3 split
# at each chunk (streamed under the interpreter's one program, on chip on a GPU);
# several programs, each owning whole batch tiles (one 128-column tile); not where
# streamed tf32x3 products take W_hh's parts split once, nor in fp64.
TAGGED_CASES = [
    ((17, 20, 5, 2, True, True, "tanh", True, "cooperative-tagged-32"), None, None, True),
    ((3, 70, 4, 1, False, False, "relu", False, "cooperative-tagged"), None, "ieee", True),
    (
        (3, 33, 3, 1, True, True, "tanh", True, "cooperative-tagged-chunksplit"),
        None,
        "tf32x3",
        True,
    ),
    ((40, 70, 4, 1, True, True, "tanh", True, "cooperative-tagged-128"), 3, None, True),
    (
        (17, 33, 3, 1, False, True, "relu", True, "cooperative-streamed-tagged"),
        None,
        "tf32x3",
        False,
    ),
]


@pytest.mark.parametrize("case", TAGGED_CASES, ids=[case_id(c[0]) for c in TAGGED_CASES])
def test_cooperative_state_exchanged_tagged_with_its_step(case, monkeypatch, triton_kernels):
    """launch.COOP_TAGGED_EXCHANGE: the cooperative programs exchange the state (h_t
    forward, dz_t backward) as fp32 values tagged with their step in 64-bit words, and
    read it once the tags show, with no grid barrier.  Every output and gradient matches
    fp64 nn.RNN at fp32 accuracy, and one zero-fill a call makes the exchange of every
    layer (the barrier counters' fill, which it replaces).  Under the interpreter, which
    runs programs one after another, several programs can run only where none reads
    another's state (each owns whole batch tiles): with the grid barrier they would wait
    forever.  fp64 states fill the word, and streamed W_hh's parts split once by all
    programs need a barrier: those keep it.  The GEMMs outside the recurrence in IEEE
    fp32 (TF32_GEMMS off)."""
    rnn_case, programs, precision, tagged = case
    force_tier(monkeypatch, rnn_case[-1])
    monkeypatch.setattr(launch, "TF32_GEMMS", False)
    monkeypatch.setattr(launch, "FORCE_PROGRAMS", programs)
    monkeypatch.setattr(launch, "FP32_DOT_PRECISION", precision)
    seen = set()
    watch_layer_launches(monkeypatch, lambda _, layer: seen.add(layer.meta["TAGGED"]))
    if DEVICE.type == "cuda" or tagged:
        got, want = run_case(rnn_case, torch.float32)
        for name, g, w in zip(RESULT_NAMES, got, want, strict=False):
            assert_close(g, w, torch.float32, f"{case_id(rnn_case)} {name}")
        assert seen == {tagged}
    hidden = rnn_case[1]
    weights = [torch.randn(hidden, i, device=DEVICE) for i in (5, hidden) * 2] + [
        torch.randn(hidden, i, device=DEVICE) for i in (2 * hidden, hidden) * 2]  # fmt: skip
    x = torch.randn(1, 40, 5, device=DEVICE)  # one step, no h0: no program waits
    device_ops = DeviceOps()
    device_ops.watch(monkeypatch, "rnn_forward_cooperative_kernel")
    with device_ops:
        launch.rnn_forward_triton(x, None, weights, None, 2, True, False)
    assert [op for op in device_ops.ops if op in FILLS] == ["zeros"]
    assert seen == {tagged}
    fp64_weights = [w.double() for w in weights]
    with device_ops:
        launch.rnn_forward_triton(x.double(), None, fp64_weights, None, 2, True, False)
    assert seen == {tagged, False}


# (M, K, N, bias, accumulate, a transposed, out a column slice): odd sizes, one of each,
# K split (over launch.GEMM_MIN_SPLIT_K rows where the tiles are fewer than the SMs),
# K = 0.
GEMM_CASES = [
    (1, 1, 1, False, False, False, False),
    (37, 5, 3, True, False, False, True),
    (130, 600, 17, True, False, True, False),
    (16, 1000, 33, False, True, True, True),
    (20, 700, 40, True, True, False, False),
    (20, 700, 40, True, False, False, True),
    (3, 0, 5, True, False, False, False),
]


def tf32_product_bound(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How far a TF32 product's a @ b may be from the float64 one, element by element:
    each factor rounded to 10 mantissa bits puts each term within 2^-10 of its size,
    here bounded by 2^-9, plus the fp32 sums' own rounding."""
    return 2.0**-9 * (a.double().abs() @ b.double().abs()) + 1e-6


@pytest.mark.parametrize("case", GEMM_CASES, ids=str)
def test_tf32_gemm_is_a_tf32_product_at_any_strides(case, monkeypatch):
    """launch.gemm on kernels.gemm_tf32_kernel (at every side, here): a @ b (+ bias, + out
    where accumulating) with a and b at any strides (b a transposed view, as W^T is),
    within TF32's error of the float64 product (tf32_product_bound)."""
    monkeypatch.setattr(launch, "GEMM_TF32_MIN_SIDE", 0)
    monkeypatch.setattr(launch, "GEMM_TF32_MIN_WORK", 0)
    m, k, n, bias, accumulate, transposed, sliced = case
    gen = torch.Generator().manual_seed(5)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(DEVICE)

    a = rand(k, m).t() if transposed else rand(m, k)
    b = rand(n, k).t()
    bias_ = rand(n) if bias else None
    out = rand(m, 2 * n)[:, n:] if sliced else rand(m, n) if accumulate else None
    before = out.clone() if sliced and not accumulate else None
    want = a.double() @ b.double()
    want += bias_.double() if bias else 0
    want += out.double() if accumulate else 0
    block_m, block_n, _ = launch.gemm_tile(m, n)
    tiles = -(-m // block_m) * -(-n // block_n)
    splits = launch.gemm_splits(tiles, k, a.device)
    got = launch.gemm(a, b, out=out, bias=bias_, accumulate=accumulate, tf32=True)
    assert got.shape == (m, n) and got.dtype == torch.float32
    if out is not None:
        assert got is out
    if before is not None:
        assert not torch.equal(got, before)  # written in place, at its strides
    bound = tf32_product_bound(a, b)
    assert ((got.double() - want).abs() <= bound).all(), (splits, (got.double() - want).abs().max())
    if DEVICE.type == "cpu" and k >= 2 * launch.GEMM_MIN_SPLIT_K:
        assert splits > 1  # the interpreter's few SMs: these cases split K


def test_tf32_gemm_copies_operands_along_k_where_asked(monkeypatch):
    """launch.GEMM_K_MAJOR: an operand not stored along K (A along M, as dZ^T is; B along
    N, as W_ih is in the input gradient) is copied along K before a GEMM of at least
    GEMM_K_MAJOR_WORK multiply-adds, and the product is the same TF32 product."""
    gen = torch.Generator().manual_seed(7)
    m, k, n = 20, 40, 24
    a = torch.randn(k, m, generator=gen).to(DEVICE).t()  # stored along M
    b = torch.randn(k, n, generator=gen).to(DEVICE)  # stored along N
    want = a.double() @ b.double()
    bound = tf32_product_bound(a, b)
    monkeypatch.setattr(launch, "GEMM_K_MAJOR", True)
    monkeypatch.setattr(launch, "GEMM_TF32_MIN_WORK", 0)
    for work, copies in [(m * n * k, 2), (m * n * k + 1, 0)]:
        monkeypatch.setattr(launch, "GEMM_K_MAJOR_WORK", work)
        device_ops = DeviceOps()
        device_ops.watch(monkeypatch, "gemm_tf32_kernel")
        with device_ops:
            got = launch.gemm(a, b, tf32=True)
        assert device_ops.ops.count("clone") == copies, device_ops.ops
        assert "gemm_tf32_kernel" in device_ops.ops
        assert ((got.double() - want).abs() <= bound).all()


def test_tf32_gemm_leaves_a_small_gemm_to_torch(monkeypatch):
    """A GEMM with a side under launch.GEMM_TF32_MIN_SIDE, or of fewer multiply-adds than
    GEMM_TF32_MIN_WORK, runs on torch's in IEEE fp32 even where the call's GEMMs are on
    TF32: cuDNN's error at H=1, and at long-B1, is IEEE fp32's."""
    device_ops = DeviceOps()
    device_ops.watch(monkeypatch, "gemm_tf32_kernel")
    gen = torch.Generator().manual_seed(6)
    side = launch.GEMM_TF32_MIN_SIDE
    for m, k, n, work in [(20, side - 1, 40, 0), (20, side, 1, 0), (side - 1, 300, side, 0),
                          (side, side, side, 0), (20, 30, 40, 20 * 30 * 40),
                          (20, 30, 40, 20 * 30 * 40 + 1)]:  # fmt: skip
        monkeypatch.setattr(launch, "GEMM_TF32_MIN_WORK", work)
        device_ops.ops.clear()
        a, b = (torch.randn(*shape, generator=gen).to(DEVICE) for shape in ((m, k), (k, n)))
        got = launch.gemm(a, b, tf32=True)
        on_torch = min(m, k, n) < side or m * k * n < work
        assert ("gemm_tf32_kernel" in device_ops.ops) == (not on_torch), (m, k, n, work)
        assert torch.equal(got, torch.mm(a, b)) or not on_torch, (m, k, n, work)


# An RNN's error with TF32 GEMMs, relative to its largest value: TF32 keeps 10 mantissa
# bits (2^-11 of a product's size), here a few of those (largest seen on the CPU: 4.9e-4).
TF32_GEMM_ERROR = 2e-3


@pytest.mark.parametrize("tier", [None, "cooperative", "persistent-xp", "persistent-gemm"],
                         indirect=True)  # fmt: skip
def test_fp32_gemms_on_tf32_where_nn_rnn_may_use_it(tier, monkeypatch, triton_kernels):
    """With launch.TF32_GEMMS on ("tritongemm"), fp32 under nn.RNN's TF32 flag asks every
    GEMM outside the recurrence (input projections, weight and input gradients) for TF32
    (launch.gemm, which runs those of sides from GEMM_TF32_MIN_SIDE on
    kernels.gemm_tf32_kernel); every output and gradient matches fp64
    nn.RNN within TF32's error on the CPU (the interpreter rounds the operands as the
    kernel asks and multiplies exactly; a GEMM wired wrong is off by far more).  Under
    IEEE fp32 (the flag off) the GEMMs stay torch's, at fp32 accuracy."""
    force_tier(monkeypatch, f"{tier or 'fastrnn'}-tritongemm-anywork")
    case = (17, 33, 5, 2, True, True, "tanh", True, tier)
    gemm, on_tf32 = launch.gemm, []

    def watched(*args, tf32, **kwargs):
        on_tf32.append(tf32)
        return gemm(*args, tf32=tf32, **kwargs)

    monkeypatch.setattr(launch, "gemm", watched)
    device_ops = DeviceOps()
    device_ops.watch(monkeypatch, "gemm_tf32_kernel")
    for precision in ("tf32x3", "ieee"):
        monkeypatch.setattr(launch, "FP32_DOT_PRECISION", precision)
        on_tf32.clear()
        device_ops.ops.clear()
        got, want = run_case(case, torch.float32)
        tf32 = precision == "tf32x3"
        # The GEMMs that the kernels leave (a short sequence's: few or none, tier None).
        assert set(on_tf32) == {tf32}
        assert ("gemm_tf32_kernel" in device_ops.ops) == tf32
        if not tf32:
            for name, g, w in zip(RESULT_NAMES, got, want, strict=False):
                assert_close(g, w, torch.float32, f"{precision} {case_id(case)} {name}")
        elif DEVICE.type == "cpu":  # on a GPU cuDNN's own error bounds it (below)
            for name, error in zip(RESULT_NAMES, relative_errors(got, want), strict=False):
                assert error <= TF32_GEMM_ERROR, f"{case_id(case)} {name}: error {error:.3g}"


# The cases whose GEMMs run outside the recurrence kernels: GEMM tiers, and sequences
# over launch.PROJECT_INPUT_MAX_STEPS and WEIGHT_GRADS_MAX_STEPS.
GEMM_RNN_CASES = [c for c in CASES if c[-1] in ("persistent-xp", "persistent-gemm", "cooperative")
                  or c[2] > launch.PROJECT_INPUT_MAX_STEPS]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", GEMM_RNN_CASES, ids=[case_id(c) for c in GEMM_RNN_CASES])
def test_tf32_gemms_error_at_most_twice_cudnn_under_tf32_on_gpu(case, monkeypatch):
    """fp32 with nn.RNN's TF32 flag on (PyTorch's default) for both, and the GEMMs on TF32
    ("tritongemm"): fastrnn's error against fp64 nn.RNN at most twice cuDNN's own."""
    force_tier(monkeypatch, f"{case[-1] or 'fastrnn'}-tritongemm-anywork")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    with fastrnn.use_backend("triton"):
        got, want = run_case(case, torch.float32)
    assert_error_at_most_twice_cudnns(case, torch.float32, got, want)


def test_fp32_products_where_tf32x3_would_stream_run_in_plain_tf32(monkeypatch):
    """launch.plan under nn.RNN's TF32 flag (tf32x3): plain TF32 where tf32x3's W_hh would
    stream (COOP_STREAMED_TF32; above H=512 on an H200, at H=512 on an A100, where its
    one copy then fits on chip), tf32x3 where W_hh fits on chip; a precision asked for
    (FP32_DOT_PRECISION) is kept; below COOP_STREAMED_TF32_MIN_BATCH rows tf32x3."""
    a100, hopper = 166_912, 232_448
    streamed = launch.plan(1024, torch.float32, "tf32x3", hopper, streamed_tf32=True)
    assert (streamed.precision, streamed.w_on_chip) == ("tf32", False)
    assert launch.plan(1024, torch.float32, "tf32x3", hopper).precision == "tf32x3"
    on_chip = launch.plan(512, torch.float32, "tf32x3", hopper, streamed_tf32=True)
    assert (on_chip.precision, on_chip.w_on_chip) == ("tf32x3", True)
    on_a100 = launch.plan(512, torch.float32, "tf32x3", a100, streamed_tf32=True)
    assert (on_a100.precision, on_a100.w_on_chip) == ("tf32", True)
    assert launch.plan(1024, torch.float32, "ieee", hopper, streamed_tf32=True).precision == "ieee"
    # A call's plan (launch._plan) on an H200's shared memory.
    monkeypatch.setattr(launch, "device_shared_memory", lambda device: hopper)
    monkeypatch.setattr(launch, "device_tensor_core_dots", lambda device: True)
    monkeypatch.setattr(launch, "tf32_allowed", lambda: True)
    weights = [torch.empty(1024, 8), torch.empty(1024, 1024)]

    def precision(batch=64):
        return launch._layer_plan(launch.call_key(weights), 1024, batch, 1).precision

    assert precision() == "tf32"
    assert precision(launch.COOP_STREAMED_TF32_MIN_BATCH - 1) == "tf32x3"
    monkeypatch.setattr(launch, "COOP_STREAMED_TF32", False)
    assert precision() == "tf32x3"
    monkeypatch.setattr(launch, "COOP_STREAMED_TF32", True)
    monkeypatch.setattr(launch, "FP32_DOT_PRECISION", "tf32x3")
    assert precision() == "tf32x3"


def test_streamed_plain_tf32_products_within_tf32_error(monkeypatch, triton_kernels):
    """fp32 under nn.RNN's TF32 flag where tf32x3's W_hh would stream (here: 32 KB of
    shared memory): the cooperative kernels multiply streamed W_hh in plain TF32, its
    operands rounded to nearest (kernels._tf32_operand), without W_hh's low parts, and
    every output and gradient is within TF32's error of fp64 nn.RNN (17 rows: the batch
    bound, COOP_STREAMED_TF32_MIN_BATCH, set aside)."""
    force_tier(monkeypatch, "cooperative")
    monkeypatch.setattr(launch, "device_shared_memory", lambda device: 32_768)
    monkeypatch.setattr(launch, "COOP_STREAMED_TF32_MIN_BATCH", 1)
    monkeypatch.setattr(launch, "tf32_allowed", lambda: True)
    launched = []

    def record(_, layer):
        meta = layer.meta
        launched.append((meta["DOT_PRECISION"], meta["W_ON_CHIP"], meta["W_LOW_PARTS"]))

    watch_layer_launches(monkeypatch, record)
    case = (17, 70, 5, 2, True, True, "tanh", True, None)
    got, want = run_case_planned_afresh(case, torch.float32)
    assert set(launched) == {("tf32", False, False)}
    for name, error in zip(RESULT_NAMES, relative_errors(got, want), strict=False):
        assert error <= TF32_GEMM_ERROR, f"{name}: error {error:.3g}"


def test_tf32_products_rounded_drift_less_than_truncated():
    """tools/tf32_emulation.py, behind kernels._tf32_operand: an RNN's products in TF32
    with operands rounded to nearest stay nearer exact arithmetic than with operands
    truncated, as a tensor core handed fp32 does; both within TF32's error."""
    emulation = import_tool("tf32_emulation")
    for seed in (0, 1):
        rounded, truncated = (
            emulation.largest_error(30, 8, 5, 256, rnd, emulation.exact, False, seed)
            for rnd in (emulation.rounded, emulation.truncated)
        )
        assert 0 < rounded < truncated < TF32_GEMM_ERROR, (rounded, truncated)


# Shapes at which an H100 or H200 streams fp32 W_hh (H > 512): a batch of 64 and of 1.
STREAMED_TF32_CASES = [(64, 1024, 50, 1, False, False, "tanh", True, None),
                       (1, 1024, 100, 1, False, False, "tanh", True, None)]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", STREAMED_TF32_CASES, ids=[case_id(c) for c in STREAMED_TF32_CASES])
def test_streamed_plain_tf32_error_at_most_twice_cudnn_on_gpu(case, monkeypatch):
    """fp32 with nn.RNN's TF32 flag on (PyTorch's default) for both, at a hidden size
    whose W_hh streams: fastrnn's plain TF32 products (launch.COOP_STREAMED_TF32) keep its
    error against fp64 nn.RNN at most twice cuDNN's own; a batch of one, under
    COOP_STREAMED_TF32_MIN_BATCH, keeps tf32x3 (plain TF32 was six times cuDNN's there)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    precisions = []
    watch_layer_launches(
        monkeypatch, lambda _, layer: precisions.append(layer.meta["DOT_PRECISION"])
    )
    with fastrnn.use_backend("triton"):
        got, want = run_case(case, torch.float32)
    plain = case[0] >= launch.COOP_STREAMED_TF32_MIN_BATCH
    assert set(precisions) == {"tf32" if plain else "tf32x3"}
    assert_error_at_most_twice_cudnns(case, torch.float32, got, want)


def test_16_row_fp32_ieee_programs_multiply_in_k_parts(monkeypatch, triton_kernels):
    """dot_parts: a persistent program on tl.dot's 16 rows with fp32 IEEE products at
    padded H=128 (whose one-part forward spills registers) multiplies in IEEE_DOT_PARTS
    K parts, forward and backward, and matches nn.RNN; 32 weight-gradient rows and every
    other program in one part."""
    parts = launch.IEEE_DOT_PARTS
    assert parts > 1 and launch.dot_parts(torch.float32, "ieee", 128, 16) == parts
    assert launch.dot_parts(torch.float32, "ieee", 128, 2) == 1  # FMA rows
    assert launch.dot_parts(torch.float32, "ieee", 128, 32) == 1  # weight-gradient rows
    assert launch.dot_parts(torch.float32, "ieee", 64, 16) == 1  # builds without spills
    assert launch.dot_parts(torch.float32, "tf32x3", 128, 16) == 1
    assert launch.dot_parts(torch.float64, "ieee", 128, 16) == 1
    force_tier(monkeypatch, "persistent-dot")
    monkeypatch.setattr(launch, "FP32_DOT_PRECISION", "ieee")
    launched = []

    def record(direction, layer):
        launched.append((direction, layer.meta["DOT_PARTS"]))

    watch_layer_launches(monkeypatch, record)
    # (case, DOT_PARTS of its forward and backward layers): 2 layers, bidirectional, packed,
    # 32 weight-gradient rows in its backward; 16 weight-gradient rows; 2 programs of 16.
    for case, forward, backward in [
        ((17, 100, 4, 2, True, True, "relu", True, None), parts, 1),
        ((16, 100, 4, 1, False, False, "tanh", True, None), parts, parts),
        ((17, 70, 40, 1, True, False, "tanh", False, None), parts, parts),
    ]:
        launched.clear()
        got, want = run_case(case, torch.float32)
        for name, g, w in zip(RESULT_NAMES, got, want, strict=False):
            assert_close(g, w, torch.float32, f"{case_id(case)} {name}")
        layers = case[3]
        assert launched == [("forward", forward)] * layers + [("backward", backward)] * layers
    launched.clear()
    force_tier(monkeypatch, "persistent-wholedot")
    run_case((16, 100, 4, 1, False, False, "tanh", True, None), torch.float32)
    assert launched == [("forward", 1), ("backward", 1)]


def test_packed_step_tables_by_their_definition():
    """The step tables _C.rnn_forward_outputs and rnn_backward_outputs give packed input,
    against a row-by-row construction: the batch sizes, the offsets (each step's first
    row), and the backward's previous rows of each direction: forwards in time step t-1's
    row of the same sequence (h0's row N + b at the first step), in reverse step t+1's
    where that step has the sequence, else h0's.  Padded input: none."""
    gen = torch.Generator().manual_seed(0)
    layouts = [[1], [3, 3, 3], [4, 3, 3, 2, 2, 1], [2, 0]]
    layouts += [sorted(torch.randint(1, 9, (steps,), generator=gen).tolist(), reverse=True)
                for steps in (2, 7, 30)]  # fmt: skip
    for sizes, directions in [(sizes, d) for sizes in layouts for d in (1, 2)]:
        rows = sum(sizes)
        offsets = [sum(sizes[:t]) for t in range(len(sizes))]
        forward, reverse = [], []
        for t, size in enumerate(sizes):
            for b in range(size):
                forward.append(offsets[t - 1] + b if t > 0 else rows + b)
                has_next = t + 1 < len(sizes) and b < sizes[t + 1]
                reverse.append(offsets[t + 1] + b if has_next else rows + b)
        rnn = torch.nn.RNN(3, 4, bidirectional=directions == 2)
        weights = [w.detach() for w in rnn._flat_weights]
        x, batch_sizes = torch.randn(rows, 3), torch.tensor(sizes)
        hx = torch.zeros(directions, sizes[0], 4)
        *_, tables = fastrnn._C.rnn_forward_outputs(x, hx, weights, batch_sizes, 1,
                                                    directions == 2)  # fmt: skip
        assert [t.tolist() for t in tables] == [sizes, offsets], sizes
        output = torch.zeros(rows, directions * 4)
        below = output.new_empty((0, *output.shape))  # layer_outputs of one layer
        *_, tables = fastrnn._C.rnn_backward_outputs(
            None, None, x, hx, weights, batch_sizes, output, below, 1, directions == 2, True,
            True,
        )  # fmt: skip
        expected = [sizes, offsets, forward, reverse][: 2 + directions]
        assert [t.tolist() for t in tables] == expected, (sizes, directions)
        assert tables[1].data_ptr() % 16 == 0  # the offsets, 16-byte aligned
    x = torch.randn(5, 2, 3)
    assert fastrnn._C.rnn_forward_outputs(x, None, weights[:4], None, 1, False)[3] is None


def test_weight_gradients_in_the_backward_kernel_for_short_small_layers(monkeypatch):
    """weight_grads_rows: one persistent backward program per direction, holding the whole
    batch (FMA rows where they fit, else 16 or 32 tl.dot rows), computes the weight
    gradients up to WEIGHT_GRADS_MAX_STEPS steps, WEIGHT_GRADS_MAX_BATCH rows and
    WEIGHT_GRADS_ELEMENTS multiply-adds; GEMMs do it otherwise (several programs)."""

    def plan(steps, batch, hidden=16, input_size=4):
        weights = [torch.zeros(hidden, input_size), torch.zeros(hidden, hidden)]
        call = launch.call_key(weights)
        rows = steps * batch
        layer = launch.backward_launch(call, hidden, 1, steps, batch, rows, True, input_size,
                                       (batch * input_size, input_size), hidden, False, True,
                                       False, False, True, (batch * hidden, hidden, 1),
                                       (batch * hidden, hidden, 1))  # fmt: skip
        return layer.weight_grads, layer.grid[0], layer.meta["BLOCK_B"]

    assert plan(5, 1) == (True, 1, 1)
    assert plan(5, 5) == (True, 1, 8)  # 8 x 16 x 16 FMA products
    assert plan(5, 5, hidden=128) == (True, 1, 16)  # 8 x 128 x 128 would not fit: tl.dot
    assert plan(10, 32) == (True, 1, 32)
    assert plan(10, 33)[:2] == (False, 33)  # one FMA row per program
    assert plan(launch.WEIGHT_GRADS_MAX_STEPS + 1, 1)[0] is False
    assert plan(32, 32, hidden=64, input_size=2048)[0] is False  # over WEIGHT_GRADS_ELEMENTS
    monkeypatch.setattr(launch, "WEIGHT_GRADS_MAX_STEPS", 0)
    assert plan(5, 1)[0] is False
    monkeypatch.setattr(launch, "WEIGHT_GRADS_MAX_STEPS", 32)
    monkeypatch.setattr(launch, "FORCE_TIER", "cooperative")
    assert plan(5, 1)[0] is False


@pytest.mark.skipif(
    launch._FP32_PRECISION is None, reason="a torch with the legacy TF32 flags only"
)
def test_fp32_precision_follows_the_flag_nn_rnn_reads():
    """fp32 products are tf32x3 exactly where nn.RNN's cuDNN call may use TF32 (ATen's
    allowTF32CuDNN(RNN)): the legacy flag and the new API's RNN flag, also where conv's
    flag differs, in which state reading the legacy flag raises."""
    cudnn = torch.backends.cudnn
    legacy = cudnn.allow_tf32
    try:
        cudnn.allow_tf32 = True
        assert launch.dot_precision(torch.float32) == "tf32x3"
        assert launch.dot_precision(torch.float16) == "ieee"
        cudnn.allow_tf32 = False
        assert launch.dot_precision(torch.float32) == "ieee"
        cudnn.conv.fp32_precision = "tf32"  # conv on TF32, RNN not
        with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
            _ = cudnn.allow_tf32
        assert launch.dot_precision(torch.float32) == "ieee"
        cudnn.rnn.fp32_precision = "tf32"
        cudnn.conv.fp32_precision = "ieee"
        assert launch.dot_precision(torch.float32) == "tf32x3"
        cudnn.rnn.fp32_precision = "ieee"
        assert launch.dot_precision(torch.float32) == "ieee"
    finally:
        cudnn.allow_tf32 = legacy  # sets both operators' flags too


def test_variant_names_set_launch_settings(monkeypatch, request):
    """launch.variant_settings, which the tests (force_tier) and tools/gpu_tier_ab.py
    (use_variant) both run on: every variant the tool times sets settings launch has."""
    defaults = launch.VARIANT_DEFAULTS
    assert defaults["FORCE_TIER"] is None and defaults["COOP_SPLIT_K"] == launch.COOP_SPLIT_K
    assert launch.variant_settings(None) == launch.variant_settings("fastrnn") == defaults
    assert launch.variant_settings("cooperative-32") == {
        **defaults, "FORCE_TIER": "cooperative", "COOP_BLOCK_N": 32
    }  # fmt: skip
    assert launch.variant_settings("fastrnn-unsplit") == {**defaults, "COOP_SPLIT_K": 1}
    assert launch.variant_settings("cooperative-16-tritongemm") == {
        **defaults, "FORCE_TIER": "cooperative", "COOP_BLOCK_N": 16, "TF32_GEMMS": True
    }  # fmt: skip
    with pytest.raises(KeyError):
        launch.variant_settings("persistent-unknown")
    gpu_tier_ab = import_tool("gpu_tier_ab")
    for setting in launch.VARIANT_DEFAULTS:  # use_variant sets them: restored after the test
        monkeypatch.setattr(launch, setting, getattr(launch, setting))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", torch.backends.cudnn.allow_tf32)
    matmul = torch.backends.cuda.matmul  # a module proxy that monkeypatch cannot patch
    request.addfinalizer(functools.partial(setattr, matmul, "allow_tf32", matmul.allow_tf32))
    for _, _, variants in gpu_tier_ab.CASES:
        for name in variants:
            gpu_tier_ab.use_variant(name)  # an unknown option: KeyError
    gpu_tier_ab.use_variant("cooperative-k32")
    assert launch.COOP_BLOCK_K == 32 and launch.FORCE_TIER == "cooperative"
    gpu_tier_ab.use_variant("fastrnn-ieee")
    assert launch.COOP_BLOCK_K == launch.VARIANT_DEFAULTS["COOP_BLOCK_K"]
    assert not torch.backends.cudnn.allow_tf32
    gpu_tier_ab.use_variant("fastrnn-cublas-tf32gemm")
    assert matmul.allow_tf32 and torch.backends.cudnn.allow_tf32 == gpu_tier_ab.DEFAULT_ALLOW_TF32
    assert launch.TF32_GEMMS is False
    # A persistent program of 16 rows at H=256 on the plan's warps, or on pw16's 16 (no
    # one-row programs there with "onerow128").
    fp16 = [torch.zeros(256, 4, dtype=torch.float16), torch.zeros(256, 256, dtype=torch.float16)]
    args = (256, 1, 5, 40, 200, True, 4, (160, 4), 256, False, False, False)
    for name, warps in [("fastrnn-onerow128", 8), ("fastrnn-onerow128-pw16", 16)]:
        gpu_tier_ab.use_variant(name)
        layer = launch.forward_launch(launch.call_key(fp16), *args)
        assert (layer.meta["BLOCK_B"], layer.meta["num_warps"]) == (16, warps), layer.meta
    assert launch.FORCE_TIER is None and launch.FP32_DOT_PRECISION is None
    gpu_tier_ab.use_variant("fastrnn-tf32-tf32gemm")
    assert matmul.allow_tf32 and launch.dot_precision(torch.float32) == "tf32"
    assert launch.dot_precision(torch.float16) == "ieee"
    gpu_tier_ab.use_variant(None)
    assert matmul.allow_tf32 == gpu_tier_ab.DEFAULT_MATMUL_TF32
    assert launch.dot_precision(torch.float32) == ("tf32x3" if launch.tf32_allowed() else "ieee")
    assert {s: getattr(launch, s) for s in launch.VARIANT_DEFAULTS} == launch.VARIANT_DEFAULTS


def test_every_variant_setting_is_in_the_launches_cache_key(monkeypatch):
    """forward_launch and backward_launch are cached by CallKey: each setting a variant
    changes must change the key (fp32's, whose precision one of them sets), or a
    launch made under other settings would be reused; the GEMM's (GEMM_*) key its own
    launches (launch.gemm_launch); "replay" changes no launch, only where it is issued
    from (launch.REPLAY_LAUNCHES)."""
    weights = [torch.zeros(4, 3), torch.zeros(4, 4)]
    default = launch.call_key(weights)
    for option, settings in launch.VARIANT_OPTIONS.items():
        if option == "replay" or all(setting.startswith("GEMM_") for setting in settings):
            continue
        force_tier(monkeypatch, f"fastrnn-{option}")
        assert launch.call_key(weights) != default, option
    for tier, block_n in (("cooperative", None), ("fastrnn", 32)):
        monkeypatch.setattr(launch, "FORCE_TIER", tier if tier != "fastrnn" else None)
        monkeypatch.setattr(launch, "COOP_BLOCK_N", block_n)
        assert launch.call_key(weights) != default, (tier, block_n)
        force_tier(monkeypatch, None)


def test_kept_kernels_are_keyed_by_what_triton_specialises_on():
    """launch_kernel reuses a compiled kernel only for arguments Triton would specialise
    alike: tensor dtype and 16-byte alignment; integers equal to 1, multiples of 16 and
    their width."""

    def spec(arg):
        return launch._specialization(*(((arg,), ()) if torch.is_tensor(arg) else ((), (arg,))))

    aligned = torch.zeros(8)
    assert spec(aligned) == spec(torch.ones(8)) != spec(aligned[1:])
    assert spec(aligned) != spec(aligned.double())
    assert spec(32) == spec(48) != spec(33) == spec(35) != spec(1)
    assert spec(33) != spec(2**31 + 1)


def test_launch_functions_make_the_tensors_cuda_device_current(monkeypatch):
    """Triton launches on the current CUDA device and the dispatcher sets none for a
    custom op, so the launch functions switch to the input's device where it is another
    one (on CPU: the rule, from a tensor's device alone)."""

    class On:  # what on_device_of reads of a tensor
        def __init__(self, device):
            self.device = torch.device(device)

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    switch = registration.on_device_of(On("cuda:0"))
    assert isinstance(switch, torch.cuda.device) and switch.idx == 0
    assert isinstance(registration.on_device_of(On("cuda:1")), contextlib.nullcontext)
    assert isinstance(registration.on_device_of(On("cpu")), contextlib.nullcontext)


def test_an_op_run_eagerly_inside_a_compiled_region_is_not_traced_into(triton_kernels):
    """The launch functions run with TorchDynamo off where a torch.compile region has it
    on (registration.outside_dynamo): a frame that the region runs eagerly calls the op,
    and Dynamo compiles and attempts the frames it does for an ATen op there, not the
    launch functions' (which it cannot trace: it fails on the interpreter's pointer
    arithmetic) nor the wrapper's (whose check it cannot trace)."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    rnn = fastrnn.RNN(3, 5, device=DEVICE)
    weights = list(rnn._flat_weights)
    x = torch.randn(4, 2, 3, device=DEVICE)

    def compiled_around(call):  # (results, frames compiled, frames Dynamo attempted)
        torch._dynamo.reset()
        counters.clear()
        counter = CompileCounterWithBackend("eager")
        eager = torch._dynamo.disable(call, recursive=False)  # the frames it calls not
        with torch.no_grad():
            results = torch.compile(lambda x: eager(x * 2), backend=counter)(x)
        attempted = counters["frames"]["total"]
        torch._dynamo.reset()
        return results, counter.frame_count, attempted

    def op_call(x):
        return torch.ops.fastrnn.rnn_forward.default(x, None, weights, None, 1, False, False)

    got, compiled, attempted = compiled_around(op_call)
    _, compiled_aten, attempted_aten = compiled_around(lambda x: (torch.sin(x),))
    assert (compiled, attempted) == (compiled_aten, attempted_aten) == (1, attempted_aten)
    with torch.no_grad():
        want = op_call(x * 2)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_triton_on_a_gpu_that_is_not_the_current_one(triton_kernels):
    """fastrnn on cuda:1 while cuda:0 is current, forward and gradients, as nn.RNN."""
    device = torch.device("cuda:1")
    reference, fast = paired_rnns(5, 33, torch.float64, num_layers=2)
    reference, fast = reference.to(device), fast.to(device)
    x = torch.randn(7, 3, 5, dtype=torch.float64, device=device)
    with torch.cuda.device(0):
        out, h_n = fast(x)
        grads = torch.autograd.grad(out.sum() + h_n.sum(), list(fast.parameters()))
    out_ref, hn_ref = reference(x)
    grads_ref = torch.autograd.grad(out_ref.sum() + hn_ref.sum(), list(reference.parameters()))
    names = ["output", "h_n", *[f"grad {name}" for name, _ in fast.named_parameters()]]
    for name, got, want in zip(names, [out, h_n, *grads], [out_ref, hn_ref, *grads_ref],
                               strict=True):  # fmt: skip
        assert_close(got, want, torch.float64, name)


def test_a_layer_launch_reuses_its_kept_kernel_only_for_aligned_pointers_on_its_device(
    monkeypatch,
):
    """KernelLaunch skips launch_kernel's lookup only where launch_kernel would pick the
    same kept kernel: 16-byte aligned pointers, the device it was kept on; it hands the
    kept kernel's launcher the tensors' addresses.  (On CPU, with launch_kernel and the
    kept kernel's launcher recorded rather than run.)"""
    calls = []
    monkeypatch.setattr(launch, "_launches_directly", lambda kernel, tensor: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: device[0])
    monkeypatch.setattr(launch, "launch_kernel", lambda *args: calls.append("lookup") or (0,))
    monkeypatch.setattr(launch, "_run_kept", lambda kept, grid, pointers, scalars:
                        calls.append(("kept", pointers, scalars)))  # fmt: skip
    device = [0]
    layer = launch.KernelLaunch("rnn_backward_persistent_kernel", (1, 1), (3,), {})
    aligned, other = torch.zeros(8), torch.ones(4)
    layer((aligned, other))
    layer((aligned, other))
    layer((aligned, aligned[1:]))  # 4 bytes off: Triton specialises it apart
    device[0] = 1
    layer((aligned, other))
    kept = ("kept", (aligned.data_ptr(), other.data_ptr()), (3,))
    assert calls == ["lookup", kept, "lookup", "lookup"]
    assert all(type(address) is int for address in kept[1])


def test_triton_path_refuses_tensors_on_another_device_with_nn_rnns_error():
    """Every tensor of a Triton call on the input's device, else nn.RNN's own message (the
    kept kernels take addresses, so host memory must never reach them).  On CPU, meta
    tensors stand for the other device; the launch functions are called directly."""
    x = torch.randn(5, 2, 4)
    output, h_n, layer_outputs = torch.zeros(5, 2, 8), torch.zeros(1, 2, 8), torch.zeros(0, 5, 2, 8)

    def backward(grad_output, hx, weights):
        return launch.rnn_backward_triton(grad_output, h_n, x, hx, weights, None, output,
                                          layer_outputs, 1, False, False, False)  # fmt: skip

    for hx_device, weight_device in [("meta", "cpu"), ("cpu", "meta")]:
        reference = torch.nn.RNN(4, 8, device=weight_device)
        hx = torch.zeros(1, 2, 8, device=hx_device)
        weights = list(reference._flat_weights)
        with pytest.raises(RuntimeError) as expected:
            reference(x, hx)
        with pytest.raises(RuntimeError) as got:
            launch.rnn_forward_triton(x, hx, weights, None, 1, False, False)
        assert "not at the same device" in str(got.value)
        assert str(got.value) == str(expected.value)
        with pytest.raises(RuntimeError, match=re.escape(str(expected.value))):
            backward(output, hx, weights)
    weights = list(torch.nn.RNN(4, 8)._flat_weights)
    with pytest.raises(RuntimeError, match="Input and gradient tensors are not at the same"):
        backward(output.to("meta"), None, weights)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_model_left_on_the_cpu_gets_nn_rnns_error():
    """The common slip (model, input or hx not moved to the GPU), on the default backend:
    nn.RNN's message, word for word."""
    x = torch.randn(5, 2, 4)
    for module_device, x_device, hx_device in [("cpu", "cuda", "cuda"), ("cuda", "cpu", "cpu"),
                                               ("cuda", "cuda", "cpu")]:  # fmt: skip
        reference = torch.nn.RNN(4, 8, device=module_device)
        fast = fastrnn.RNN(4, 8, device=module_device)
        args = (x.to(x_device), torch.zeros(1, 2, 8, device=hx_device))
        with pytest.raises(RuntimeError) as expected:
            reference(*args)
        with pytest.raises(RuntimeError, match=re.escape(str(expected.value))):
            fast(*args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("tier", ["persistent", "cooperative"], indirect=True)
def test_kept_kernels_launch_directly_and_match_jit_launches(tier, triton_kernels,
                                                             monkeypatch):  # fmt: skip
    """After a specialisation's first launch, launch_kernel runs the kept compiled kernel
    without JITFunction.run, and forward and gradients equal JITFunction.run's."""
    import triton

    case = (17, 33, 7, 2, True, False, "tanh", True, None)
    monkeypatch.setattr(launch, "DIRECT_LAUNCH", False)
    jit_results, _ = run_case(case, torch.float64)
    monkeypatch.setattr(launch, "DIRECT_LAUNCH", True)
    monkeypatch.setattr(launch, "_COMPILED", {})
    run_case(case, torch.float64)  # first launches: compiled kernels kept
    kept = dict(launch._COMPILED)
    jit_runs = []
    jit_run = triton.runtime.JITFunction.run

    def counted_run(self, *args, **kwargs):
        jit_runs.append(self)
        return jit_run(self, *args, **kwargs)

    monkeypatch.setattr(triton.runtime.JITFunction, "run", counted_run)
    direct_results, _ = run_case(case, torch.float64)
    assert len(kept) >= 2 and launch._COMPILED == kept  # forward and backward kernels
    assert jit_runs == []
    for got, want in zip(direct_results, jit_results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
