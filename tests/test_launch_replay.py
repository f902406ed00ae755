"""Replayed launches (launch.REPLAY_LAUNCHES, csrc/python/launch_replay.cpp): a padded
forward's kernel launches recorded once per call signature, then issued from C++.

On CPU no kernel runs: launch_kernel keeps a stand-in for each compiled kernel, with the
signature Triton's JIT gives its arguments, the Python path's launches are recorded, and
the replayed ones go to a list; a replayed call's launches must be the Python path's on
the same tensors, parameter for parameter.  With a GPU the replayed forward must equal
the Python path's bit for bit, eagerly, in training and in a CUDA graph.
"""

from __future__ import annotations

import functools
import types

import pytest
import torch

import fastrnn
from fastrnn import _C

triton = pytest.importorskip("triton")
from triton._C.libtriton import native_specialize_impl  # noqa: E402
from triton.backends.compiler import BaseBackend  # noqa: E402

from fastrnn.triton import kernels, launch  # noqa: E402

ON_GPU = torch.cuda.is_available()


@pytest.fixture
def replaying(monkeypatch):
    """REPLAY_LAUNCHES on, with no plan kept before or after."""
    monkeypatch.setattr(launch, "REPLAY_LAUNCHES", True)
    _C.clear_launch_plans()
    yield
    _C.clear_launch_plans()


def stand_in_compile(kernel, *arguments, grid, warmup, **meta):
    """kernel[grid](...), compiling nothing and launching nothing: what keep_compiled reads
    of a compiled kernel, with the signature Triton's JIT specialises these arguments to
    (an integer 1 a constexpr)."""
    signature = {
        name: native_specialize_impl(BaseBackend, arguments[i], False, True, True)[0]
        if i < len(arguments) else "constexpr"
        for i, name in enumerate(kernel.arg_names)
    }  # fmt: skip
    metadata = types.SimpleNamespace(
        num_warps=meta.get("num_warps", 4), shared=12288, num_ctas=1,
        launch_cooperative_grid=False, launch_pdl=False, global_scratch_size=0,
        profile_scratch_size=0,
    )  # fmt: skip
    function = hash((id(kernel), *signature.values())) % 2**48  # one per specialisation
    return types.SimpleNamespace(metadata=metadata, src=types.SimpleNamespace(signature=signature),
                                 run=None, function=function, packed_metadata=None)  # fmt: skip


@pytest.fixture
def stand_in_kernels(monkeypatch, replaying):
    """Launches on CPU tensors as on a GPU's device 0, with stand-ins for the compiled
    kernels (stand_in_compile), launched by nothing: (the launches of kept kernels on the
    Python path, the replayed launches)."""
    if ON_GPU:
        pytest.skip("stand-in kernels would be kept for the GPU's")
    python_launches, replayed = [], []
    monkeypatch.setattr(launch, "_launches_directly", lambda kernel, tensor: True)
    monkeypatch.setattr(launch, "_COMPILED", {})
    for kernel_type in {triton.runtime.JITFunction, type(kernels.rnn_forward_persistent_kernel)}:
        # kernel[grid](...): the interpreter's kernels under TRITON_INTERPRET=1
        monkeypatch.setattr(kernel_type, "__getitem__", lambda kernel, grid: functools.partial(
            stand_in_compile, kernel, grid=grid, warmup=False))  # fmt: skip
    monkeypatch.setattr(launch, "_launch_kept", lambda *kept_launch: python_launches.append(
        kept_launch))  # fmt: skip
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    launch.forward_launch.cache_clear()  # their KernelLaunch objects keep stand-ins
    _C.replay_launches_to(replayed)
    yield python_launches, replayed
    _C.replay_launches_to(None)
    launch.forward_launch.cache_clear()


# (steps, batch, input size, hidden, layers, bidirectional, relu, bias, hx, batch_first)
CASES = [
    (5, 1, 4, 8, 1, False, False, True, False, False),  # the hello tutorial's
    (3, 5, 4, 2, 2, True, True, False, True, False),
    (7, 3, 5, 21, 2, False, False, True, True, True),
    (1, 3, 6, 16, 3, True, False, True, False, True),
]


