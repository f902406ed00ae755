"""The nn.RNN / nn.RNNCell surface: constructor, parameters, state_dict, errors, backends."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from conftest import reduced_precision
from torch.nn.utils.rnn import pack_sequence

import fastrnn
from fastrnn import _C, backend

CONFIGS = [
    dict(input_size=4, hidden_size=3),
    dict(
        input_size=64,
        hidden_size=128,
        num_layers=2,
        nonlinearity="relu",
        bias=True,
        batch_first=True,
        dropout=0.1,
        bidirectional=True,
    ),
    dict(input_size=5, hidden_size=7, num_layers=3, bias=False),
]


@pytest.mark.parametrize("kwargs", CONFIGS, ids=["default", "everything", "nobias"])
def test_same_parameters_init_and_repr_as_nn_rnn(kwargs):
    torch.manual_seed(3)
    reference = torch.nn.RNN(**kwargs)
    torch.manual_seed(3)
    fast = fastrnn.RNN(**kwargs)
    ref_params = dict(reference.named_parameters())
    fast_params = dict(fast.named_parameters())
    assert list(fast_params) == list(ref_params)
    for name, p in ref_params.items():
        assert torch.equal(fast_params[name], p), name  # same seed, same weights
    assert repr(fast) == repr(reference)
    assert fast.extra_repr() == reference.extra_repr()


@pytest.mark.parametrize("kwargs", CONFIGS, ids=["default", "everything", "nobias"])
def test_state_dict_round_trips_both_ways(kwargs):
    reference = torch.nn.RNN(**kwargs)
    fast = fastrnn.RNN(**kwargs)
    fast.load_state_dict(reference.state_dict())
    back = torch.nn.RNN(**kwargs)
    back.load_state_dict(fast.state_dict())
    for (n1, a), (n2, b) in zip(
        reference.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(a, b)


def test_factory_kwargs_and_positional_nonlinearity():
    rnn = fastrnn.RNN(3, 4, 1, "relu", dtype=torch.float64, device="cpu")
    assert rnn.nonlinearity == "relu" and rnn.weight_ih_l0.dtype == torch.float64
    cell = fastrnn.RNNCell(3, 4, dtype=torch.float64)
    assert cell.weight_hh.dtype == torch.float64


def test_flatten_parameters_is_a_no_op():
    rnn = fastrnn.RNN(3, 4)
    before = [p.data_ptr() for p in rnn.parameters()]
    rnn.flatten_parameters()
    assert [p.data_ptr() for p in rnn.parameters()] == before


def test_cell_same_init_repr_and_state_dict():
    torch.manual_seed(1)
    reference = torch.nn.RNNCell(4, 2, bias=False, nonlinearity="relu")
    torch.manual_seed(1)
    fast = fastrnn.RNNCell(4, 2, bias=False, nonlinearity="relu")
    assert fast.extra_repr() == reference.extra_repr()
    for a, b in zip(reference.state_dict().values(), fast.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    reference.load_state_dict(fast.state_dict())


def raised(fn):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        return type(error), str(error)
    return None


RNN_ERROR_CASES = {
    "input-1d": lambda m: m(torch.randn(5)),
    "input-4d": lambda m: m(torch.randn(2, 3, 4, 5)),
    "wrong-feature-size": lambda m: m(torch.randn(5, 2, 7)),
    "h0-wrong-shape": lambda m: m(torch.randn(5, 2, 4), torch.randn(2, 3, 3)),
    "h0-2d-for-3d-input": lambda m: m(torch.randn(5, 2, 4), torch.randn(2, 3)),
    "h0-3d-for-2d-input": lambda m: m(torch.randn(5, 4), torch.randn(2, 1, 3)),
    "input-dtype": lambda m: m(torch.randn(5, 2, 4, dtype=torch.float64)),
    "input-int": lambda m: m(torch.ones(5, 2, 4, dtype=torch.int32)),
    "empty-sequence": lambda m: m(torch.randn(0, 2, 4)),
    "packed-wrong-feature": lambda m: m(pack_sequence([torch.randn(3, 5)])),
    "packed-h0-batch": lambda m: m(pack_sequence([torch.randn(3, 4)]), torch.randn(2, 2, 3)),
}


@pytest.mark.parametrize("case", list(RNN_ERROR_CASES), ids=list(RNN_ERROR_CASES))
def test_rnn_errors_match_nn_rnn(case):
    reference = torch.nn.RNN(4, 3, 2)
    fast = fastrnn.RNN(4, 3, 2)
    expected = raised(lambda: RNN_ERROR_CASES[case](reference))
    got = raised(lambda: RNN_ERROR_CASES[case](fast))
    assert expected is not None and got == expected


def test_hx_dtype_mismatch_is_a_clear_runtime_error():
    reference = torch.nn.RNN(4, 3)
    fast = fastrnn.RNN(4, 3)
    x, h0 = torch.randn(5, 2, 4), torch.randn(1, 2, 3, dtype=torch.float64)
    assert raised(lambda: reference(x, h0))[0] is RuntimeError
    with pytest.raises(RuntimeError, match=r"hx dtype \(torch.float64\) does not match"):
        fast(x, h0)


CONSTRUCTOR_CASES = {
    "nonlinearity": dict(input_size=3, hidden_size=4, nonlinearity="gelu"),
    "proj_size": dict(input_size=3, hidden_size=4, proj_size=2),
    "dropout-range": dict(input_size=3, hidden_size=4, dropout=1.5),
    "dropout-bool": dict(input_size=3, hidden_size=4, dropout=True),
    "hidden-zero": dict(input_size=3, hidden_size=0),
    "input-zero": dict(input_size=0, hidden_size=4),
    "layers-zero": dict(input_size=3, hidden_size=4, num_layers=0),
    "hidden-float": dict(input_size=3, hidden_size=4.0),
    "bias-int": dict(input_size=3, hidden_size=4, bias=1),
    "batch-first-str": dict(input_size=3, hidden_size=4, batch_first="yes"),
}


@pytest.mark.parametrize("case", list(CONSTRUCTOR_CASES), ids=list(CONSTRUCTOR_CASES))
def test_constructor_errors_match_nn_rnn(case):
    kwargs = CONSTRUCTOR_CASES[case]
    # None where this torch's nn.RNN accepts the case (torch < 2.11 takes input_size=0,
    # an int bias and a str batch_first): fastrnn.RNN then accepts it too.
    expected = raised(lambda: torch.nn.RNN(**kwargs))
    assert expected is not None or torch.__version__ < (2, 11), "nn.RNN accepts the case"
    assert raised(lambda: fastrnn.RNN(**kwargs)) == expected


def test_dropout_with_one_layer_warns_like_nn_rnn():
    with warnings.catch_warnings(record=True) as ref_warnings:
        warnings.simplefilter("always")
        torch.nn.RNN(3, 4, dropout=0.5)
    with pytest.warns(UserWarning) as fast_warnings:
        fastrnn.RNN(3, 4, dropout=0.5)
    assert [str(w.message) for w in fast_warnings] == [str(w.message) for w in ref_warnings]


CELL_ERROR_CASES = {
    "input-3d": lambda m: m(torch.randn(2, 2, 3)),
    "hidden-3d": lambda m: m(torch.randn(2, 3), torch.randn(1, 2, 4)),
    "input-size": lambda m: m(torch.randn(2, 5)),
    "batch-mismatch": lambda m: m(torch.randn(2, 3), torch.randn(3, 4)),
    "hidden-size": lambda m: m(torch.randn(2, 3), torch.randn(2, 5)),
    "unbatched-hidden-2d": lambda m: m(torch.randn(3), torch.randn(2, 4)),
}


@pytest.mark.parametrize("case", list(CELL_ERROR_CASES), ids=list(CELL_ERROR_CASES))
def test_cell_errors_match_nn_rnncell(case):
    expected = raised(lambda: CELL_ERROR_CASES[case](torch.nn.RNNCell(3, 4)))
    got = raised(lambda: CELL_ERROR_CASES[case](fastrnn.RNNCell(3, 4)))
    assert expected is not None and got == expected


def test_cell_unknown_nonlinearity_fails_at_forward_like_nn_rnncell():
    reference = torch.nn.RNNCell(3, 4, nonlinearity="gelu")
    fast = fastrnn.RNNCell(3, 4, nonlinearity="gelu")
    x = torch.randn(2, 3)
    assert raised(lambda: fast(x)) == raised(lambda: reference(x))


def test_cell_dtype_mismatch_is_a_runtime_error():
    assert raised(lambda: torch.nn.RNNCell(3, 4)(torch.randn(2, 3).double()))[0] is RuntimeError
    with pytest.raises(RuntimeError, match="must match the weight dtype"):
        fastrnn.RNNCell(3, 4)(torch.randn(2, 3).double())


def test_empty_batch_behaves_like_nn_rnn():
    torch.manual_seed(0)
    reference = torch.nn.RNN(4, 3, 2, bidirectional=True)
    fast = fastrnn.RNN(4, 3, 2, bidirectional=True)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(5, 0, 4, requires_grad=True)
    out, h_n = fast(x)
    out_ref, hn_ref = reference(x)
    assert out.shape == out_ref.shape and h_n.shape == hn_ref.shape
    (out.sum() + h_n.sum()).backward()
    assert x.grad.shape == x.shape
    cell_out = fastrnn.RNNCell(4, 3)(torch.randn(0, 4))
    assert cell_out.shape == torch.nn.RNNCell(4, 3)(torch.randn(0, 4)).shape


def test_backend_names_are_validated():
    with pytest.raises(ValueError, match="must be one of auto, cpp, triton, reference"):
        fastrnn.set_backend("cuda")
    assert fastrnn.get_backend() == "auto"


def test_backend_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert backend.resolve(cpu, torch.float32) == "cpp"
    assert backend.resolve(cpu, torch.bfloat16) == "cpp"
    assert backend.resolve(cpu, torch.float16) == "cpp"
    assert backend.resolve(cpu, torch.complex64) == "reference"
    with (
        fastrnn.use_backend("cpp"),
        pytest.raises(fastrnn.BackendUnavailableError, match="bfloat16 and float16, got"),
    ):
        fastrnn.RNN(3, 4, dtype=torch.complex64)(torch.randn(2, 1, 3, dtype=torch.complex64))
    with (
        fastrnn.use_backend("cpp"),
        pytest.raises(fastrnn.BackendUnavailableError, match="CPU tensors"),
    ):
        backend.resolve(torch.device("cuda"), torch.float32)


def test_triton_backend_on_cpu_tensors_is_a_clear_error():
    with (
        fastrnn.use_backend("triton"),
        pytest.raises(fastrnn.BackendUnavailableError, match="runs on CUDA tensors"),
    ):
        fastrnn.RNN(3, 4)(torch.randn(2, 1, 3))


@pytest.mark.parametrize("version", ["3.2.0", "3.4.1"])
def test_triton_backend_with_a_too_old_triton_says_which_it_needs(monkeypatch, version):
    """Below the oldest Triton tested (3.5; 3.2 lacks triton.knobs, which the launch
    functions use) the triton backend says what it needs before any kernel, where an
    import would fail deep in a forward."""
    monkeypatch.setattr(backend, "_TRITON_MISSING", backend.triton_missing(version))
    with (
        fastrnn.use_backend("triton"),
        pytest.raises(fastrnn.BackendUnavailableError, match=f"triton >= 3.5, found {version}"),
    ):
        backend.resolve(torch.device("cuda"), torch.float32)


def test_the_triton_check_reads_the_installed_version_without_importing_triton():
    """Without triton the backend says to install it; a version that does not parse, or
    none (a source tree), passes; the version read is the module's, and reading it
    imports neither triton nor torch._dynamo (each costs an `import fastrnn` time)."""
    assert "pip install triton" in backend.triton_missing(None)
    for version in ["3.5.0", "3.6.0+git1a2b3c", "4.0.0", "", "nightly"]:
        assert backend.triton_missing(version) is None, version
    code = (
        "import sys, fastrnn; from fastrnn import backend; "
        "print(backend.installed_triton_version(), 'triton' in sys.modules, "
        "'torch._dynamo' in sys.modules, sep='\\n')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    version, imported_triton, imported_dynamo = result.stdout.splitlines()
    assert (imported_triton, imported_dynamo) == ("False", "False")
    triton = pytest.importorskip("triton")
    assert version in (triton.__version__, "") and backend._TRITON_MISSING is None


def test_triton_backend_resolves_inside_a_fullgraph_compile():
    """The check that Triton can run (its version) is called, not traced, under
    torch.compile: torch 2.11's dynamo broke fullgraph on tracing it (found on a GPU)."""
    pytest.importorskip("triton")

    def add_one_on_triton(x):
        return x + (1 if backend.resolve(torch.device("cuda"), x.dtype) == "triton" else 0)

    with fastrnn.use_backend("triton"):
        out = torch.compile(add_one_on_triton, fullgraph=True, backend="eager")(torch.zeros(2))
    torch.testing.assert_close(out, torch.ones(2))


