"""fastrnn.RNN / RNNCell against nn.RNN / nn.RNNCell in float64: outputs and every gradient.

The grid: layers 1-3 x tanh/relu x bias x batch_first x bidirectional x fp32/fp64 x
with/without h0 x (batched, unbatched, packed), on each CPU backend; odd sizes separately.
bfloat16 and float16 against nn.RNN's own error in that dtype.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import (
    REDUCED_CPU_BACKENDS,
    assert_close,
    paired_rnns,
    reduced_precision,
    relative_error,
)
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn

DTYPES = {"fp32": torch.float32, "fp64": torch.float64}
GRID = list(
    itertools.product(
        [1, 2, 3],  # num_layers
        ["tanh", "relu"],
        [True, False],  # bias
        [False, True],  # batch_first
        [False, True],  # bidirectional
        ["fp32", "fp64"],
        [False, True],  # h0 given
        ["batched", "unbatched", "packed"],
    )
)


def grid_id(case):
    layers, act, bias, batch_first, bidir, dtype, h0, kind = case
    return "-".join(
        [
            f"L{layers}",
            act,
            "bias" if bias else "nobias",
            "bf" if batch_first else "sf",
            "bi" if bidir else "uni",
            dtype,
            "h0" if h0 else "noh0",
            kind,
        ]
    )


def run_and_grads(module, x, h0, lengths, weights_of, out_proj, h_proj):
    """Output, h_n and gradients of a random projection of both w.r.t. x, h0, weights."""
    inputs = [x] + ([h0] if h0 is not None else [])
    if lengths is not None:
        packed = pack_padded_sequence(
            x, lengths, batch_first=module.batch_first, enforce_sorted=False
        )
        out, h_n = module(packed, h0)
        out = out.data
    else:
        out, h_n = module(x, h0)
    loss = (out * out_proj.to(out.dtype)).sum() + (h_n * h_proj.to(h_n.dtype)).sum()
    grads = torch.autograd.grad(loss, inputs + list(weights_of(module)))
    return out, h_n, grads


@pytest.mark.parametrize("case", GRID, ids=grid_id)
def test_rnn_matches_nn_rnn(case, cpu_backend):
    layers, act, bias, batch_first, bidir, dtype_name, with_h0, kind = case
    dtype = DTYPES[dtype_name]
    steps, batch, input_size, hidden = 5, 3, 4, 6
    directions = 2 if bidir else 1
    reference, fast = paired_rnns(
        input_size,
        hidden,
        dtype,
        num_layers=layers,
        nonlinearity=act,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidir,
    )
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([5, 2, 4]) if kind == "packed" else None
    if kind == "unbatched":
        x64 = torch.randn(steps, input_size, generator=gen, dtype=torch.float64)
        h64 = torch.randn(layers * directions, hidden, generator=gen, dtype=torch.float64)
    else:
        shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
        x64 = torch.randn(shape, generator=gen, dtype=torch.float64)
        h64 = torch.randn(layers * directions, batch, hidden, generator=gen, dtype=torch.float64)
    x64.requires_grad_()
    x = x64.detach().to(dtype).requires_grad_()
    h0_64 = h64.requires_grad_() if with_h0 else None
    h0 = h64.detach().to(dtype).requires_grad_() if with_h0 else None

    rows = int(lengths.sum()) if lengths is not None else None
    out_shape = (rows, directions * hidden) if rows else (*x.shape[:-1], directions * hidden)
    out_proj = torch.randn(out_shape, generator=gen, dtype=torch.float64)
    h_proj = torch.randn(h64.shape, generator=gen, dtype=torch.float64)

    def params(m):
        return [getattr(m, n) for n in m._flat_weights_names]

    ref = run_and_grads(reference, x64, h0_64, lengths, params, out_proj, h_proj)
    got = run_and_grads(fast, x, h0, lengths, params, out_proj, h_proj)
    assert_close(got[0], ref[0], dtype, "output")
    assert_close(got[1], ref[1], dtype, "h_n")
    names = ["input"] + (["h0"] if with_h0 else []) + fast._flat_weights_names
    for name, g, r in zip(names, got[2], ref[2], strict=True):
        assert_close(g, r, dtype, f"grad of {name}")


ODD_SHAPES = {
    # (steps, batch, input_size, hidden, layers, bidirectional)
    "B1": (7, 1, 3, 5, 1, False),
    "H1": (6, 4, 2, 1, 2, True),
    "T1": (1, 3, 4, 5, 2, False),
    "I1-H127": (4, 2, 1, 127, 1, True),
    "B17-H33": (3, 17, 8, 33, 2, False),
    "B0": (4, 0, 3, 5, 2, True),
    # B*H*H >= 32k: each step's columns are split across threads (slices 0-63, 64-110).
    "B3-H111": (6, 3, 4, 111, 2, True),
}


@pytest.mark.parametrize("dtype_name", ["fp32", "fp64"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("shape", list(ODD_SHAPES), ids=list(ODD_SHAPES))
def test_odd_shapes(shape, act, dtype_name, cpu_backend):
    steps, batch, input_size, hidden, layers, bidir = ODD_SHAPES[shape]
    dtype = DTYPES[dtype_name]
    reference, fast = paired_rnns(
        input_size, hidden, dtype, num_layers=layers, nonlinearity=act, bidirectional=bidir
    )
    gen = torch.Generator().manual_seed(2)
    x64 = torch.randn(steps, batch, input_size, generator=gen, dtype=torch.float64)
    h64 = torch.randn(
        layers * (2 if bidir else 1), batch, hidden, generator=gen, dtype=torch.float64
    )
    x64.requires_grad_()
    h64.requires_grad_()
    x = x64.detach().to(dtype).requires_grad_()
    h0 = h64.detach().to(dtype).requires_grad_()
    out_ref, hn_ref = reference(x64, h64)
    out, h_n = fast(x, h0)
    assert_close(out, out_ref, dtype, "output")
    assert_close(h_n, hn_ref, dtype, "h_n")
    grad_out = torch.randn(out_ref.shape, generator=gen, dtype=torch.float64)
    ref_grads = torch.autograd.grad(
        (out_ref * grad_out).sum() + hn_ref.sum(), [x64, h64, *reference.parameters()]
    )
    grads = torch.autograd.grad(
        (out * grad_out.to(dtype)).sum() + h_n.sum(), [x, h0, *fast.parameters()]
    )
    for g, r in zip(grads, ref_grads, strict=True):
        assert_close(g, r, dtype, "gradient")


@pytest.mark.parametrize("dtype_name", ["fp32", "fp64"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_h0", [True, False], ids=["h0", "noh0"])
def test_cell_matches_nn_rnncell(dtype_name, act, bias, batched, with_h0, cpu_backend):
    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    reference = torch.nn.RNNCell(4, 6, bias=bias, nonlinearity=act, dtype=torch.float64)
    fast = fastrnn.RNNCell(4, 6, bias=bias, nonlinearity=act, dtype=dtype)
    fast.load_state_dict({k: v.to(dtype) for k, v in reference.state_dict().items()})
    gen = torch.Generator().manual_seed(3)
    lead = (5,) if batched else ()
    x64 = torch.randn(*lead, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    h64 = torch.randn(*lead, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    x = x64.detach().to(dtype).requires_grad_()
    h = h64.detach().to(dtype).requires_grad_()
    ref_inputs = [x64, h64] if with_h0 else [x64]
    inputs = [x, h] if with_h0 else [x]
    out_ref = reference(*ref_inputs)
    out = fast(*inputs)
    assert_close(out, out_ref, dtype, "h'")
    proj = torch.randn(out_ref.shape, generator=gen, dtype=torch.float64)
    ref_params = list(reference.parameters())
    ref_grads = torch.autograd.grad((out_ref * proj).sum(), ref_inputs + ref_params)
    grads = torch.autograd.grad((out * proj.to(dtype)).sum(), inputs + list(fast.parameters()))
    for g, r in zip(grads, ref_grads, strict=True):
        assert_close(g, r, dtype, "gradient")


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_dropout_matches_nn_rnn_with_same_seed(bidirectional, cpu_backend):
    """Dropout between layers draws from the generator exactly as nn.RNN does."""
    reference, fast = paired_rnns(
        4, 6, torch.float64, num_layers=3, dropout=0.5, bidirectional=bidirectional
    )
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    torch.manual_seed(7)
    out_ref, hn_ref = reference(x)
    torch.manual_seed(7)
    out, h_n = fast(x)
    assert_close(out, out_ref, torch.float64, "output")
    assert_close(h_n, hn_ref, torch.float64, "h_n")
    # Dropout is off in eval mode, and on in train mode (outputs differ from eval).
    fast.eval()
    reference.eval()
    out_eval, _ = fast(x)
    assert_close(out_eval, reference(x)[0], torch.float64, "eval output")
    assert (out_eval - out).abs().max() > 1e-3


def test_non_contiguous_and_expanded_inputs(cpu_backend):
    reference, fast = paired_rnns(4, 6, torch.float64, num_layers=2)
    base = torch.randn(3, 10, 8, dtype=torch.float64)
    x = base[:, ::2, ::2].transpose(0, 1)  # [5, 3, 4], strided every way
    h0 = torch.randn(1, 3, 6, dtype=torch.float64).expand(2, 3, 6)
    assert not x.is_contiguous() and h0.stride(0) == 0
    for got, ref in zip(fast(x, h0), reference(x, h0), strict=True):
        assert_close(got, ref, torch.float64, "strided input")
    xe = torch.randn(5, 1, 4, dtype=torch.float64).expand(5, 3, 4)
    for got, ref in zip(fast(xe), reference(xe), strict=True):
        assert_close(got, ref, torch.float64, "expanded input")
    # Upstream gradients strided every way (last dim stride 2) and expanded (stride 0).
    grad_out = torch.randn(5, 3, 12, dtype=torch.float64)[:, :, ::2]
    grad_h = torch.randn(1, 3, 1, dtype=torch.float64).expand(2, 3, 6)
    grads = []
    for module in (fast, reference):
        out, h_n = module(x, h0)
        params = list(module.parameters())
        grads.append(torch.autograd.grad((out, h_n), params, (grad_out, grad_h)))
    for got, ref in zip(*grads, strict=True):
        assert_close(got, ref, torch.float64, "gradient from strided upstream gradients")


@pytest.mark.parametrize("dtype_name", ["fp32", "fp64"])
def test_tanh_accuracy_against_torch_tanh(dtype_name, cpu_backend):
    """An RNN with W_ih = 1, W_hh = 0 and no bias outputs tanh(x): the kernels' tanh
    approximations against torch.tanh in fp64, including extremes, inf and NaN."""
    dtype = DTYPES[dtype_name]
    rnn = fastrnn.RNN(1, 1, bias=False, dtype=dtype)
    with torch.no_grad():
        rnn.weight_ih_l0.fill_(1.0)
        rnn.weight_hh_l0.zero_()
    dense = torch.linspace(-25, 25, 200_001, dtype=torch.float64)
    extremes = [0.0, -0.0, 1e-300, -1e-30, 1e-8, 4e-4, 19.4, 19.6, 1e300, float("inf")]
    special = torch.tensor([*extremes, float("-inf"), float("nan")], dtype=torch.float64)
    x = torch.cat([dense, special]).to(dtype)
    out, _ = rnn(x.view(1, -1, 1))
    want = torch.tanh(x.double())
    got = out.view(-1).double()
    assert torch.isnan(got[-1]) and not torch.isnan(got[:-1]).any()
    ulp = torch.finfo(dtype).eps  # relative to |tanh| <= 1: an absolute bound
    err = (got[:-1] - want[:-1]).abs().max().item()
    assert err <= 4 * ulp, f"tanh error {err:.3g} > 4 eps ({dtype})"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_packed_sequences_split_across_threads(act, threads):
    """Packed batches whose size shrinks over the steps, bidirectional, with each step's
    hidden columns split across threads (B*H*H >= 32k) or not: every value vs nn.RNN."""
    reference, fast = paired_rnns(
        4, 111, torch.float64, num_layers=2, nonlinearity=act, bidirectional=True
    )
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 4, 111, generator=gen, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([7, 5, 2, 1])
    results = []
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for module in (reference, fast):
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, h_n = module(packed, h0)
            loss = (out.data * torch.arange(out.data.numel()).view_as(out.data).sin()).sum()
            loss = loss + (h_n * h_n).sum()
            results.append(
                [out.data, h_n, *torch.autograd.grad(loss, [x, h0, *module.parameters()])]
            )
    finally:
        torch.set_num_threads(previous)
    for got, want in zip(results[1], results[0], strict=True):
        assert_close(got, want, torch.float64, "packed, split across threads")


REDUCED = {"bf16": torch.bfloat16, "fp16": torch.float16}


def assert_within_twice(errors: dict, names: list, dtype: torch.dtype):
    """fastrnn's error of each tensor at most twice nn.RNN's own (at least one epsilon)."""
    eps = torch.finfo(dtype).eps
    for name, got, own in zip(names, errors["fastrnn"], errors["nn"], strict=True):
        assert got <= 2 * max(own, eps), f"{name}: error {got:.3g} > 2 x nn.RNN's {own:.3g}"


@pytest.mark.parametrize("cpu_backend", REDUCED_CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("kind", ["batched", "packed"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("dtype_name", list(REDUCED))
def test_reduced_precision_within_twice_nn_rnns_error(dtype_name, act, kind, cpu_backend):
    """bfloat16 and float16 (the C++ kernels on float32 copies, or in that dtype on ATen's
    GEMMs): output, h_n and every gradient against nn.RNN in float64 on the same rounded
    inputs and weights, with at most twice the error nn.RNN itself makes in that dtype."""
    dtype = REDUCED[dtype_name]
    options = dict(num_layers=2, bidirectional=True, nonlinearity=act)
    torch.manual_seed(0)
    modules = {"nn": torch.nn.RNN(4, 6, dtype=dtype, **options)}
    modules["fastrnn"] = fastrnn.RNN(4, 6, dtype=dtype, **options)
    modules["fastrnn"].load_state_dict(modules["nn"].state_dict())
    exact = torch.nn.RNN(4, 6, dtype=torch.float64, **options)
    exact.load_state_dict({k: v.double() for k, v in modules["nn"].state_dict().items()})
    gen = torch.Generator().manual_seed(2)
    # Rounded once, so that every module reads the same values.
    x = torch.randn(7, 3, 4, generator=gen).to(dtype)
    h0 = torch.randn(4, 3, 6, generator=gen).to(dtype)
    lengths = torch.tensor([7, 3, 5]) if kind == "packed" else None
    out_shape = (15, 12) if lengths is not None else (7, 3, 12)  # packed: 15 rows
    out_proj = torch.randn(out_shape, generator=gen, dtype=torch.float64)
    h_proj = torch.randn(4, 3, 6, generator=gen, dtype=torch.float64)

    def params(m):
        return [getattr(m, n) for n in m._flat_weights_names]

    def flat(results):
        return [results[0], results[1], *results[2]]

    def run(module, dtype):
        inputs = (x.to(dtype).requires_grad_(), h0.to(dtype).requires_grad_())
        return flat(run_and_grads(module, *inputs, lengths, params, out_proj, h_proj))

    want = run(exact, torch.float64)
    errors = {
        name: [relative_error(got, w) for got, w in zip(run(m, dtype), want, strict=True)]
        for name, m in modules.items()
    }
    names = ["output", "h_n", "grad of input", "grad of h0", *exact._flat_weights_names]
    assert_within_twice(errors, names, dtype)


@pytest.mark.parametrize("threads", [1, 2])
def test_native_reduced_precision_split_across_threads(threads):
    """bfloat16 in its own dtype on ATen's GEMMs, with each step's hidden columns split
    across threads (B*H*H >= 32k) or not, packed and bidirectional: output, h_n and every
    gradient within twice nn.RNN's own error against float64."""
    options = dict(num_layers=2, bidirectional=True)
    torch.manual_seed(0)
    modules = {"nn": torch.nn.RNN(4, 111, dtype=torch.bfloat16, **options)}
    modules["fastrnn"] = fastrnn.RNN(4, 111, dtype=torch.bfloat16, **options)
    modules["fastrnn"].load_state_dict(modules["nn"].state_dict())
    exact = torch.nn.RNN(4, 111, dtype=torch.float64, **options)
    exact.load_state_dict({k: v.double() for k, v in modules["nn"].state_dict().items()})
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 4, 4, generator=gen).bfloat16()
    h0 = torch.randn(4, 4, 111, generator=gen).bfloat16()
    lengths = torch.tensor([7, 5, 2, 1])
    out_proj = torch.randn(15, 222, generator=gen, dtype=torch.float64)
    h_proj = torch.randn(4, 4, 111, generator=gen, dtype=torch.float64)

    def run(module, dtype):
        inputs = (x.to(dtype).requires_grad_(), h0.to(dtype).requires_grad_())
        out, h_n, grads = run_and_grads(module, *inputs, lengths, lambda m: m.parameters(),
                                        out_proj, h_proj)  # fmt: skip
        return [out, h_n, *grads]

    want = run(exact, torch.float64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with reduced_precision("native"):
            got = {name: run(m, torch.bfloat16) for name, m in modules.items()}
    finally:
        torch.set_num_threads(previous)
    errors = {
        name: [relative_error(g, w) for g, w in zip(tensors, want, strict=True)]
        for name, tensors in got.items()
    }
    names = ["output", "h_n", "grad of input", "grad of h0", *exact._flat_weights_names]
    assert_within_twice(errors, names, torch.bfloat16)


@pytest.mark.parametrize("cpu_backend", REDUCED_CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("dtype_name", list(REDUCED))
def test_reduced_precision_cell_within_twice_nn_rnncells_error(dtype_name, act, cpu_backend):
    dtype = REDUCED[dtype_name]
    torch.manual_seed(0)
    modules = {"nn": torch.nn.RNNCell(4, 6, nonlinearity=act, dtype=dtype)}
    modules["fastrnn"] = fastrnn.RNNCell(4, 6, nonlinearity=act, dtype=dtype)
    modules["fastrnn"].load_state_dict(modules["nn"].state_dict())
    exact = torch.nn.RNNCell(4, 6, nonlinearity=act, dtype=torch.float64)
    exact.load_state_dict({k: v.double() for k, v in modules["nn"].state_dict().items()})
    gen = torch.Generator().manual_seed(3)
    x, h = torch.randn(5, 4, generator=gen).to(dtype), torch.randn(5, 6, generator=gen).to(dtype)
    proj = torch.randn(5, 6, generator=gen, dtype=torch.float64)

    def run(cell, dtype):
        inputs = [x.to(dtype).requires_grad_(), h.to(dtype).requires_grad_()]
        out = cell(*inputs)
        grads = torch.autograd.grad((out * proj.to(dtype)).sum(), inputs + list(cell.parameters()))
        return [out, *grads]

    want = run(exact, torch.float64)
    errors = {
        name: [relative_error(got, w) for got, w in zip(run(m, dtype), want, strict=True)]
        for name, m in modules.items()
    }
    names = ["h'", "grad of input", "grad of h", "weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert_within_twice(errors, names, dtype)


@pytest.mark.parametrize("kind", ["batched", "packed"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_reference_rounds_as_nn_rnn_does_on_the_cpu(dtype, act, kind):
    """The reference sums in ATen's order, so on the CPU it gives nn.RNN's numbers bit for
    bit, outputs and gradients, in any dtype."""
    torch.manual_seed(0)
    options = dict(num_layers=2, bidirectional=True, nonlinearity=act, dtype=dtype)
    reference, fast = torch.nn.RNN(4, 6, **options), fastrnn.RNN(4, 6, **options)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(7, 3, 4, generator=torch.Generator().manual_seed(2)).to(dtype)
    lengths = torch.tensor([7, 3, 5]) if kind == "packed" else None
    out_proj = torch.ones(15 if lengths is not None else 21, 12, dtype=torch.float64)
    out_proj = out_proj.reshape(-1, 3, 12) if lengths is None else out_proj
    h_proj = torch.ones(4, 3, 6, dtype=torch.float64)

    def params(m):
        return list(m.parameters())

    want = run_and_grads(reference, x.clone().requires_grad_(), None, lengths, params, out_proj,
                         h_proj)  # fmt: skip
    with fastrnn.use_backend("reference"):
        got = run_and_grads(fast, x.clone().requires_grad_(), None, lengths, params, out_proj,
                            h_proj)  # fmt: skip
    for g, w in zip([got[0], got[1], *got[2]], [want[0], want[1], *want[2]], strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