def make_call(case, dtype=torch.float32, device="cpu"):
    """(input, hx, weights, num_layers, bidirectional, relu) of a padded forward."""
    steps, batch, inputs, hidden, layers, bidirectional, relu, bias, with_hx, batch_first = case
    torch.manual_seed(0)
    options = dict(nonlinearity="relu" if relu else "tanh", bias=bias,
                   bidirectional=bidirectional, dtype=dtype, device=device)  # fmt: skip
    rnn = fastrnn.RNN(inputs, hidden, layers, **options)
    x = torch.randn(batch, steps, inputs, dtype=dtype, device=device)
    x = x.transpose(0, 1) if batch_first else x.transpose(0, 1).contiguous()
    cells = layers * (2 if bidirectional else 1)
    hx = torch.randn(cells, batch, hidden, dtype=dtype, device=device) if with_hx else None
    return x, hx, list(rnn._flat_weights), layers, bidirectional, relu


def forward(call):
    input, hx, weights, layers, bidirectional, relu = call
    return launch.rnn_forward_triton(input, hx, weights, None, layers, bidirectional, relu)


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(map(str, case)))
def test_replayed_launches_are_the_python_paths_on_the_same_tensors(case, stand_in_kernels,
                                                                    monkeypatch):  # fmt: skip
    python_launches, replayed = stand_in_kernels
    call = make_call(case)
    forward(call)  # compiles (stand-ins): not recorded
    forward(call)  # recorded: the plan kept
    assert replayed == []
    python_launches.clear()
    call = (call[0].clone(), *call[1:])  # other tensors than the recorded call's
    output, h_n, layer_outputs = forward(call)
    layers = call[3]
    assert python_launches == [] and len(replayed) == layers
    # The Python path on the replay's tensors: its launches must be the replayed ones.
    monkeypatch.setattr(launch._C, "rnn_forward_outputs",
                        lambda *args: (output, layer_outputs, h_n, None))  # fmt: skip
    launch.REPLAY_LAUNCHES = False
    python = forward(call)
    assert [r.shape for r in python] == [output.shape, h_n.shape, layer_outputs.shape]
    expected = []
    for kept_launch in python_launches:
        function, grid_x, grid_y, threads, shared, params = launch.replay_launch(*kept_launch)
        expected.append((function, grid_x, grid_y, threads, shared,
                         tuple(value for _, value in params)))  # fmt: skip
    assert replayed == expected
    assert all(params[-2:] == (0, 0) for *_, params in replayed)  # the scratch pointers


def test_calls_that_do_more_than_launch_kept_kernels_are_never_replayed(stand_in_kernels,
                                                                        monkeypatch):  # fmt: skip
    """A GEMM (more steps than the kernels project the input for), a copy (hx not
    contiguous), ATen work on the results alone (no pointer outside the call's tensors):
    the Python path, every call."""
    python_launches, replayed = stand_in_kernels
    long_call = make_call((launch.PROJECT_INPUT_MAX_STEPS + 1, 2, 4, 8, 1, False, False, True,
                           False, False))  # fmt: skip
    input, hx, weights, layers, bidirectional, relu = make_call(CASES[1])
    strided_hx = hx.transpose(0, 1).contiguous().transpose(0, 1)
    for call in [long_call, (input, strided_hx, weights, layers, bidirectional, relu)]:
        for _ in range(3):
            forward(call)
        assert _C.replay_forward(*call, launch.tf32_allowed()) is None
    run_layer = launch.recurrence_forward
    monkeypatch.setattr(
        launch,
        "recurrence_forward",
        lambda layer_launch, *args: (run_layer(layer_launch, *args), args[5].zero_()),
    )  # args[5]: h_n
    call = make_call(CASES[0])
    for _ in range(3):
        forward(call)
    assert _C.replay_forward(*call, launch.tf32_allowed()) is None
    assert replayed == [] and python_launches


def test_a_replayed_call_checks_its_arguments_as_the_python_path(stand_in_kernels):
    """The plan's key holds the input's dtype, not the weights': weights of another
    dtype reach the replay, whose checks give the Python path's error."""
    input, hx, weights, layers, bidirectional, relu = call = make_call(CASES[1])
    for _ in range(2):
        forward(call)
    wrong = (input, hx, [w.double() for w in weights], layers, bidirectional, relu)
    assert _C.clear_launch_plans() == 1
    with pytest.raises(RuntimeError) as python_error:
        forward(wrong)
    for _ in range(2):
        forward(call)
    with pytest.raises(RuntimeError) as replay_error:
        _C.replay_forward(*wrong, launch.tf32_allowed())
    assert str(replay_error.value) == str(python_error.value)


