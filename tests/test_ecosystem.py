"""fastrnn inside the PyTorch ecosystem: torch.compile, torch.export, torch.func,
fastrnn.convert, DistributedDataParallel, and what users do with modules (copy, save,
hooks, modes, AMP)."""

from __future__ import annotations

import copy
import io
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch import nn
from torch.autograd import forward_ad
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

import fastrnn


class Tagger(nn.Module):
    """A small model of the kind users write: RNN then a linear head."""

    def __init__(self, rnn_cls=fastrnn.RNN):
        super().__init__()
        self.rnn = rnn_cls(4, 8, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        out, h_n = self.rnn(x)
        return self.head(out[:, -1]) + h_n.sum(0).mean()


def grads_of(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def cpp_runner(tmp_path_factory):
    """tests/cpp/run_model.cpp built against libtorch and fastrnn's op library alone (no
    Python in its process), as a C++ deployment links them: a function that runs it on
    a saved model and a list of input tensors and returns what it computed."""
    from torch.utils import cpp_extension

    folder = tmp_path_factory.mktemp("cpp")
    ops_folder = Path(fastrnn.__file__).parent  # libfastrnn_ops.so
    (torch_lib,) = cpp_extension.library_paths()
    command = [
        cpp_extension.get_cxx_compiler(), "-std=c++20", "-O1", "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *(f"-I{path}" for path in cpp_extension.include_paths()),
        str(Path(__file__).parent / "cpp" / "run_model.cpp"), "-o", str(folder / "run_model"),
        f"-L{torch_lib}", f"-L{ops_folder}", f"-Wl,-rpath,{torch_lib}", f"-Wl,-rpath,{ops_folder}",
        # Linked though no symbol of it is used: loading it registers the ops.
        "-Wl,--no-as-needed", "-lfastrnn_ops", "-Wl,--as-needed", "-ltorch", "-ltorch_cpu", "-lc10",
    ]  # fmt: skip
    build = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr

    def run(mode, model_path, inputs):
        torch.save(list(inputs), folder / "inputs.pt")
        command = [str(folder / "run_model"), mode, str(model_path), str(folder / "inputs.pt"),
                   str(folder / "outputs.pt")]  # fmt: skip
        ran = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        return torch.load(folder / "outputs.pt")

    return run


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compile_traces_the_fused_op():
    """The compiled graph calls the fused op, not the reference's per-step ops."""
    targets = []

    def backend(graph_module, example_inputs):
        targets.extend(node.target for node in graph_module.graph.nodes)
        return graph_module

    torch.compile(Tagger(), backend=backend, fullgraph=True)(torch.randn(3, 7, 4))
    assert torch.ops.fastrnn.rnn_forward.default in targets
    assert torch.tanh not in targets


def test_compile_fullgraph_matches_eager_forward_and_backward():
    torch.manual_seed(0)
    model = Tagger()
    x = torch.randn(3, 7, 4)
    compiled = torch.compile(model, fullgraph=True)
    y_compiled = compiled(x)
    y_compiled.sum().backward()
    compiled_grads = grads_of(model)
    model.zero_grad()
    y_eager = model(x)
    y_eager.sum().backward()
    torch.testing.assert_close(y_compiled, y_eager)
    for g_c, g_e in zip(compiled_grads, grads_of(model), strict=True):
        torch.testing.assert_close(g_c, g_e)


@pytest.mark.parametrize("reads", ["output", "h_n"])
def test_compile_a_model_reading_one_output(reads):
    """The output the loss does not read gets no gradient: the backward op takes None
    for it, traced and compiled as in eager."""
    torch.manual_seed(0)
    rnn, head = fastrnn.RNN(4, 8, num_layers=2), nn.Linear(8, 3)

    def model(x):
        out, h_n = rnn(x)
        return head(out[-1] if reads == "output" else h_n[-1])

    x = torch.randn(5, 3, 4)
    torch.compile(model, fullgraph=True)(x).sum().backward()
    compiled_grads = [p.grad.clone() for p in rnn.parameters()]
    rnn.zero_grad()
    model(x).sum().backward()
    for g_c, p in zip(compiled_grads, rnn.parameters(), strict=True):
        torch.testing.assert_close(g_c, p.grad)


def test_compile_dynamic_shapes_do_not_recompile():
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")  # fake kernels + autograd, traced
    model = Tagger()
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    compiled(torch.randn(2, 5, 4)).sum().backward()
    compiled_once = counter.frame_count
    # New sequence lengths and batch sizes reuse the graph.  (Size 1 is specialised by
    # torch.compile itself, for every model, so it is not in this list.)
    for steps, batch in [(9, 3), (13, 5), (2, 6), (30, 2)]:
        x = torch.randn(batch, steps, 4)
        compiled(x).sum().backward()
        torch.testing.assert_close(compiled(x), model(x))
    assert counter.frame_count == compiled_once


def test_nn_rnn_cannot_compile_fullgraph_but_fastrnn_can():
    with pytest.raises(torch._dynamo.exc.Unsupported):
        torch.compile(Tagger(nn.RNN), backend="eager", fullgraph=True)(torch.randn(2, 5, 4))
    torch.compile(Tagger(), backend="eager", fullgraph=True)(torch.randn(2, 5, 4))


def test_export_runs_and_matches_eager():
    torch.manual_seed(0)
    model = Tagger().eval()
    x = torch.randn(3, 7, 4)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


def test_aot_inductor_package_matches_eager_at_other_sizes(tmp_path, cpp_runner):
    """torch.export with dynamic batch and length, then AOTInductor
    (aoti_compile_and_package, torch.export's deployment path): the compiled package calls
    the fused op and gives eager's results at new sizes, loaded with aoti_load_package in
    Python and with torch::inductor::AOTIModelPackageLoader in a C++ program that links
    fastrnn's op library and no Python."""
    torch.manual_seed(0)
    model = Tagger().eval()
    dims = {"x": {0: torch.export.Dim("batch", min=2), 1: torch.export.Dim("steps", min=2)}}
    with torch.no_grad():
        exported = torch.export.export(model, (torch.randn(3, 7, 4),), dynamic_shapes=dims)
        assert any("fastrnn.rnn_forward" in str(node.target) for node in exported.graph.nodes)
        path = torch._inductor.aoti_compile_and_package(
            exported, package_path=str(tmp_path / "model.pt2")
        )
        x = torch.randn(5, 11, 4)
        eager = model(x)
        torch.testing.assert_close(torch._inductor.aoti_load_package(path)(x), eager)
        (cpp_result,) = cpp_runner("aoti", path, [x])
        torch.testing.assert_close(cpp_result, eager)


class TaggerWithCell(Tagger):
    """Tagger, then two cell steps over its last output, starting from zeros and from a
    state."""

    def __init__(self, module):
        super().__init__(module.RNN)
        self.cell = module.RNNCell(16, 5)

    def forward(self, x):
        out, _ = self.rnn(x)
        h = self.cell(out[:, -1])
        return self.cell(out[:, 0], h)


def test_fx_symbolic_trace_records_the_modules_as_nn_rnns_are():
    """torch.fx.symbolic_trace: one call_module node per module call, the graph nn.RNN and
    nn.RNNCell give (FX keeps them as leaves), and the traced model computes the same."""
    x = torch.randn(2, 6, 4)
    graphs = []
    for module in (nn, fastrnn):
        torch.manual_seed(0)
        model = TaggerWithCell(module)
        traced = torch.fx.symbolic_trace(model)
        graphs.append([(n.op, n.target, len(n.args)) for n in traced.graph.nodes])
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    assert graphs[1] == graphs[0]
    assert ("call_module", "rnn", 1) in graphs[1] and ("call_module", "cell", 2) in graphs[1]
    for module in (fastrnn.RNN(4, 8), fastrnn.RNNCell(4, 8)):  # as nn.RNN, not as a root
        with pytest.raises(torch.fx.proxy.TraceError, match="cannot be the root"):
            torch.fx.symbolic_trace(module)


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
        self.block = nn.ModuleDict({"rnn": nn.RNN(4, 5, 2, nonlinearity="relu")})
        self.cell = nn.RNNCell(5, 5)
        self.lstm = nn.LSTM(5, 5)  # not an RNN: untouched

    def forward(self, x):
        out, _ = self.block["rnn"](self.encoder(x))
        h = self.cell(out[-1])
        return self.lstm(out)[0].sum() + h.sum()


class CustomRNN(nn.RNN):
    def forward(self, x, hx=None):
        return super().forward(x * 2, hx)


def test_convert_swaps_rnn_and_cell_in_place_keeping_everything():
    torch.manual_seed(0)
    model = Nested().double()
    model.block["rnn"].eval()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    expected = model(x)
    expected.backward()
    expected_grads = grads_of(model)
    params_before = [id(p) for p in model.parameters()]
    model.zero_grad()
    rng_before = torch.get_rng_state()

    assert fastrnn.convert(model) is model
    assert torch.equal(torch.get_rng_state(), rng_before)  # converting draws nothing
    assert type(model.block["rnn"]) is fastrnn.RNN and type(model.cell) is fastrnn.RNNCell
    assert type(model.lstm) is nn.LSTM
    assert not model.block["rnn"].training and model.cell.training
    assert [id(p) for p in model.parameters()] == params_before  # optimisers keep working
    assert model.block["rnn"].weight_ih_l0.dtype == torch.float64
    got = model(x)
    got.backward()
    torch.testing.assert_close(got, expected)
    for g, e in zip(grads_of(model), expected_grads, strict=True):
        torch.testing.assert_close(g, e)


def test_convert_leaves_subclasses_with_a_warning_and_keeps_hooks():
    model = nn.Sequential(CustomRNN(3, 4), nn.RNN(3, 4))
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(type(m)))
    with pytest.warns(UserWarning, match="CustomRNN subclasses nn.RNN"):
        fastrnn.convert(model)
    assert type(model[0]) is CustomRNN and type(model[1]) is fastrnn.RNN
    model[1](torch.randn(2, 1, 3))
    assert seen == [fastrnn.RNN]
    assert type(fastrnn.convert(nn.RNN(3, 4))) is fastrnn.RNN


def test_deepcopy_pickle_and_torch_save():
    torch.manual_seed(0)
    rnn = fastrnn.RNN(3, 4, 2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    expected = rnn(x)[0]
    for clone in (copy.deepcopy(rnn), pickle.loads(pickle.dumps(rnn))):
        torch.testing.assert_close(clone(x)[0], expected)
    buffer = io.BytesIO()
    torch.save(rnn, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.load(buffer, weights_only=False)(x)[0], expected)
    buffer = io.BytesIO()
    torch.save(rnn.state_dict(), buffer)
    buffer.seek(0)
    fresh = fastrnn.RNN(3, 4, 2, bidirectional=True)
    fresh.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(fresh(x)[0], expected)


def test_dtype_moves_hooks_and_grad_modes():
    torch.manual_seed(0)
    reference = nn.RNN(3, 4)
    rnn = fastrnn.RNN(3, 4)
    rnn.load_state_dict(reference.state_dict())
    x = torch.randn(5, 2, 3)
    for convert_fn in (lambda m: m.double(), lambda m: m.to(torch.float64)):
        ref64, fast64 = convert_fn(copy.deepcopy(reference)), convert_fn(copy.deepcopy(rnn))
        torch.testing.assert_close(fast64(x.double())[0], ref64(x.double())[0])
    half_out = copy.deepcopy(rnn).half()(x.half())[0]
    assert half_out.dtype == torch.float16
    torch.testing.assert_close(half_out.float(), reference(x)[0], rtol=1e-2, atol=1e-2)
    calls = []
    handle = rnn.register_forward_hook(lambda m, i, o: calls.append(o[0].shape))
    rnn(x)
    handle.remove()
    assert calls == [torch.Size([5, 2, 4])]
    with torch.no_grad():
        assert not rnn(x)[0].requires_grad
    with torch.inference_mode():
        out = rnn(x)[0]
    assert out.is_inference()
    torch.testing.assert_close(out, reference(x)[0])


def test_cpu_autocast_bfloat16_matches_nn_rnn():
    torch.manual_seed(0)
    reference = nn.RNN(4, 8, 2)
    rnn = fastrnn.RNN(4, 8, 2)
    rnn.load_state_dict(reference.state_dict())
    cell_ref, cell = nn.RNNCell(4, 8), fastrnn.RNNCell(4, 8)
    cell.load_state_dict(cell_ref.state_dict())
    x = torch.randn(5, 2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (out, h_n), (out_ref, hn_ref) = rnn(x), reference(x)
        h, h_ref = cell(x[0]), cell_ref(x[0])
    for got, want in ((out, out_ref), (h_n, hn_ref), (h, h_ref)):
        assert got.dtype == want.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_autocast_matches_nn_rnn(dtype):
    torch.manual_seed(0)
    reference = nn.RNN(4, 32, 2).cuda()
    rnn = fastrnn.RNN(4, 32, 2).cuda()
    rnn.load_state_dict(reference.state_dict())
    x = torch.randn(5, 3, 4, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        (out, h_n), (out_ref, hn_ref) = rnn(x), reference(x)
    for got, want in ((out, out_ref), (h_n, hn_ref)):
        assert got.dtype == want.dtype == dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def squared_outputs(module, params, *args):
    """sum of squares of a module's outputs, called functionally with params."""
    out = torch.func.functional_call(module, params, args)
    return sum(o.pow(2).sum() for o in (out if isinstance(out, tuple) else (out,)))


def paired_modules_and_inputs(kind: str):
    """nn.<kind> and fastrnn.<kind> in fp64 with the same weights (RNN: 2 layers,
    bidirectional), an input and a state: [5, 2, 3] and [4, 2, 4], or one step of them."""
    torch.manual_seed(0)
    options = dict(num_layers=2, bidirectional=True) if kind == "RNN" else {}
    reference = getattr(nn, kind)(3, 4, dtype=torch.float64, **options)
    fast = getattr(fastrnn, kind)(3, 4, dtype=torch.float64, **options)
    fast.load_state_dict(reference.state_dict())
    x, h0 = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(4, 2, 4, dtype=torch.float64)
    return (reference, fast, x, h0) if kind == "RNN" else (reference, fast, x[0], h0[0])


@pytest.mark.parametrize("kind", ["RNN", "RNNCell"])
def test_torch_func_grad_and_jacrev_match_nn_rnn(kind):
    """torch.func transforms (MAML-style functional_call + grad, Jacobians) run, as they
    do on nn.RNN, and give its numbers."""
    reference, fast, x, h0 = paired_modules_and_inputs(kind)
    params = {k: v.detach() for k, v in fast.named_parameters()}
    results = []
    for module in (fast, reference):
        grads = torch.func.grad(squared_outputs, argnums=1)(module, params, x, h0)
        jacobian = torch.func.jacrev(squared_outputs, argnums=2)(module, params, x, h0)
        results.append((grads, jacobian))
    (grads, jacobian), (grads_ref, jacobian_ref) = results
    for name in params:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(jacobian, jacobian_ref, rtol=1e-10, atol=1e-12)


def test_torch_func_grad_compiles_fullgraph():
    """torch.compile over torch.func.grad: dynamo traces the transform, and the reference
    inside it, in one graph."""
    torch.manual_seed(0)
    reference, fast = nn.RNN(3, 4), fastrnn.RNN(3, 4)
    fast.load_state_dict(reference.state_dict())
    x, h0 = torch.randn(5, 2, 3), torch.randn(1, 2, 4)
    params = {k: v.detach() for k, v in fast.named_parameters()}
    grad = torch.func.grad(squared_outputs, argnums=1)
    got = torch.compile(grad, fullgraph=True)(fast, params, x, h0)
    want = grad(reference, params, x, h0)
    for name in params:
        torch.testing.assert_close(got[name], want[name])


def test_torch_func_per_sample_gradients_with_vmap():
    """vmap(grad(...)): per-sample gradients (as for differential privacy), which
    nn.RNN cannot give (ATen's RNN has no batching rule); against nn.RNN one sample at
    a time."""
    torch.manual_seed(0)
    reference = nn.RNN(3, 4, dtype=torch.float64)
    rnn = fastrnn.RNN(3, 4, dtype=torch.float64)
    rnn.load_state_dict(reference.state_dict())
    x = torch.randn(5, 3, 3, dtype=torch.float64)  # [T, B, I]
    params = {k: v.detach() for k, v in rnn.named_parameters()}

    def loss(params, sample):  # sample [T, I]: a batch of one inside
        out, h_n = torch.func.functional_call(rnn, params, (sample.unsqueeze(1),))
        return out.pow(2).sum() + h_n.sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 1))(params, x)
    for b in range(x.shape[1]):
        reference.zero_grad()
        out, h_n = reference(x[:, b : b + 1])
        (out.pow(2).sum() + h_n.sum()).backward()
        for name, p in reference.named_parameters():
            torch.testing.assert_close(per_sample[name][b], p.grad, rtol=1e-10, atol=1e-12)


def test_an_explicit_fused_backend_inside_torch_func_says_why_it_cannot():
    rnn = fastrnn.RNN(3, 4)
    params = {k: v.detach() for k, v in rnn.named_parameters()}

    def loss(params):
        return torch.func.functional_call(rnn, params, (torch.randn(5, 2, 3),))[0].sum()

    with (
        fastrnn.use_backend("cpp"),
        pytest.raises(fastrnn.BackendUnavailableError, match="torch.func"),
    ):
        torch.func.grad(loss)(params)


@pytest.mark.parametrize("kind", ["RNN", "RNNCell"])
def test_forward_mode_ad_matches_nn_rnn(kind):
    """Forward-mode AD (torch.autograd.forward_ad dual tensors, and the forward-mode
    Jacobian built on them) runs through the reference, as in torch.func transforms, and
    gives nn.RNN's tangents: for the input, the state and a weight at once."""
    reference, fast, x, h0 = paired_modules_and_inputs(kind)
    weight = reference.weight_hh_l0 if kind == "RNN" else reference.weight_hh
    name = "weight_hh_l0" if kind == "RNN" else "weight_hh"
    tangents = [torch.randn_like(t) for t in (x, h0, weight)]
    results = []
    for module in (reference, fast):
        with forward_ad.dual_level():
            dual_x, dual_h0, dual_weight = (
                forward_ad.make_dual(t.detach(), tangent)
                for t, tangent in zip((x, h0, weight), tangents, strict=True)
            )
            out = torch.func.functional_call(module, {name: dual_weight}, (dual_x, dual_h0))
            outputs = out if isinstance(out, tuple) else (out,)
            results.append([forward_ad.unpack_dual(o).tangent for o in outputs])
        jacobian = torch.autograd.functional.jacobian(
            lambda x, module=module: squared_outputs(module, {}, x, h0), x, vectorize=True,
            strategy="forward-mode",
        )  # fmt: skip
        results[-1].append(jacobian)
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_an_explicit_fused_backend_under_forward_mode_ad_says_why_it_cannot():
    rnn = fastrnn.RNN(3, 4)
    x = torch.randn(5, 2, 3)
    with (
        fastrnn.use_backend("cpp"),
        forward_ad.dual_level(),
        pytest.raises(fastrnn.BackendUnavailableError, match="forward-mode AD"),
    ):
        rnn(forward_ad.make_dual(x, torch.ones_like(x)))


def weight_norm(module, name):
    return nn.utils.parametrizations.weight_norm(module, name)


def spectral_norm(module, name):
    return nn.utils.parametrizations.spectral_norm(module, name)


def l1_pruned(module, name):
    import torch.nn.utils.prune as prune

    return prune.l1_unstructured(module, name, amount=0.5)


@pytest.mark.parametrize("kind", ["RNN", "RNNCell"])
@pytest.mark.parametrize("reparametrize", [weight_norm, spectral_norm, l1_pruned])
def test_parametrized_and_pruned_weights_match_nn_rnn(kind, reparametrize):
    """A weight computed under its name (torch.nn.utils.parametrizations, prune) is the
    weight the kernels get, forward and backward, as for nn.RNN."""
    torch.manual_seed(0)
    reference = getattr(nn, kind)(3, 4, dtype=torch.float64)
    fast = getattr(fastrnn, kind)(3, 4, dtype=torch.float64)
    fast.load_state_dict(reference.state_dict())
    suffix = "_l0" if kind == "RNN" else ""
    results = []
    for module in (reference, fast):
        torch.manual_seed(1)  # spectral_norm starts from a random vector
        for name in ("weight_hh", "weight_ih"):
            reparametrize(module, name + suffix)
        # Eval: spectral_norm's power iteration runs on every read in training mode, and
        # nn.RNN reads a weight several times a forward (README, differences).
        module.eval()
        x = torch.randn(5, 2, 3, dtype=torch.float64)
        out = module(x if kind == "RNN" else x[0])
        out = out[0] if kind == "RNN" else out
        module.zero_grad()
        out.pow(2).sum().backward()
        results.append([out] + [p.grad for p in module.parameters()])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_meta_device_forward_gives_nn_rnns_shapes():
    """Shapes without data (the meta device), as model tools use to size a model."""
    x = torch.randn(5, 2, 3, device="meta")
    for options in (dict(num_layers=2, bidirectional=True), dict(batch_first=True)):
        got = fastrnn.RNN(3, 4, device="meta", **options)(x)
        want = nn.RNN(3, 4, device="meta", **options)(x)
        assert [t.shape for t in got] == [t.shape for t in want]
        assert all(t.device.type == "meta" for t in got)
    assert fastrnn.RNNCell(3, 4, device="meta")(x[0]).shape == (2, 4)


def test_same_seed_same_weights_as_nn_rnn():
    torch.manual_seed(42)
    reference = nn.RNN(3, 5, 2, bidirectional=True)
    torch.manual_seed(42)
    rnn = fastrnn.RNN(3, 5, 2, bidirectional=True)
    for a, b in zip(reference.parameters(), rnn.parameters(), strict=True):
        assert torch.equal(a, b)


def run_process_group(command: list[str], env: dict, timeout: float):
    """subprocess.run of command in a session of its own, all of whose processes are
    killed when it runs past timeout (then a failed run): killing torchrun alone leaves
    its ranks running."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += f"\n(killed with its process group after {timeout} s)"
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_process_group_killed_whole_past_its_timeout():
    """run_process_group leaves no process of a command that ran past its timeout."""
    parent = (  # its child holds none of its pipes, as a rank need not
        "import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    run = run_process_group([sys.executable, "-c", parent], dict(os.environ), timeout=3)
    assert run.returncode == -signal.SIGKILL and "killed" in run.stderr, run
    child = Path(f"/proc/{run.stdout.split()[0]}/stat")
    for _ in range(100):  # gone, or a zombie whose reaper has not come yet
        if not child.exists() or child.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"{child}: still running")


def test_ddp_two_processes_train_like_one(tmp_path):
    """torchrun with 2 CPU processes (gloo, loopback) trains as one process on the same
    global batches does (DDP averages the shards' gradients)."""
    from ddp_train import Tagger as DdpTagger
    from ddp_train import data, train

    result = tmp_path / "ddp.pt"
    script = Path(__file__).with_name("ddp_train.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONFAULTHANDLER"] = "1"  # a rank that aborts prints where
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=2", str(script), str(result)]  # fmt: skip
    run = run_process_group(command, env, timeout=180)
    if run.returncode != 0 and "terminate called without an active exception" in run.stderr:
        # A rank of this gloo/torchrun pair aborts now and then (2 of 6 full-suite runs
        # here, none of 37 runs of it alone), before fastrnn's results are compared: one
        # more go.
        run = run_process_group(command, env, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    torch.manual_seed(0)
    model = DdpTagger()
    train(model, data(), lambda m, batch: sum(m(s).pow(2).mean() for s in batch.chunk(2)) / 2)
    ddp_state = torch.load(result)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-5, atol=1e-6)


def total_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def leaf(tensor):
    return tensor.detach().requires_grad_()


def padded_and_packed_steps(x, hx, lengths):
    """Named forward / training steps, each taking a module, over the same data."""
    x, hx = x.detach(), hx.detach()

    def train(out_h_n):
        out, h_n = out_h_n
        (out.data if isinstance(out, PackedSequence) else out).sum().add(h_n.sum()).backward()

    return {
        "inference": lambda m: m(x, hx),
        "inference without hx": lambda m: m(x),
        "training": lambda m: train(m(leaf(x), leaf(hx))),
        "training without hx": lambda m: train(m(leaf(x))),
        "training, input without grad": lambda m: train(m(x, leaf(hx))),
        "training, hx without grad": lambda m: train(m(leaf(x), hx)),
        "packed training": lambda m: train(m(pack_padded_sequence(leaf(x), lengths), leaf(hx))),
        "packed inference without hx": lambda m: m(pack_padded_sequence(x, lengths)),
    }


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True), (3, False)])
def test_flop_counter_counts_the_fused_ops_as_nn_rnns_products(layers, bidirectional):
    """FlopCounterMode (FLOP counts, MFU) counts the fused ops' matrix products as it
    counts nn.RNN's on the CPU, forward and backward."""
    options = dict(num_layers=layers, bidirectional=bidirectional)
    reference, rnn = nn.RNN(4, 6, **options), fastrnn.RNN(4, 6, **options)
    directions = 2 if bidirectional else 1
    x, hx = torch.randn(5, 3, 4), torch.randn(layers * directions, 3, 6)
    for name, step in padded_and_packed_steps(x, hx, torch.tensor([5, 3, 2])).items():
        want = total_flops(lambda: step(reference))  # noqa: B023
        assert want > 0
        assert total_flops(lambda: step(rnn)) == want, name  # noqa: B023

    # Packed input without hx: the op is given zeros that need no gradient, and skips the
    # h_0 W_hh product of each direction's first step as nn.RNN does; the formula cannot
    # see the reverse direction's rows (batch_sizes[-1] = 1) and counts 2*1*H*H per layer.
    def packed_training_without_hx(module):
        out, _ = module(pack_padded_sequence(leaf(x), torch.tensor([5, 3, 2])))
        out.data.sum().backward()

    counts = [total_flops(lambda: packed_training_without_hx(m)) for m in (reference, rnn)]  # noqa: B023
    assert counts[1] - counts[0] == 2 * (1 if bidirectional else 0) * 6 * 6 * layers


