"""Replayed launches (launch.REPLAY_LAUNCHES, csrc/python/launch_replay.cpp): a padded
forward's or backward's allocations, kernel launches and ATen ops recorded once per call
signature by the ops' C++ kernels (csrc/python/triton_op_kernels.cpp), then done from C++.

On CPU no kernel runs: launch_kernel keeps a stand-in for each compiled kernel, with the
signature Triton's JIT gives its arguments, the Python path's launches are recorded, and
the replayed ones go to a list; a replayed call's steps and results must be the Python
path's on the same tensors, every pointer in the same slot at the same offset, and its
ATen ops must compute what the Python path's do.  With a GPU the replayed forward and
backward must equal the Python path's bit for bit, eagerly, in training and in a CUDA
graph.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastrnn
from fastrnn import _C

triton = pytest.importorskip("triton")

from fastrnn.triton import launch, registration  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # host_cost_cpu and the sibling it imports
import host_cost_cpu  # noqa: E402

ON_GPU = torch.cuda.is_available()


@pytest.fixture
def replaying(monkeypatch):
    """REPLAY_LAUNCHES on, with no plan kept before or after."""
    monkeypatch.setattr(launch, "REPLAY_LAUNCHES", True)
    _C.clear_launch_plans()
    yield
    _C.clear_launch_plans()


@pytest.fixture
def stand_in_kernels(monkeypatch, replaying):
    """The ops' Triton kernels for CPU tensors, launching on them as on a GPU's device 0,
    with stand-ins for the compiled kernels (tools/host_cost_cpu.py's stand_in_compile,
    which times the same path), launched by nothing: (the launches of kept kernels on
    the Python path, the replayed launches)."""
    if ON_GPU:
        pytest.skip("stand-in kernels would be kept for the GPU's")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        op_kernels = registration.register("cpu")
    python_launches, replayed = [], []
    monkeypatch.setattr(launch, "_launches_directly", lambda kernel, tensor: True)
    monkeypatch.setattr(launch, "_COMPILED", {})
    for owner, name, stand_in in host_cost_cpu.compile_stand_ins():
        monkeypatch.setattr(owner, name, stand_in)
    monkeypatch.setattr(launch, "_launch_kept", lambda *kept_launch: python_launches.append(
        kept_launch))  # fmt: skip
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    cached_launches = (launch.forward_launch, launch.backward_launch, launch.gemm_launch)
    for launches in cached_launches:
        launches.cache_clear()  # their KernelLaunch objects keep stand-ins
    _C.replay_launches_to(replayed)
    yield python_launches, replayed
    _C.replay_launches_to(None)
    for launches in cached_launches:
        launches.cache_clear()
    del op_kernels


# (steps, batch, input size, hidden, layers, bidirectional, relu, bias, hx, batch_first)
CASES = [
    (5, 1, 4, 8, 1, False, False, True, False, False),  # the hello tutorial's
    (3, 5, 4, 2, 2, True, True, False, True, False),
    (7, 3, 5, 21, 2, False, False, True, True, True),
    (1, 3, 6, 16, 3, True, False, True, False, True),
    # Input projections and weight gradients by GEMMs, bias gradients by sums.
    (launch.PROJECT_INPUT_MAX_STEPS + 1, 2, 4, 8, 2, True, False, True, True, False),
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
    return x, hx, [w.detach() for w in rnn._flat_weights], layers, bidirectional, relu


def forward(call):
    """The forward op's call (replayed where it can be)."""
    input, hx, weights, layers, bidirectional, relu = call
    return torch.ops.fastrnn.rnn_forward.default(input, hx, weights, None, layers,
                                                 bidirectional, relu)  # fmt: skip


def python_forward(call):
    """The same call on the Python path (the launch function)."""
    input, hx, weights, layers, bidirectional, relu = call
    return launch.rnn_forward_triton(input, hx, weights, None, layers, bidirectional, relu)


