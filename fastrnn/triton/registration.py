"""Registers the fastrnn ops' kernels for CUDA tensors: C++ kernels that replay a call
from C++ where its plan is kept (csrc/python/triton_op_kernels.cpp), record one where
none is yet, and otherwise call the Triton launch functions.

Autograd, fake kernels and torch.compile support are the ops' own (csrc/autograd.cpp,
fastrnn/ops.py), shared with the C++ CPU kernels.  Tests also register the same kernels
for CPU tensors, released afterwards, to run the kernels through the Triton interpreter.
"""

from __future__ import annotations

import contextlib

import torch
from torch._C._dynamo.eval_frame import (
    _FrameAction,
    _FrameExecStrategy,
    get_eval_frame_callback,
    set_code_exec_strategy,
)


def on_device_of(tensor: torch.Tensor):
    """A context with tensor's CUDA device current, as ATen ops run theirs: Triton
    compiles for and launches on the current device, and a custom op gets no device
    guard from the dispatcher.  No context (nothing to switch) for the current device
    and for CPU tensors."""
    device = tensor.device
    if device.type != "cuda" or device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(device)


# rnn_forward_triton, rnn_backward_triton, replay_tf32, recorded, once imported
_LAUNCH_FUNCTIONS = None


def _launch_functions():
    """The launch functions, imported on first use (they import triton)."""
    global _LAUNCH_FUNCTIONS
    if _LAUNCH_FUNCTIONS is None:
        from fastrnn.triton import launch

        _LAUNCH_FUNCTIONS = (launch.rnn_forward_triton, launch.rnn_backward_triton,
                             launch.replay_tf32, launch.recorded)  # fmt: skip
    return _LAUNCH_FUNCTIONS


def _rnn_forward(input, *args):
    forward, _, _, _ = _launch_functions()
    with on_device_of(input):
        return forward(input, *args)


def _rnn_backward(grad_output, grad_h_n, input, *args):
    _, backward, _, _ = _launch_functions()
    with on_device_of(input):  # the gradients may be None
        return backward(grad_output, grad_h_n, input, *args)


def _replay_tf32():
    _, _, replay_tf32, _ = _launch_functions()
    return replay_tf32()


def _recorded(kernel, args):
    _, _, _, recorded = _launch_functions()
    return recorded(kernel, args)


def outside_dynamo(kernel):
    """kernel, run with TorchDynamo's frame evaluation off, as torch.library.register_kernel
    runs a kernel: an op called eagerly inside a torch.compile region must not have its
    launch functions traced.  Turning it off costs ~1 µs a call (measured on a CPU,
    docs/performance.md), so only where a region has it on."""
    disabled = torch._disable_dynamo(kernel)

    def run(*args, **kwargs):
        if get_eval_frame_callback() is None:  # no torch.compile region around the call
            return kernel(*args, **kwargs)
        return disabled(*args, **kwargs)

    # Dynamo runs this frame as it is (it cannot trace the check): torch._dynamo's
    # skip_code, without importing torch._dynamo (~0.9 s) where nothing compiles.
    set_code_exec_strategy(run.__code__,
                           _FrameExecStrategy(_FrameAction.SKIP, _FrameAction.DEFAULT))  # fmt: skip
    return run


def register(device_type: str):
    """The kernels of rnn_forward / rnn_backward for tensors of device_type ("cuda";
    "cpu" under the interpreter, for tests): replayed from C++ where a plan is kept
    (launch.REPLAY_LAUNCHES), recorded where none is yet, else the Triton launch
    functions.  Returns the handle that keeps them registered: released, the key's
    former kernels are the ops' again."""
    from fastrnn import _C  # built (fastrnn.ops registers nothing without it)

    key = torch._C._dispatch_key_for_device(device_type)
    kernels = _rnn_forward, _rnn_backward, _replay_tf32, _recorded
    return _C.register_triton_kernels(key, *map(outside_dynamo, kernels))