def test_flop_counter_counts_the_cell_as_nn_rnn_cells_products():
    reference, cell = nn.RNNCell(4, 6), fastrnn.RNNCell(4, 6)
    x, hx = torch.randn(3, 4), torch.randn(3, 6)
    steps = {
        "inference": lambda m: m(x, hx),
        "training": lambda m: m(leaf(x), leaf(hx)).sum().backward(),
        "training without hx": lambda m: m(leaf(x)).sum().backward(),
        "weights only": lambda m: m(x, hx).sum().backward(),
    }
    for name, step in steps.items():
        assert total_flops(lambda: step(cell)) == total_flops(lambda: step(reference)), name  # noqa: B023


@pytest.mark.parametrize("flop_counter_first", [True, False])
def test_flop_formulas_register_in_either_import_order(flop_counter_first):
    """import fastrnn does not import torch.utils.flop_counter (it imports triton, ~170
    ms); the formulas are there whichever of the two is imported first."""
    script = f"""
import sys, torch
if {flop_counter_first}:
    import torch.utils.flop_counter
import fastrnn
assert ("torch.utils.flop_counter" in sys.modules) == {flop_counter_first}
from torch.utils.flop_counter import FlopCounterMode
with FlopCounterMode(display=False) as counter:
    fastrnn.RNN(4, 6)(torch.randn(5, 3, 4))
assert counter.get_total_flops() == 2 * 15 * 6 * (4 + 6), counter.get_flop_counts()
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env=env)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_module_is_usable_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastrnn.RNN(3, 4)(torch.randn(2, 1, 3))
        fastrnn.RNNCell(3, 4)(torch.randn(2, 3))


# TorchScript (deprecated in this torch, still used by older deployment code): a model
# holding fastrnn's modules scripts as one holding nn.RNN's does, and runs the fused ops.
# Annotations below are real types: TorchScript does not read them as strings.
class ScriptedUser(nn.Module):
    """What a TorchScript user writes: the RNN on padded, unbatched and packed input, with
    and without hx, then the cell from zeros and from a state."""

    def __init__(self, module, batch_first=False, **options):
        super().__init__()
        self.batch_first = batch_first
        self.rnn = module.RNN(4, 6, batch_first=batch_first, **options)
        width = 12 if options.get("bidirectional") else 6
        self.cell = module.RNNCell(width, 5, nonlinearity=options.get("nonlinearity", "tanh"))

    def forward(self, x, lengths, h0):
        out, h_n = self.rnn(x, h0)
        out_no_hx, h_n_no_hx = self.rnn(x)
        unbatched, h_unbatched = self.rnn(x[0] if self.batch_first else x[:, 0])
        packed = pack_padded_sequence(
            x, lengths, batch_first=self.batch_first, enforce_sorted=False
        )
        packed_out, packed_h_n = self.rnn(packed, h0)
        packed_out_no_hx, packed_h_n_no_hx = self.rnn(packed)
        h = self.cell(out_no_hx[-1] if not self.batch_first else out_no_hx[:, -1])
        h = self.cell(unbatched[:2], h[:2])
        outputs = [out, h_n, out_no_hx, h_n_no_hx, unbatched, h_unbatched]
        return outputs + [packed_out.data, packed_h_n, packed_out_no_hx.data, packed_h_n_no_hx, h]


SCRIPT_OPTIONS = {
    "2 layers bidirectional batch_first": dict(num_layers=2, bidirectional=True, batch_first=True),
    "relu no bias": dict(nonlinearity="relu", bias=False),
    "3 layers dropout, eval": dict(num_layers=3, dropout=0.5),
}


def scripted_pair(options, dtype=torch.float64):
    """nn.RNN's and fastrnn's ScriptedUser with the same weights, each scripted."""
    torch.manual_seed(0)
    reference = ScriptedUser(nn, **options).to(dtype)
    model = ScriptedUser(fastrnn, **options).to(dtype)
    model.load_state_dict(reference.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script's own
        return torch.jit.script(reference.eval()), torch.jit.script(model.eval())


def scripted_inputs(dtype=torch.float64):
    x = torch.randn(3, 5, 4, dtype=dtype)  # [B, T, I] or [T, B, I]: both 3 and 5 fit
    h0_layers = torch.randn(6, 5, 6, dtype=dtype)  # sliced per model below
    return x, torch.tensor([3, 1, 2]), h0_layers


@pytest.mark.parametrize("options", SCRIPT_OPTIONS.values(), ids=SCRIPT_OPTIONS.keys())
def test_torchscript_scripts_a_model_and_matches_nn_rnn(options):
    """Forward outputs and every gradient equal nn.RNN's under torch.jit.script, and the
    scripted graph calls the fused ops (not a fallback)."""
    reference, model = scripted_pair(options)
    assert "fastrnn::rnn_forward" in str(model.inlined_graph)
    assert "fastrnn::rnn_cell_forward" in str(model.inlined_graph)
    x, lengths, h0_layers = scripted_inputs()
    batch = 3 if options.get("batch_first") else 5
    layers = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    results = []
    for scripted in (reference, model):
        x_leaf, h0 = leaf(x), leaf(h0_layers[:layers, :batch])
        outputs = scripted(x_leaf, lengths, h0)
        sum(o.square().sum() for o in outputs).backward()
        grads = [x_leaf.grad, h0.grad] + [p.grad for p in scripted.parameters()]
        results.append(outputs + grads)
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want)


def test_torchscript_dropout_in_training_draws_as_eager_does():
    """A scripted 3-layer RNN with dropout in training mode gives the eager module's
    result under the same seed (F.dropout between layers, the same generator)."""
    torch.manual_seed(0)
    rnn = fastrnn.RNN(4, 6, num_layers=3, dropout=0.5).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(nn.Sequential(rnn))
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    torch.manual_seed(1)
    want = rnn(x)
    torch.manual_seed(1)
    got = scripted(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.manual_seed(2)
    assert not torch.equal(scripted(x)[0], want[0])  # dropout does act


def test_scripted_and_traced_models_load_and_run_in_a_fresh_process(tmp_path):
    """torch.jit.save of a scripted and of a traced (torch.jit.trace) model, then
    torch.jit.load after `import fastrnn` (which registers the ops) in another process:
    the same outputs.  The traced graph calls the fused op too, at any batch and length."""
    _, model = scripted_pair(SCRIPT_OPTIONS["2 layers bidirectional batch_first"])
    x, lengths, h0_layers = scripted_inputs()
    inputs = (x, lengths, h0_layers[:4, :3])
    model.save(str(tmp_path / "scripted.pt"))
    torch.manual_seed(0)
    tagger = Tagger().eval()
    traced = torch.jit.trace(tagger, (torch.randn(3, 7, 4),))
    assert "fastrnn::rnn_forward" in str(traced.inlined_graph)
    traced.save(str(tmp_path / "traced.pt"))
    traced_input = torch.randn(5, 9, 4)  # another batch and length than traced with
    torch.save((inputs, traced_input), tmp_path / "inputs.pt")
    code = (
        "import sys, torch, fastrnn\n"
        "folder = sys.argv[1]\n"
        "inputs, traced_input = torch.load(folder + '/inputs.pt')\n"
        "outputs = torch.jit.load(folder + '/scripted.pt')(*inputs)\n"
        "outputs.append(torch.jit.load(folder + '/traced.pt')(traced_input))\n"
        "torch.save(outputs, folder + '/out.pt')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, env=env)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    expected = model(*inputs) + [tagger(traced_input)]
    for got, want in zip(torch.load(tmp_path / "out.pt"), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_cpp_program_runs_a_scripted_model_forward_and_backward(tmp_path, cpp_runner):
    """A scripted model (padded, unbatched and packed input, the cell) saved, then loaded
    with torch::jit::load in a C++ program that links fastrnn's op library and no
    Python: its outputs and, through the ops' C++ autograd, every parameter's gradient
    equal scripted nn.RNN's in Python."""
    reference, model = scripted_pair(SCRIPT_OPTIONS["2 layers bidirectional batch_first"])
    model.save(str(tmp_path / "scripted.pt"))
    x, lengths, h0_layers = scripted_inputs()
    inputs = (x, lengths, h0_layers[:4, :3])
    got = cpp_runner("script", tmp_path / "scripted.pt", inputs)
    outputs = reference(*inputs)
    sum(o.square().sum() for o in outputs).backward()
    expected = outputs + [p.grad for p in reference.parameters()]
    assert len(got) == len(expected)
    for got_tensor, want in zip(got, expected, strict=True):
        torch.testing.assert_close(got_tensor, want)