NATIVE_GEMMS = {
    torch.bfloat16: torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    torch.float16: torch.ops.mkldnn._is_mkldnn_fp16_supported(),
}


# (steps, batch, hidden, the input size at which a rule starts to hold): 16*128*(384+128)
# = 2^20 multiply-adds a step; 384*(128+384) = 3*2^16 weights, and 512*(256+512) twice that.
RULE_EDGES = {"step macs": (3, 16, 128, 384), "weights": (1, 1, 384, 128),
              "weights per step": (2, 1, 512, 256)}  # fmt: skip


@pytest.mark.parametrize("dtype", list(NATIVE_GEMMS), ids=str)
@pytest.mark.parametrize("kind", ["RNN", "RNNCell"])
@pytest.mark.parametrize("below", [True, False], ids=["below", "at"])
@pytest.mark.parametrize("edge", list(RULE_EDGES))
def test_reduced_precision_runs_natively_for_large_steps_or_weights(edge, below, kind, dtype):
    """bfloat16/float16 forwards on the C++ kernels run in their own dtype on ATen's
    GEMMs, where the CPU's GEMMs of the dtype are native, for steps of B*H*(I+H) >= 2^20
    and for calls whose weights H*(I+H) are 3*2^16 or more a step (a cell call is one
    step); elsewhere for one step of one batch row with such weights.  The rest run on
    float32 copies.  Told apart by their rounding."""
    steps, batch, hidden, edge_input_size = RULE_EDGES[edge]
    input_size = edge_input_size - below
    torch.manual_seed(0)
    module = getattr(fastrnn, kind)(input_size, hidden, dtype=dtype)
    x = torch.randn(steps, batch, input_size, dtype=dtype)
    x = x if kind == "RNN" else x[0]

    def run(mode):
        with reduced_precision(mode), torch.no_grad():
            out = module(x)
        return out[0] if kind == "RNN" else out

    native, in_float32, auto = run("native"), run("float32"), run("auto")
    assert not torch.equal(native, in_float32)  # else this test could not tell
    weights = hidden * (input_size + hidden)
    call_steps = steps if kind == "RNN" else 1
    large_weights = weights >= call_steps * 3 * 2**16
    if NATIVE_GEMMS[dtype]:
        runs_natively = batch * weights >= 2**20 or large_weights
    else:
        runs_natively = call_steps == 1 and batch == 1 and large_weights
    assert torch.equal(auto, native if runs_natively else in_float32)


