"""The custom ops themselves: gradcheck and gradgradcheck in fp64, torch.library.opcheck."""

from __future__ import annotations

import pytest
import torch
from conftest import bad_op_calls, paired_rnns, penalty_gradients, reduced_precision
from torch.nn.utils.rnn import pack_sequence, pad_sequence

import fastrnn
from fastrnn.ops import rnn_op


def make_op_args(layers, bidirectional, bias, packed, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    directions = 2 if bidirectional else 1
    input_size, hidden = 3, 4

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    if packed:
        seqs = [rand(n, input_size) for n in (4, 3, 1)]
        sequence = pack_sequence(seqs)
        x, batch_sizes, batch = sequence.data, sequence.batch_sizes, 3
    else:
        x, batch_sizes, batch = rand(4, 3, input_size), None, 3
    hx = rand(layers * directions, batch, hidden)
    weights = []
    for layer in range(layers):
        layer_in = input_size if layer == 0 else directions * hidden
        for _ in range(directions):
            weights += [rand(hidden, layer_in) * 0.5, rand(hidden, hidden) * 0.5]
            if bias:
                weights += [rand(hidden), rand(hidden)]
    return x, hx, weights, batch_sizes


CASES = [
    # (layers, bidirectional, bias, packed, relu)
    (1, False, True, False, False),
    (2, True, True, False, True),
    (2, False, False, True, False),
    (3, True, True, True, True),
]


def case_id(case):
    layers, bidir, bias, packed, relu = case
    return (
        f"L{layers}-{'bi' if bidir else 'uni'}-{'bias' if bias else 'nobias'}-"
        f"{'packed' if packed else 'padded'}-{'relu' if relu else 'tanh'}"
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradcheck_op(case):
    layers, bidir, bias, packed, relu = case
    x, hx, weights, batch_sizes = make_op_args(layers, bidir, bias, packed)
    tensors = [x, hx, *weights]
    for t in tensors:
        t.requires_grad_()

    def fn(x, hx, *weights):
        return rnn_op(x, hx, list(weights), batch_sizes, layers, bidir, relu)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-8)


# (dtype, how the C++ kernels run bfloat16/float16): float32 copies at these small steps
# under "auto"; "native", in that dtype on ATen's GEMMs, as large steps run.
DTYPES_AND_MODES = [
    pytest.param(torch.float64, "auto", id="float64"),
    pytest.param(torch.bfloat16, "auto", id="bfloat16"),
    pytest.param(torch.float16, "auto", id="float16"),
    pytest.param(torch.bfloat16, "native", id="bfloat16-native"),
]


@pytest.mark.parametrize(("dtype", "mode"), DTYPES_AND_MODES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_opcheck_forward_and_backward(case, dtype, mode):
    with reduced_precision(mode):
        opcheck_forward_and_backward(case, dtype)


def opcheck_forward_and_backward(case, dtype):
    layers, bidir, bias, packed, relu = case
    x, hx, weights, batch_sizes = make_op_args(layers, bidir, bias, packed, dtype)
    for t in (x, hx, *weights):
        t.requires_grad_()
    args = (x, hx, weights, batch_sizes, layers, bidir, relu)
    torch.library.opcheck(torch.ops.fastrnn.rnn_forward.default, args)
    output, h_n, layer_outputs = torch.ops.fastrnn.rnn_forward(*args)
    detached = [t.detach() for t in (x, hx)]
    backward_args = (
        *detached,
        [w.detach() for w in weights],
        batch_sizes,
        output.detach(),
        layer_outputs,
        layers,
        bidir,
        relu,
    )
    grad_output, grad_h_n = torch.randn_like(output), torch.randn_like(h_n)
    for need_input_grad in (True, False):
        torch.library.opcheck(
            torch.ops.fastrnn.rnn_backward.default,
            (grad_output, grad_h_n, *backward_args, need_input_grad),
        )
    # hx needing no gradient: none returned, its product skipped, the rest unchanged.
    backward_with_hx_grad = torch.ops.fastrnn.rnn_backward(
        grad_output, grad_h_n, *backward_args, True
    )
    without_hx_grad = (grad_output, grad_h_n, *backward_args, True, False)
    torch.library.opcheck(torch.ops.fastrnn.rnn_backward.default, without_hx_grad)
    grad_input, grad_hx, grad_weights = torch.ops.fastrnn.rnn_backward(*without_hx_grad)
    assert grad_hx.shape == (0,)
    for got, want in zip(
        [grad_input, *grad_weights],
        [backward_with_hx_grad[0], *backward_with_hx_grad[2]],
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # An output that did not reach the loss: its gradient None, taken as zeros.
    backward = torch.ops.fastrnn.rnn_backward.default
    for grads, zeros in (
        ((grad_output, None), (grad_output, torch.zeros_like(h_n))),
        ((None, grad_h_n), (torch.zeros_like(output), grad_h_n)),
    ):
        torch.library.opcheck(backward, (*grads, *backward_args, True))
        got = backward(*grads, *backward_args, True)
        want = backward(*zeros, *backward_args, True)
        for g, w in zip([got[0], got[1], *got[2]], [want[0], want[1], *want[2]], strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize(("dtype", "mode"), DTYPES_AND_MODES)
@pytest.mark.parametrize(("steps", "batch"), [(3, 5), (5, 3), (7, 2), (2, 7)])
def test_batch_first_input_read_where_it_is_matches_its_dense_copy(steps, batch, dtype, mode):
    """A batch_first module hands the op a [T, B, I] view of [B, T, I] memory, which the
    C++ kernels read in place: one GEMM per step or per batch row (whichever are fewer)
    in the input projection and dW_ih.  Results as from the dense copy of the input."""
    layers, bidirectional, relu = 2, True, True
    x, hx, weights, _ = make_op_args(layers, bidirectional, True, False, dtype)
    x = torch.randn(batch, steps, x.size(-1), dtype=dtype)
    hx = hx[:, :1].expand(-1, batch, -1).contiguous()
    args = (hx, weights, None, layers, bidirectional, relu)
    batch_major = x.transpose(0, 1)
    assert not batch_major.is_contiguous()
    # The blocks' products round as the one GEMM's may not (float32 and the reduced dtypes
    # differ by an ulp here and there); a row read from the wrong place would be off by O(1).
    tolerance = (
        {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 0.05, "atol": 0.05}
    )
    with reduced_precision(mode):
        got = torch.ops.fastrnn.rnn_forward(batch_major, *args)
        want = torch.ops.fastrnn.rnn_forward(batch_major.contiguous(), *args)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, **tolerance)
        output, h_n, layer_outputs = want
        grads = torch.randn_like(output), torch.randn_like(h_n)
        rest = (hx, weights, None, output, layer_outputs, layers, bidirectional, relu, True)
        got = torch.ops.fastrnn.rnn_backward(*grads, batch_major, *rest)
        want = torch.ops.fastrnn.rnn_backward(*grads, batch_major.contiguous(), *rest)
    for g, w in zip([got[0], got[1], *got[2]], [want[0], want[1], *want[2]], strict=True):
        torch.testing.assert_close(g, w, **tolerance)


@pytest.mark.parametrize("case", [c for c in CASES if not c[3]], ids=case_id)
def test_op_without_hx_is_zero_initial_state(case):
    layers, bidir, bias, _, relu = case
    x, hx, weights, _ = make_op_args(layers, bidir, bias, False)
    zeros = torch.zeros_like(hx)
    tensors = [x, *weights]
    for t in tensors:
        t.requires_grad_()
    torch.library.opcheck(
        torch.ops.fastrnn.rnn_forward.default, (x, None, weights, None, layers, bidir, relu)
    )
    out, h_n = rnn_op(x, None, weights, None, layers, bidir, relu)
    out_ref, h_n_ref = rnn_op(x, zeros, weights, None, layers, bidir, relu)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    torch.testing.assert_close(h_n, h_n_ref, rtol=0, atol=0)

    def fn(x, *weights):
        return rnn_op(x, None, list(weights), None, layers, bidir, relu)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-8)
    output, h_n, layer_outputs = torch.ops.fastrnn.rnn_forward(
        x, None, weights, None, layers, bidir, relu
    )
    torch.library.opcheck(
        torch.ops.fastrnn.rnn_backward.default,
        (
            torch.randn_like(output), torch.randn_like(h_n), x.detach(), None,
            [w.detach() for w in weights], None, output.detach(), layer_outputs,
            layers, bidir, relu, True,
        ),
    )  # fmt: skip


def test_packed_input_without_hx_is_refused_by_the_op():
    x, _, weights, batch_sizes = make_op_args(1, False, True, True)
    with pytest.raises(RuntimeError, match="packed input needs hx"):
        torch.ops.fastrnn.rnn_forward(x, None, weights, batch_sizes, 1, False, False)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_functional_packed_input_without_hx_is_zero_initial_state(backend):
    x, hx, weights, batch_sizes = make_op_args(2, True, True, True)
    with fastrnn.use_backend(backend):
        out, h_n = fastrnn.functional.rnn(x, None, weights, batch_sizes, 2, True, False)
        out_ref, h_n_ref = fastrnn.functional.rnn(
            x, torch.zeros_like(hx), weights, batch_sizes, 2, True, False
        )
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    torch.testing.assert_close(h_n, h_n_ref, rtol=0, atol=0)


def test_gradcheck_module_with_packed_input_and_h0():
    torch.manual_seed(0)
    rnn = fastrnn.RNN(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    seqs = [torch.randn(n, 3, dtype=torch.float64, requires_grad=True) for n in (2, 4, 3)]
    h0 = torch.randn(4, 3, 4, dtype=torch.float64, requires_grad=True)
    params = list(rnn.parameters())

    def fn(a, b, c, h0, *_params):
        out, h_n = rnn(pack_sequence([a, b, c], enforce_sorted=False), h0)
        return out.data, h_n

    assert torch.autograd.gradcheck(fn, (*seqs, h0, *params), eps=1e-6, atol=1e-8)


def test_gradcheck_cell():
    torch.manual_seed(0)
    cell = fastrnn.RNNCell(3, 5, nonlinearity="relu", dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h, *p: cell(x, h), (x, h, *cell.parameters()))


@pytest.mark.parametrize(
    "case, with_hx",
    [(c, True) for c in CASES] + [(c, False) for c in CASES if not c[3]],  # packed needs hx
    ids=lambda v: case_id(v) if isinstance(v, tuple) else ("hx" if v else "no-hx"),
)
def test_gradgradcheck_op(case, with_hx):
    """Gradients of gradients (create_graph=True), which nn.RNN supports on the CPU."""
    layers, bidir, bias, packed, relu = case
    x, hx, weights, batch_sizes = make_op_args(layers, bidir, bias, packed)
    tensors = [x, *weights] + ([hx] if with_hx else [])
    for t in tensors:
        t.requires_grad_()

    def fn(x, *rest):
        weights, h = (rest[:-1], rest[-1]) if with_hx else (rest, None)
        return rnn_op(x, h, list(weights), batch_sizes, layers, bidir, relu)

    assert torch.autograd.gradgradcheck(fn, tensors, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
def test_gradgradcheck_cell_op(relu):
    torch.manual_seed(0)
    cell = fastrnn.RNNCell(3, 5, nonlinearity="relu" if relu else "tanh", dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)

    def two_steps(x, h, *params):  # the second step differentiates through the first's output
        return cell(x, cell(x, h))

    assert torch.autograd.gradgradcheck(two_steps, (x, h, *cell.parameters()))


def test_backward_op_recorded_equals_the_kernel():
    """Under grad mode the backward op recomputes through fastrnn.reference; its values
    are the kernel's, for each output it returns (grad_input only when needed)."""
    x, hx, weights, _ = make_op_args(2, True, True, False)
    output, h_n, layer_outputs = torch.ops.fastrnn.rnn_forward(x, hx, weights, None, 2, True, True)
    grads = (torch.randn_like(output), torch.randn_like(h_n))
    for need_input_grad in (True, False):
        args = (*grads, x, hx, weights, None, output, layer_outputs, 2, True, True, need_input_grad)
        want = torch.ops.fastrnn.rnn_backward(*args)
        x.requires_grad_()
        got = torch.ops.fastrnn.rnn_backward(*args)
        x.requires_grad_(False)
        assert got[0].grad_fn is not None or not need_input_grad
        for g, w in zip([got[0], got[1], *got[2]], [want[0], want[1], *want[2]], strict=True):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(
    torch.__version__ < (2, 10),
    reason="torch < 2.10 cannot trace the packed reference's step slices under dynamic "
    "shapes (GuardOnDataDependentSymNode in opcheck's test_aot_dispatch_dynamic)",
)
def test_opcheck_reference_op():
    x, hx, weights, batch_sizes = make_op_args(1, True, True, True)
    for t in (x, hx, *weights):
        t.requires_grad_()
    torch.library.opcheck(
        torch.ops.fastrnn.rnn_reference.default, (x, hx, weights, batch_sizes, 1, True, False)
    )


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_gradient_penalty_matches_nn_rnn(packed):
    """A second-order loss (a gradient penalty) gives nn.RNN's parameter gradients."""
    reference, fast = paired_rnns(3, 4, torch.float64, num_layers=2, bidirectional=True)
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in (5, 2, 4)]
    results = []
    for rnn in (reference, fast):
        inputs = [s.clone().requires_grad_() for s in seqs]
        x = pack_sequence(inputs, enforce_sorted=False) if packed else pad_sequence(inputs)
        out, h_n = rnn(x)
        out = out.data if packed else out
        loss = out.pow(2).sum() + h_n.pow(3).sum()
        results.append(penalty_gradients(loss, [*inputs, *rnn.parameters()]))
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_batched_gradients_match_nn_rnn(packed, with_hx):
    """autograd.grad(is_grads_batched=True), which jacobian(vectorize=True) uses, vmaps
    the backward over gradients: they take the torch-ops backward (the kernels take one
    gradient) and give nn.RNN's numbers, for the input, hx and every weight."""
    reference, fast = paired_rnns(3, 4, torch.float64, num_layers=2, bidirectional=True)
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in (5, 2, 4)]
    h0 = torch.randn(4, 3, 4, dtype=torch.float64)
    results = []
    for rnn in (reference, fast):
        inputs = [s.clone().requires_grad_() for s in seqs]
        hx = h0.clone().requires_grad_() if with_hx else None
        x = pack_sequence(inputs, enforce_sorted=False) if packed else pad_sequence(inputs)
        out, h_n = rnn(x, hx)
        out = out.data if packed else out
        gen = torch.Generator().manual_seed(1)
        vectors = (torch.randn(6, *out.shape, generator=gen, dtype=torch.float64),
                   torch.randn(6, *h_n.shape, generator=gen, dtype=torch.float64))  # fmt: skip
        wrt = [*inputs, *([hx] if with_hx else []), *rnn.parameters()]
        results.append(torch.autograd.grad((out, h_n), wrt, vectors, is_grads_batched=True))
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_vectorized_jacobian_and_hessian_of_the_cell_match_nn_rnn_cell():
    torch.manual_seed(0)
    reference = torch.nn.RNNCell(3, 4, dtype=torch.float64)
    fast = fastrnn.RNNCell(3, 4, dtype=torch.float64)
    fast.load_state_dict(reference.state_dict())
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    results = []
    for cell in (reference, fast):
        jacobian = torch.autograd.functional.jacobian(cell, (x, h), vectorize=True)
        hessian = torch.autograd.functional.hessian(
            lambda x, h, cell=cell: cell(x, h).pow(3).sum(), (x, h), vectorize=True
        )
        results.append([*jacobian, *(block for row in hessian for block in row)])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_outputs_not_needing_gradients_get_zeros():
    """Backward through only h_n, or only the output, matches nn.RNN."""
    torch.manual_seed(0)
    reference = torch.nn.RNN(3, 4, 2, dtype=torch.float64)
    fast = fastrnn.RNN(3, 4, 2, dtype=torch.float64)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    for pick in (0, 1):
        (g_ref,) = torch.autograd.grad(reference(x)[pick].sum(), x)
        (g,) = torch.autograd.grad(fast(x)[pick].sum(), x)
        torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
@pytest.mark.parametrize(("dtype", "mode"), [p for p in DTYPES_AND_MODES if p.id != "float16"])
def test_opcheck_cell_ops(bias, relu, dtype, mode):
    with reduced_precision(mode):
        opcheck_cell_ops(bias, relu, dtype)


def opcheck_cell_ops(bias, relu, dtype):
    gen = torch.Generator().manual_seed(5)
    x, h = (
        torch.randn(3, 4, generator=gen, dtype=dtype),
        torch.randn(3, 5, generator=gen, dtype=dtype),
    )
    w_ih = torch.randn(5, 4, generator=gen, dtype=dtype)
    w_hh = torch.randn(5, 5, generator=gen, dtype=dtype)
    b_ih, b_hh = (torch.randn(5, generator=gen, dtype=dtype) for _ in range(2))
    biases = (b_ih, b_hh) if bias else (None, None)
    for t in (x, h, w_ih, w_hh, *(b for b in biases if b is not None)):
        t.requires_grad_()
    torch.library.opcheck(
        torch.ops.fastrnn.rnn_cell_forward.default, (x, h, w_ih, w_hh, *biases, relu)
    )
    h_new = torch.ops.fastrnn.rnn_cell_forward(x, h, w_ih, w_hh, *biases, relu).detach()
    for need_input, need_hx in ((True, True), (False, True), (True, False)):
        args = (torch.randn_like(h_new), x.detach(), h.detach(), w_ih.detach(), w_hh.detach(),
                h_new, bias, relu, need_input, need_hx)  # fmt: skip
        torch.library.opcheck(torch.ops.fastrnn.rnn_cell_backward.default, args)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_parameter_gradients_when_the_input_needs_none(bidirectional):
    """The backward skips layer 0's input-gradient GEMM then; weights must not care."""
    torch.manual_seed(0)
    reference = torch.nn.RNN(3, 4, 2, bidirectional=bidirectional, dtype=torch.float64)
    fast = fastrnn.RNN(3, 4, 2, bidirectional=bidirectional, dtype=torch.float64)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)  # no requires_grad
    for module in (reference, fast):
        out, h_n = module(x)
        (out.sin().sum() + h_n.sum()).backward()
    for p_ref, p in zip(reference.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_cell_gradient_penalty_matches_nn_rnn_cell(nonlinearity):
    torch.manual_seed(0)
    reference = torch.nn.RNNCell(3, 4, nonlinearity=nonlinearity, dtype=torch.float64)
    fast = fastrnn.RNNCell(3, 4, nonlinearity=nonlinearity, dtype=torch.float64)
    fast.load_state_dict(reference.state_dict())
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    results = []
    for cell in (reference, fast):
        inputs = [x.clone().requires_grad_(), h.clone().requires_grad_()]
        h_2 = cell(inputs[0], cell(*inputs))
        results.append(penalty_gradients(h_2.pow(3).sum(), [*inputs, *cell.parameters()]))
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", range(len(bad_op_calls())), ids=[c[0] for c in bad_op_calls()])
def test_ops_refuse_bad_arguments_saying_what_is_wrong(case):
    _, op, args, words = bad_op_calls()[case]
    with pytest.raises(RuntimeError, match=words):
        op(*args)