def test_changed_settings_drop_the_plans(stand_in_kernels):
    call = make_call(CASES[0])
    for _ in range(2):
        forward(call)
    settings = launch.variant_settings("fastrnn-replay")
    launch.apply_settings(settings)  # no change
    assert _C.clear_launch_plans() == 1
    for _ in range(2):
        forward(call)
    try:
        launch.apply_settings({**settings, "ONE_ROW_MAX_H": 0})
        assert _C.clear_launch_plans() == 0
    finally:
        launch.apply_settings(settings)


def test_replay_layout_reads_the_launchers_signature():
    """Pointers, 4- and 8-byte integers, constexprs left out, Triton's scratch pointers
    after them; none where the launcher does more than cuLaunchKernel."""
    signature = {"x": "*fp32", "w": "*bf16", "n": "i32", "stride": "i64", "one": "constexpr",
                 "BLOCK": "constexpr"}  # fmt: skip
    metadata = dict(num_warps=2, shared=4096, num_ctas=1, launch_cooperative_grid=False,
                    launch_pdl=False, global_scratch_size=0, profile_scratch_size=0)  # fmt: skip

    def layout(signature=signature, **changes):
        return launch.replay_layout(types.SimpleNamespace(
            metadata=types.SimpleNamespace(**{**metadata, **changes}),
            src=types.SimpleNamespace(signature=signature)))  # fmt: skip

    P, I32, I64 = launch._POINTER, launch._INT32, launch._INT64
    assert layout() == (64, 4096, (P, P, I32, I64, None, None), 2)
    for change in [{"launch_cooperative_grid": True}, {"launch_pdl": True}, {"num_ctas": 2},
                   {"global_scratch_size": 8}, {"profile_scratch_size": 8},
                   {"shared": 229 * 1024}]:  # fmt: skip
        assert layout(**change) is None, change
    assert layout(signature={**signature, "scale": "fp32"}) is None
    del metadata["profile_scratch_size"]  # a launcher with a global scratch pointer alone
    assert layout()[-1] == 1


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(map(str, case)))
def test_replayed_forward_equals_the_python_forward_on_gpu(case, dtype, replaying,
                                                           monkeypatch):  # fmt: skip
    call = make_call(case, dtype, "cuda")
    launch.REPLAY_LAUNCHES = False
    want = forward(call)
    launch.REPLAY_LAUNCHES = True
    forward(call)
    forward(call)  # the plan kept by now
    python_calls = []
    python_forward = launch._forward
    monkeypatch.setattr(launch, "_forward", lambda *args: python_calls.append(1) or
                        python_forward(*args))  # fmt: skip
    got = forward(call)
    assert python_calls == [] and _C.clear_launch_plans() == 1
    for name, g, w in zip(["output", "h_n", "layer_outputs"], got, want, strict=True):
        assert torch.equal(g, w), name


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
def test_replayed_forward_trains_and_captures_as_the_python_forward_on_gpu(replaying):
    """Through the module: gradients as without replay; a replayed forward captured in a
    CUDA graph replays to the eager result."""
    torch.manual_seed(0)
    rnn = fastrnn.RNN(4, 8, num_layers=2, device="cuda")
    x = torch.randn(5, 3, 4, device="cuda")

    def gradients():
        rnn.zero_grad()
        output, h_n = rnn(x)
        (output.square().sum() + h_n.sum()).backward()
        return [p.grad.clone() for p in rnn.parameters()]

    launch.REPLAY_LAUNCHES = False
    want = gradients()
    launch.REPLAY_LAUNCHES = True
    for _ in range(3):
        got = gradients()
    assert _C.clear_launch_plans() == 1
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    with torch.no_grad():
        eager = rnn(x)[0].clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # the plan kept before capture
                rnn(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = rnn(x)[0]
        graph.replay()
    torch.testing.assert_close(captured, eager, rtol=0, atol=0)