class RNNWithState(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, hx):
        return self.rnn(x, hx)


def script_error(module, *args) -> str:
    """The message a scripted module raises (TorchScript's last line: type and text)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(RNNWithState(module))
    with pytest.raises((torch.jit.Error, RuntimeError)) as error:  # a raise, or the op's
        scripted(*args)
    return str(error.value).strip().splitlines()[-1]


@pytest.mark.parametrize(
    "make_input",
    [
        lambda: (torch.randn(5, 2, 3), torch.randn(2, 2, 6)),  # wrong input size
        lambda: (torch.randn(5, 2, 4), torch.randn(2, 3, 6)),  # wrong hx batch
        lambda: (torch.randn(5, 2, 4), torch.randn(2, 6)),  # 2-D hx for 3-D input
        lambda: (torch.randn(2, 5, 2, 4), torch.randn(2, 2, 6)),  # 4-D input
        lambda: (torch.randn(5, 2, 4), torch.randn(2, 2, 6, dtype=torch.float64)),
    ],
    ids=["input size", "hx batch", "hx dims", "input dims", "hx dtype"],
)
def test_torchscript_errors_are_nn_rnns(make_input):
    args = make_input()
    got = script_error(fastrnn.RNN(4, 6, num_layers=2), *args)
    if args[-1].dtype == torch.float64:  # nn.RNN's: "mat1 and mat2 must have the same dtype"
        assert got.endswith("fastrnn: hx dtype (Double) must match input dtype (Float)")
    else:
        assert got == script_error(nn.RNN(4, 6, num_layers=2), *args)


@pytest.mark.parametrize(
    "args",
    [
        (torch.randn(2, 4), torch.randn(2, 6)),
        (torch.randn(4),),
        (torch.randn(2, 5), torch.randn(2, 6)),  # wrong input size
        (torch.randn(2, 4), torch.randn(3, 6)),  # wrong hx batch
        (torch.randn(2, 2, 4),),  # 3-D input
    ],
    ids=["batched", "unbatched", "input size", "hx batch", "input dims"],
)
def test_torchscript_scripts_the_cell_alone_as_nn_rnn_cell(args):
    """nn.RNNCell scripts by itself (nn.RNN does not: its forward is overloaded); so does
    fastrnn.RNNCell, with nn.RNNCell's results and messages."""
    results = []
    for module in (nn, fastrnn):
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cell = torch.jit.script(module.RNNCell(4, 6))
        try:
            results.append(cell(*args))
        except (torch.jit.Error, RuntimeError) as error:  # from a raise, or from an op
            results.append(str(error).strip().splitlines()[-1].removeprefix("builtins."))
    if isinstance(results[0], str):
        assert results[1] == results[0]
    else:
        torch.testing.assert_close(results[1], results[0])