@pytest.mark.parametrize("dtype", list(NATIVE_GEMMS), ids=str)
@pytest.mark.parametrize("below", [True, False], ids=["below", "at"])
def test_reduced_precision_backward_runs_natively_from_2_to_the_15_weights_a_step(below, dtype):
    """A backward converts the weights and their gradients back: for weights of 3*2^16
    or more it runs in its own dtype (where the GEMMs are native) from 2^15 weights a
    step, 448*(64+448) = 7*2^15 at 7 steps, while the forward of that call takes the
    float32 copies.  The op's gradients of the same saved tensors tell the two apart."""
    steps, batch, hidden, input_size = 7, 1, 448, 64 - below
    torch.manual_seed(0)
    w_ih = torch.randn(hidden, input_size, dtype=dtype) / 20
    w_hh = torch.randn(hidden, hidden, dtype=dtype) / 20
    weights = [w_ih, w_hh, torch.randn(hidden, dtype=dtype), torch.randn(hidden, dtype=dtype)]
    x = torch.randn(steps, batch, input_size, dtype=dtype)
    layer = (weights, None, 1, False, False)  # flat weights, batch sizes, layers, bidir, relu

    with reduced_precision("auto"):
        output, h_n, layer_outputs = torch.ops.fastrnn.rnn_forward(x, None, *layer)
    with reduced_precision("float32"):
        assert torch.equal(output, torch.ops.fastrnn.rnn_forward(x, None, *layer)[0])
    grad_output, grad_h_n = torch.randn_like(output), torch.randn_like(h_n)

    def weight_grads(mode):
        with reduced_precision(mode):
            return torch.ops.fastrnn.rnn_backward(
                grad_output, grad_h_n, x, None, weights, None, output, layer_outputs,
                *layer[2:], True
            )[2]  # fmt: skip

    native, in_float32, auto = weight_grads("native"), weight_grads("float32"), weight_grads("auto")
    assert not torch.equal(native[1], in_float32[1])  # else this test could not tell
    expected = in_float32 if below or not NATIVE_GEMMS[dtype] else native
    assert all(torch.equal(a, e) for a, e in zip(auto, expected, strict=True))