def backward_args(call, grads):
    """rnn_backward's arguments after call's forward; grads: "both" (random gradients of
    output and h_n), "output" (h_n gets none; the output's is a sum's, expanded), "sums"
    (both a sum's: one tensor, expanded twice, as autograd passes them for
    output.sum() + h_n.sum()), "sums apart" (two such tensors) or "no input" (both, no
    input gradient wanted, nor hx's)."""
    input, hx, weights, layers, bidirectional, relu = call
    output, h_n, layer_outputs = python_forward(call)
    grad_output, grad_h_n = torch.randn_like(output), torch.randn_like(h_n)
    one = torch.ones((), dtype=output.dtype, device=output.device)
    if grads == "output":
        grad_output, grad_h_n = one.expand_as(output), None
    if grads.startswith("sums"):
        other = one.clone() if grads == "sums apart" else one
        grad_output, grad_h_n = one.expand_as(output), other.expand_as(h_n)
    wanted = grads != "no input"
    return (grad_output, grad_h_n, input, hx, weights, None, output, layer_outputs, layers,
            bidirectional, relu, wanted, wanted)  # fmt: skip


def backward(args):
    """The backward op's call (replayed where it can be)."""
    return torch.ops.fastrnn.rnn_backward.default(*args)


def python_backward(args):
    return launch.rnn_backward_triton(*args)


def extent(tensor):
    """(address, bytes) its elements span: an expanded tensor's, its one element's."""
    if tensor is None or tensor.numel() == 0:
        return 0, 0
    last = sum(
        (size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
    )
    return tensor.data_ptr(), (last + 1) * tensor.element_size()


def op_name(func):
    schema = func._schema
    return schema.name + (f".{schema.overload_name}" if schema.overload_name else "")


class PythonSteps(TorchDispatchMode):
    """The Python path's allocations and other ATen ops but views, appended to `steps`
    (where the stand-in launches go) as replay_launches_to records a replay's: ops with
    the extents of the tensors they return that lie in no earlier tensor of the call."""

    def __init__(self, steps, tensors):
        super().__init__()
        self.steps = steps
        self.made = [t for t in tensors if t is not None]  # kept alive: no address reused

    def lies_in(self, tensor):
        address = tensor.data_ptr()
        return tensor.numel() > 0 and any(
            begin <= address < begin + size for begin, size in map(extent, self.made)
        )

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func in launch._CallWork.ALLOCATIONS:
            self.steps.append(("allocation", extent(result)))
            self.made.append(result)
        elif not func.is_view:
            returns = result if isinstance(result, tuple | list) else (result,)
            new = [r for r in returns if not self.lies_in(r)]
            self.steps.append(("op", op_name(func), tuple(map(extent, new))))
            self.made += new
        return result


def slot_steps(steps, kinds, tensors):
    """steps (replay_launches_to's records) with each pointer as (slot, offset) (kinds:
    each launch's parameter kinds), and every allocation and new op tensor by its size,
    and the extents of the slots: the call's tensors, then what it made."""
    extents = [extent(t) for t in tensors]
    kinds = iter(kinds)

    def slot(address):
        return next(((i, address - begin) for i, (begin, size) in enumerate(extents)
                     if begin <= address < begin + size), ("outside", address))  # fmt: skip

    slotted = []
    for tag, *record in steps:
        if tag == "allocation":
            extents.append(record[0])
            slotted.append((tag, record[0][1]))
        elif tag == "op":
            name, made = record
            extents.extend(made)
            slotted.append((tag, name, tuple(size for _, size in made)))
        else:
            *head, values = record
            params = tuple(slot(v) if k == launch._POINTER else v
                           for k, v in zip(next(kinds), values, strict=True))  # fmt: skip
            slotted.append((tag, *head, params))
    return slotted, extents[len(tensors) :]


def check_replay_is_the_python_path(stand_in_kernels, run, python_run, tensors):
    """run() (an op's call) replayed after a first call (compiling) and a recorded one:
    launches nothing from Python, and its steps are the Python path's (python_run(), its
    launch function's) on the same tensors, in order: the same allocations and ops,
    launches parameter for parameter, each pointer in the same slot at the same offset;
    and so are its results."""
    python_launches, replayed = stand_in_kernels
    replayed.clear()
    run()  # compiles (stand-ins): not recorded
    run()  # recorded: the plan kept
    assert replayed == []
    python_launches.clear()
    replay_results = run()
    assert python_launches == [] and replayed
    with PythonSteps(python_launches, tensors):
        python_results = python_run()
    python_steps, kinds = [], []
    for step in python_launches:  # (kept, grid, pointers, scalars) of each launch
        if step[0] in ("allocation", "op"):
            python_steps.append(step)
            continue
        *head, params = launch.replay_launch(*step)
        kinds.append([kind for kind, _ in params])
        python_steps.append((*head, tuple(value for _, value in params)))
    replay_slotted, replay_made = slot_steps(replayed, kinds, tensors)
    python_slotted, python_made = slot_steps(python_steps, kinds, tensors)
    assert replay_slotted == python_slotted
    launches = [s for s in replay_slotted if s[0] == "launch"]
    assert launches and all(s[-1][-2:] == (0, 0) for s in launches)  # scratch pointers
    assert type(replay_results) is type(python_results) is tuple
    assert result_slots(replay_results, replay_made) == result_slots(python_results, python_made)
    return replay_slotted


def result_slots(results, made):
    """Each result (a tensor, or a list of tensors) as the index of what the call made
    that holds it, its offset, shape and strides (an empty one: its shape)."""

    def slot(tensor):
        if tensor.numel() == 0:
            return tuple(tensor.shape)
        address = tensor.data_ptr()
        return next((i, address - begin, tuple(tensor.shape), tensor.stride())
                    for i, (begin, size) in enumerate(made)
                    if begin <= address < begin + size)  # fmt: skip

    return [[slot(t) for t in item] if isinstance(item, list) else slot(item) for item in results]


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(map(str, case)))
def test_replayed_forward_launches_are_the_python_paths(case, stand_in_kernels):
    input, hx, weights, *_ = call = make_call(case)
    check_replay_is_the_python_path(stand_in_kernels, lambda: forward(call),
                                    lambda: python_forward(call),
                                    [input, hx, *weights])  # fmt: skip


@pytest.mark.parametrize("grads", ["both", "output", "sums", "sums apart", "no input"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(map(str, case)))
def test_replayed_backward_launches_are_the_python_paths(case, grads, stand_in_kernels):
    args = backward_args(make_call(case), grads)
    check_replay_is_the_python_path(stand_in_kernels, lambda: backward(args),
                                    lambda: python_backward(args),
                                    backward_tensors(args))  # fmt: skip


def backward_tensors(args):
    """The tensors of rnn_backward's call (backward_args)."""
    grad_output, grad_h_n, input, hx, weights, _, output, layer_outputs, *_ = args
    return [grad_output, grad_h_n, input, hx, *weights, output, layer_outputs]


@pytest.mark.parametrize("case", CASES[:2], ids=["hello", "bidirectional"])
def test_replayed_cooperative_calls_are_the_python_paths(case, stand_in_kernels, monkeypatch):
    """The cooperative tier's calls: each launch replayed as a cooperative one, after the
    zeroing of the barrier counters its programs synchronise through, both as on the
    Python path."""
    monkeypatch.setattr(launch, "FORCE_TIER", "cooperative")
    input, hx, weights, *_ = call = make_call(case)
    forward_steps = check_replay_is_the_python_path(
        stand_in_kernels, lambda: forward(call), lambda: python_forward(call),
        [input, hx, *weights])  # fmt: skip
    args = backward_args(call, "both")
    backward_steps = check_replay_is_the_python_path(
        stand_in_kernels, lambda: backward(args), lambda: python_backward(args),
        backward_tensors(args))  # fmt: skip
    for steps in (forward_steps, backward_steps):
        launches = [s for s in steps if s[0] == "launch"]
        assert all(cooperative is True for *_, cooperative, _ in launches), launches
        before = steps[: steps.index(launches[0])]
        assert any(step[:2] == ("op", "aten::zeros") for step in before), steps


@pytest.mark.parametrize("layers, bidirectional", [(3, False), (2, True)])
def test_every_layers_cooperative_launch_is_its_kept_kernels(
    layers, bidirectional, stand_in_kernels, monkeypatch
):
    """Each layer's barrier counters start 16-byte aligned (launch.call_sync), so that
    every layer's launch, not only the first's, passes aligned pointers and goes straight
    to its kept kernel (KernelLaunch), with no specialisation key built a call."""
    monkeypatch.setattr(launch, "FORCE_TIER", "cooperative")
    monkeypatch.setattr(launch, "REPLAY_LAUNCHES", False)
    call = make_call((4, 3, 5, 8, layers, bidirectional, False, True, True, False))
    args = backward_args(call, "both")  # the forward's kernels compiled and kept
    python_backward(args)  # the backward's too
    looked_up = []
    launch_kernel = launch.launch_kernel
    monkeypatch.setattr(
        launch, "launch_kernel", lambda *a: looked_up.append(a) or launch_kernel(*a)
    )
    python_forward(call)
    python_backward(args)
    assert looked_up == []


def test_replayed_aten_work_is_the_python_paths(stand_in_kernels, monkeypatch):
    """ATen ops between the launches are replayed in order on the same slots: GEMMs (the
    long case above, a bidirectional backward's input gradient), a copy (hx not
    contiguous), work on a result (h_n zeroed after each layer's launch); and they run:
    the replayed results hold what the ops wrote."""
    input, hx, weights, layers, bidirectional, relu = make_call(CASES[1])
    strided_hx = hx.transpose(0, 1).contiguous().transpose(0, 1)
    call = (input, strided_hx, weights, layers, bidirectional, relu)
    steps = check_replay_is_the_python_path(stand_in_kernels, lambda: forward(call),
                                            lambda: python_forward(call),
                                            [input, strided_hx, *weights])  # fmt: skip
    assert ("op", "aten::clone", (strided_hx.numel() * 4,)) in steps
    run_layer = launch.recurrence_forward
    monkeypatch.setattr(launch, "recurrence_forward", lambda layer_launch, *args: (
        run_layer(layer_launch, *args), args[5].fill_(0.5)))  # args[5]: h_n  # fmt: skip
    input, hx, weights, *_ = call = make_call(CASES[0])
    steps = check_replay_is_the_python_path(stand_in_kernels, lambda: forward(call),
                                            lambda: python_forward(call),
                                            [input, hx, *weights])  # fmt: skip
    assert steps[-1] == ("op", "aten::fill_.Scalar", ())
    assert torch.equal(forward(call)[1], torch.full_like(forward(call)[1], 0.5))


# fp32 GEMMs large enough to split K (GEMM_MIN_SPLIT_K) for the weight gradients.
TF32_GEMM_CASE = (40, 16, 32, 32, 1, False, False, True, True, False)


def tf32_gemms_on(monkeypatch) -> list:
    """fastrnn's TF32 GEMM kernel for every fp32 GEMM with sides of at least 16: the
    parts of K of each such GEMM the Python path launches from now on."""
    monkeypatch.setattr(launch, "TF32_GEMMS", True)
    monkeypatch.setattr(launch, "GEMM_TF32_MIN_WORK", 0)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # nn.RNN's TF32 flag
    splits, gemm_launch = [], launch.gemm_launch

    def counted(*args):
        kernel_launch, parts = gemm_launch(*args)
        splits.append(parts)
        return kernel_launch, parts

    monkeypatch.setattr(launch, "gemm_launch", counted)
    return splits


def test_replayed_tf32_gemm_calls_are_the_python_paths(stand_in_kernels, monkeypatch):
    """fp32 GEMMs on fastrnn's TF32 kernel (launch.gemm): the input projection, and the
    weight gradients with K in parts summed by an ATen op, replayed step for step."""
    splits = tf32_gemms_on(monkeypatch)
    input, hx, weights, *_ = call = make_call(TF32_GEMM_CASE)
    check_replay_is_the_python_path(stand_in_kernels, lambda: forward(call),
                                    lambda: python_forward(call),
                                    [input, hx, *weights])  # fmt: skip
    args = backward_args(call, "both")
    grad_output, grad_h_n, input, hx, weights, _, output, layer_outputs, *_ = args
    tensors = [grad_output, grad_h_n, input, hx, *weights, output, layer_outputs]
    steps = check_replay_is_the_python_path(stand_in_kernels, lambda: backward(args),
                                            lambda: python_backward(args), tensors)  # fmt: skip
    assert max(splits) > 1 and ("op", "aten::sum.IntList_out") in [s[:2] for s in steps]


def test_replayed_ops_compute_what_the_python_path_computes(replaying):
    """A recorded call's ATen work, replayed on other tensors of the same shapes and
    strides: a GEMM into a view of an allocation, a copy from a strided argument, a
    reduction to a new tensor and in-place work on it; its results are what the Python
    path gives on those tensors, views of what the call made."""

    def run(a, b, bias, strided):
        out = a.new_empty((2, a.shape[0], b.shape[1]))
        torch.addmm(bias, a, b, out=out[1])
        out[0].copy_(strided)
        total = out.sum(0)
        total.mul_(out[1])
        return out, [total, total[1:, 2:]]

    def tensors():
        return [torch.randn(5, 3), torch.randn(3, 4), torch.randn(4), torch.randn(4, 5).t()]

    kind, flags, first = 7, (1, 0), tensors()
    records = []
    _C.replay_launches_to(records)  # replays CPU tensors' calls
    try:
        assert _C.replay(kind, first, flags) is True
        results, judged, steps = launch.recorded(run, first)
        assert judged and _C.store_plan(kind, first, flags, steps, results)
        second = tensors()
        got = _C.replay(kind, second, flags)
    finally:
        _C.replay_launches_to(None)
    assert [r[0] if r[0] != "op" else r[1] for r in records] == [
        "allocation", "aten::addmm.out", "aten::copy_", "aten::sum.dim_IntList",
        "aten::mul_.Tensor",
    ]  # fmt: skip
    want = run(*second)
    assert torch.equal(got[0], want[0]) and all(
        torch.equal(g, w) and g.stride() == w.stride() for g, w in zip(got[1], want[1], strict=True)
    )
    assert got[1][1].data_ptr() == got[1][0][1, 2].data_ptr()


def test_calls_with_work_a_replay_cannot_redo_are_never_replayed(stand_in_kernels,
                                                                 monkeypatch):  # fmt: skip
    """Under autocast (which would change the ops), with an op on a tensor the call
    neither takes nor makes, or with one that reads a value on the host: the Python
    path, every call."""
    python_launches, replayed = stand_in_kernels
    with torch.autocast("cpu"):
        for _ in range(3):
            forward(make_call(CASES[0]))
    assert replayed == [] and _C.clear_launch_plans() == 0
    outside = torch.ones(())
    run_layer = launch.recurrence_forward
    for extra in [lambda h_n: h_n.add_(outside), lambda h_n: h_n.sum().item()]:
        monkeypatch.setattr(launch, "recurrence_forward", lambda layer_launch, *args, extra=extra: (
            run_layer(layer_launch, *args), extra(args[5])))  # args[5]: h_n  # fmt: skip
        _C.clear_launch_plans()
        call = make_call(CASES[0])
        for _ in range(3):
            forward(call)
        assert replayed == [] and python_launches
        assert _C.clear_launch_plans() == 1  # such calls marked: never replayed


def python_kernel_calls(monkeypatch) -> list:
    """The Python kernels the ops' C++ kernels call from now on, by name ("forward",
    "backward"), to run a call or to record it."""
    forward_fn, backward_fn, *gates = registration._launch_functions()
    calls = []
    monkeypatch.setattr(registration, "_LAUNCH_FUNCTIONS", (
        lambda *args: calls.append("forward") or forward_fn(*args),
        lambda *args: calls.append("backward") or backward_fn(*args), *gates))  # fmt: skip
    return calls


@pytest.mark.parametrize("case", [CASES[2], CASES[-1]], ids=["short", "gemms"])
def test_the_ops_cpp_kernels_replay_without_the_python_kernels(case, stand_in_kernels,
                                                               monkeypatch):  # fmt: skip
    """Through the ops' C++ kernels (csrc/python/triton_op_kernels.cpp): a padded call is
    recorded by its Python kernel, then replayed from C++ with no Python kernel called,
    in the structure the Python kernel gives; with replay off, and for packed input,
    every call runs the Python kernel; a wrong call gets its error."""
    _, replayed = stand_in_kernels
    python_calls = python_kernel_calls(monkeypatch)
    input, hx, weights, layers, bidirectional, relu = call = make_call(case)
    grad_args = backward_args(call, "sums")
    for name, run in [("forward", lambda: forward(call)),
                      ("backward", lambda: backward(grad_args))]:  # fmt: skip
        python_calls.clear()
        want = [run() for _ in range(2)][0]  # compiled (maybe before), recorded
        assert python_calls[-1] == name
        python_calls.clear()
        replayed.clear()
        got = run()
        assert python_calls == [] and "launch" in [record[0] for record in replayed]
        assert [(t.shape, t.stride()) for t in flat_results(got)] == [
            (t.shape, t.stride()) for t in flat_results(want)
        ]
    assert _C.clear_launch_plans() == 2
    launch.REPLAY_LAUNCHES = False
    python_calls.clear()
    forward(call)
    assert python_calls == ["forward"] and _C.clear_launch_plans() == 0
    launch.REPLAY_LAUNCHES = True
    python_calls.clear()
    packed = torch.nn.utils.rnn.pack_padded_sequence(input[:, :2], [input.shape[0], 1])
    packed_hx = torch.zeros(layers * (1 + bidirectional), 2, weights[1].shape[0])
    for _ in range(3):
        torch.ops.fastrnn.rnn_forward.default(packed.data, packed_hx, weights,
                                              packed.batch_sizes, layers, bidirectional,
                                              relu)  # fmt: skip
    assert python_calls == ["forward"] * 3 and _C.clear_launch_plans() == 0
    with pytest.raises(RuntimeError, match="dtype"):
        forward((input, hx, [w.double() for w in weights], layers, bidirectional, relu))


def test_a_call_replays_only_a_plan_of_calls_like_it_in_every_tensor(stand_in_kernels):
    """A plan's key holds every tensor's dtype, device, sizes and strides: weights of
    another dtype find no plan, and get the Python path's error."""
    input, hx, weights, layers, bidirectional, relu = call = make_call(CASES[1])
    for _ in range(2):
        forward(call)
    wrong = (input, hx, [w.double() for w in weights], layers, bidirectional, relu)
    with pytest.raises(RuntimeError) as replaying_error:
        forward(wrong)
    assert _C.clear_launch_plans() == 1  # the call's plan alone
    launch.REPLAY_LAUNCHES = False
    with pytest.raises(RuntimeError) as python_error:
        forward(wrong)
    assert str(replaying_error.value) == str(python_error.value)


def test_tensors_that_start_together_are_in_the_key(stand_in_kernels):
    """A plan recorded where the output's and h_n's gradients are one tensor is not the
    plan of a call where they are two (its pointers into h_n's would be the output's)."""
    python_launches, replayed = stand_in_kernels
    together, apart = (backward_args(make_call(CASES[0]), g) for g in ("sums", "sums apart"))
    for _ in range(3):  # compiled, recorded, replayed
        backward(together)
    assert [record[0] for record in replayed].count("launch") == 1
    replayed.clear()
    backward(apart)  # recorded, not replayed
    assert replayed == [] and _C.clear_launch_plans() == 2


# (our struct, cuda.h's): {our field: cuda.h's}, as csrc/python/cuda_launch_config.h
# declares them.
LAUNCH_CONFIG_FIELDS = {
    ("LaunchConfig", "CUlaunchConfig"): {
        "grid_x": "gridDimX", "grid_y": "gridDimY", "grid_z": "gridDimZ",
        "block_x": "blockDimX", "block_y": "blockDimY", "block_z": "blockDimZ",
        "shared": "sharedMemBytes", "stream": "hStream", "attributes": "attrs",
        "attribute_count": "numAttrs",
    },
    ("LaunchAttribute", "CUlaunchAttribute"): {
        "id": "id", "value": "value", "value.cooperative": "value.cooperative",
    },
}  # fmt: skip


def launch_config_check() -> str:
    """C++ that compiles only where each struct's size and alignment, and each field's
    offset, are cuda.h's."""
    lines = [
        "#include <cstddef>",
        "#include <cuda.h>",
        '#include "cuda_launch_config.h"',
        "namespace ours = fastrnn::python;",
        "static_assert(ours::kLaunchAttributeCooperative == CU_LAUNCH_ATTRIBUTE_COOPERATIVE);",
        "static_assert(sizeof(ours::LaunchAttribute::id) == sizeof(CUlaunchAttributeID));",
    ]
    for (struct, theirs), fields in LAUNCH_CONFIG_FIELDS.items():
        for test in ("sizeof", "alignof"):
            lines.append(f"static_assert({test}(ours::{struct}) == {test}({theirs}));")
        for field, their_field in fields.items():
            lines.append(f"static_assert(offsetof(ours::{struct}, {field}) == "
                         f'offsetof({theirs}, {their_field}), "{field}");')  # fmt: skip
    return "\n".join(lines) + "\n"


def test_the_launch_config_a_replay_passes_is_the_drivers():
    """csrc/python/cuda_launch_config.h, which fastrnn._C declares for cuLaunchKernelEx
    as it builds without CUDA, lays out every field as cuda.h does (Triton's copy)."""
    include = Path(triton.__file__).parent / "backends" / "nvidia" / "include"
    compiler = shutil.which("c++")
    if compiler is None or not (include / "cuda.h").exists():
        pytest.skip("needs a C++ compiler and Triton's cuda.h")
    result = subprocess.run(
        [compiler, "-std=c++17", "-fsyntax-only", f"-I{include}", f"-I{ROOT / 'csrc' / 'python'}",
         "-x", "c++", "-"],
        input=launch_config_check(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_replayed_launches_pass_the_parameters_the_compiled_kernels_take():
    """Each kernel family built for sm_90 (no GPU needed; tools/cubin_report.py
    --replay-parameters): the bytes of the parameters a replay passes, its kept kernel's
    non-constexpr arguments then Triton's two scratch pointers, are its PTX entry's."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # real builds
    tool = [sys.executable, str(ROOT / "tools" / "cubin_report.py"), "--replay-parameters",
            "--targets", "90"]  # fmt: skip
    result = subprocess.run(tool, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.endswith("| True |")]
    assert len(rows) == 5, result.stdout  # forward and backward of both tiers, the GEMM


def test_plans_are_bounded(replaying):
    """At most 4096 plans are kept (a program of ever new shapes records again)."""
    x = torch.zeros(4)
    for flag in range(4097):
        _C.store_plan(0, [x], (flag,), None, ())
    assert _C.clear_launch_plans() == 1


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


def test_a_setting_assigned_drops_the_plans(stand_in_kernels, monkeypatch):
    """A setting assigned as tests and tools do (monkeypatch.setattr, `launch.X = ...`)
    goes through apply_settings: a call recorded on the persistent tier is not replayed
    once FORCE_TIER names the cooperative one, but recorded again on it; an assignment
    that changes nothing keeps the plans."""
    _, replayed = stand_in_kernels
    call = make_call(CASES[0])
    for _ in range(2):
        forward(call)  # its kernels compiled, then the call recorded
    monkeypatch.setattr(launch, "ONE_ROW_MAX_H", launch.ONE_ROW_MAX_H)
    assert _C.clear_launch_plans() == 1
    for _ in range(2):
        forward(call)  # recorded, then replayed
    monkeypatch.setattr(launch, "FORCE_TIER", "cooperative")
    replayed.clear()
    for _ in range(3):
        forward(call)  # its kernels compiled, the call recorded, then replayed
    launches = [step for step in replayed if step[0] == "launch"]
    assert launches and all(cooperative is True for *_, cooperative, _ in launches), launches


def test_replay_layout_reads_the_launchers_signature():
    """Pointers, 4- and 8-byte integers, constexprs left out, Triton's scratch pointers
    after them, and whether the launch is cooperative; none where the launcher does more
    than cuLaunchKernelEx with that attribute."""
    signature = {"x": "*fp32", "w": "*bf16", "n": "i32", "stride": "i64", "one": "constexpr",
                 "BLOCK": "constexpr"}  # fmt: skip
    metadata = dict(num_warps=2, shared=4096, num_ctas=1, launch_cooperative_grid=False,
                    launch_pdl=False, global_scratch_size=0, profile_scratch_size=0)  # fmt: skip

    def layout(signature=signature, **changes):
        return launch.replay_layout(types.SimpleNamespace(
            metadata=types.SimpleNamespace(**{**metadata, **changes}),
            src=types.SimpleNamespace(signature=signature)))  # fmt: skip

    P, I32, I64 = launch._POINTER, launch._INT32, launch._INT64
    assert layout() == (64, 4096, False, (P, P, I32, I64, None, None), 2)
    assert layout(launch_cooperative_grid=True) == (64, 4096, True, (P, P, I32, I64, None, None), 2)
    for change in [{"launch_pdl": True}, {"num_ctas": 2},
                   {"global_scratch_size": 8}, {"profile_scratch_size": 8},
                   {"shared": 229 * 1024}]:  # fmt: skip
        assert layout(**change) is None, change
    assert layout(signature={**signature, "scale": "fp32"}) is None
    del metadata["profile_scratch_size"]  # a launcher with a global scratch pointer alone
    assert layout()[-1] == 1


def flat_results(results):
    return [r for item in results for r in (item if isinstance(item, list) else [item])]


def check_replay_equals_the_python_path_on_gpu(run, monkeypatch):
    """run() (an op's call) replayed (its third call) equals it on the Python path bit for
    bit, and called no Python kernel."""
    launch.REPLAY_LAUNCHES = False
    want = run()
    launch.REPLAY_LAUNCHES = True
    run()
    run()  # the plan kept by now
    python_calls = python_kernel_calls(monkeypatch)
    got = run()
    assert python_calls == [] and _C.clear_launch_plans() == 1
    for i, (g, w) in enumerate(zip(flat_results(got), flat_results(want), strict=True)):
        assert g.shape == w.shape and g.stride() == w.stride() and torch.equal(g, w), i


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(map(str, case)))
def test_replayed_forward_equals_the_python_forward_on_gpu(case, dtype, replaying,
                                                           monkeypatch):  # fmt: skip
    call = make_call(case, dtype, "cuda")
    check_replay_equals_the_python_path_on_gpu(lambda: forward(call), monkeypatch)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("grads", ["both", "output", "no input"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(map(str, case)))
def test_replayed_backward_equals_the_python_backward_on_gpu(case, dtype, grads, replaying,
                                                             monkeypatch):  # fmt: skip
    args = backward_args(make_call(case, dtype, "cuda"), grads)
    check_replay_equals_the_python_path_on_gpu(lambda: backward(args), monkeypatch)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
def test_replayed_tf32_gemm_calls_equal_the_python_path_on_gpu(replaying, monkeypatch):
    """The input projection and the weight gradients on fastrnn's TF32 GEMM kernel, K
    split in parts: replayed forward and backward bit for bit."""
    splits = tf32_gemms_on(monkeypatch)
    call = make_call(TF32_GEMM_CASE, device="cuda")
    check_replay_equals_the_python_path_on_gpu(lambda: forward(call), monkeypatch)
    args = backward_args(call, "both")
    check_replay_equals_the_python_path_on_gpu(lambda: backward(args), monkeypatch)
    assert max(splits) > 1


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", [CASES[0], CASES[-1]], ids=["short", "gemms"])
def test_replayed_calls_train_and_capture_as_the_python_path_on_gpu(case, replaying):
    """Through the module: gradients as without replay; a replayed forward and backward
    captured in a CUDA graph replay to the eager results (short: kernels alone; gemms:
    GEMMs, sums and copies between them)."""
    torch.manual_seed(0)
    rnn = fastrnn.RNN(4, 8, num_layers=2, device="cuda")
    x = torch.randn(case[0], 3, 4, device="cuda")

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
    assert _C.clear_launch_plans() == 2  # the forward's and the backward's
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    args = backward_args(make_call(case, device="cuda"), "both")
    check_captured_replays_are_eager([lambda: rnn(x)[0], lambda: flat_results(backward(args))])


def check_captured_replays_are_eager(calls):
    """Each call, replayed (its plan kept on a side stream first) in a CUDA graph's
    capture: the graph's replay gives its eager results bit for bit."""
    with torch.no_grad():
        for call in calls:
            eager = [t.clone() for t in torch.utils._pytree.tree_leaves(call())]
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # the plan kept before capture
                    call()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                captured = torch.utils._pytree.tree_leaves(call())
            graph.replay()
            for c, e in zip(captured, eager, strict=True):
                torch.testing.assert_close(c, e, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES[:2], ids=["hello", "bidirectional"])
def test_replayed_cooperative_calls_equal_the_python_path_on_gpu(case, dtype, replaying,
                                                                 monkeypatch):  # fmt: skip
    """The cooperative tier's launches replayed cooperatively (cuLaunchKernelEx, as
    Triton's launcher): forward and backward bit for bit, eagerly and captured."""
    monkeypatch.setattr(launch, "FORCE_TIER", "cooperative")
    call = make_call(case, dtype, "cuda")
    check_replay_equals_the_python_path_on_gpu(lambda: forward(call), monkeypatch)
    args = backward_args(call, "both")
    check_replay_equals_the_python_path_on_gpu(lambda: backward(args), monkeypatch)
    check_captured_replays_are_eager([lambda: flat_results(forward(call)),
                                      lambda: flat_results(backward(args))])  # fmt: skip