def test_reduced_precision_mode_names_are_validated():
    with pytest.raises(ValueError, match="must be 'auto', 'native' or 'float32', got 'fast'"):
        _C.set_cpu_reduced_precision("fast")
    assert _C.get_cpu_reduced_precision() == "auto"


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_backend_from_environment_variable():
    result = run_python("import fastrnn; print(fastrnn.get_backend())", FASTRNN_BACKEND="reference")
    assert result.stdout.strip() == "reference", result.stderr
    bad = run_python("import fastrnn", FASTRNN_BACKEND="gpu")
    assert "FASTRNN_BACKEND must be one of" in bad.stderr


def test_missing_extension_says_how_to_build_it():
    code = (
        "import sys; sys.modules['fastrnn._C'] = None\n"
        "import torch, fastrnn\n"
        "fastrnn.set_backend('reference')\n"
        "print(fastrnn.RNN(3, 4)(torch.randn(2, 1, 3))[0].shape)\n"
        "fastrnn.set_backend('auto')\n"
        "for make in (lambda: torch.jit.script(torch.nn.Sequential(fastrnn.RNNCell(3, 4))),\n"
        "             lambda: fastrnn.RNN(3, 4)(torch.randn(2, 1, 3))):\n"
        "    try:\n"
        "        make()\n"
        "    except ImportError as error:\n"
        "        print('ImportError:', error)\n"
    )
    result = run_python(code)
    assert "torch.Size([2, 1, 4])" in result.stdout, result.stderr
    messages = [line for line in result.stdout.splitlines() if line.startswith("ImportError")]
    assert len(messages) == 2, result.stdout + result.stderr  # scripting, then a call
    assert all("pip install --no-build-isolation -e ." in m for m in messages)


def test_autograd_nodes_print_clean_names():
    """grad_fn reads like torch's own nodes (not the C++ template type)."""
    out, h_n = fastrnn.RNN(3, 4)(torch.randn(2, 1, 3))
    assert repr(h_n).endswith("grad_fn=<RnnBackward>)")
    assert type(out.grad_fn).__name__ == "RnnBackward"
    h = fastrnn.RNNCell(3, 4)(torch.randn(2, 3))
    assert repr(h).endswith("grad_fn=<RnnCellBackward>)")


def test_saved_modules_load_with_weights_only_in_a_fresh_process(tmp_path):
    """torch.load(..., weights_only=True) of whole fastrnn modules after import fastrnn."""
    path = tmp_path / "model.pt"
    torch.manual_seed(0)
    model = fastrnn.RNN(3, 4, 2, bidirectional=True, batch_first=True)
    cell = fastrnn.RNNCell(3, 4, nonlinearity="relu")
    torch.save({"model": model, "cell": cell}, path)
    x = torch.randn(2, 5, 3)
    expected = model(x)[0].sum().item() + cell(x[:, 0]).sum().item()
    code = (
        "import torch, fastrnn\n"
        f"d = torch.load({str(path)!r}, weights_only=True)\n"
        "print(type(d['model']).__name__, type(d['cell']).__name__)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["RNN", "RNNCell"]
    loaded = torch.load(path, weights_only=True)
    got = loaded["model"](x)[0].sum().item() + loaded["cell"](x[:, 0]).sum().item()
    assert got == expected
