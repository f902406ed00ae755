"""Registers the fastrnn ops' kernels for CUDA tensors: C++ kernels that replay a call
from C++ where its plan is kept (csrc/python/triton_op_kernels.cpp) and otherwise call
the Triton launch functions.

Autograd, fake kernels and torch.compile support are the ops' own (csrc/autograd.cpp,
fastrnn/ops.py), shared with the C++ CPU kernels.  Tests also register the same kernels
for CPU tensors, released afterwards, to run the kernels through the Triton interpreter.
"""

from __future__ import annotations

import contextlib

import torch
from torch._C._dynamo.eval_frame import get_eval_frame_callback
from torch._dynamo.eval_frame import skip_code


def on_device_of(tensor: torch.Tensor):
    """A context with tensor's CUDA device current, as ATen ops run theirs: Triton
    compiles for and launches on the current device, and a custom op gets no device
    guard from the dispatcher.  No context (nothing to switch) for the current device
    and for CPU tensors."""
    device = tensor.device
    if device.type != "cuda" or device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(device)


_LAUNCH_FUNCTIONS = None  # rnn_forward_triton, rnn_backward_triton, replay_tf32 once imported


def _launch_functions():
    """The launch functions, imported on first use (they import triton)."""
    global _LAUNCH_FUNCTIONS
    if _LAUNCH_FUNCTIONS is None:
        from fastrnn.triton.launch import replay_tf32, rnn_backward_triton, rnn_forward_triton

        _LAUNCH_FUNCTIONS = rnn_forward_triton, rnn_backward_triton, replay_tf32
    return _LAUNCH_FUNCTIONS


def _rnn_forward(input, *args):
    forward, _, _ = _launch_functions()
    with on_device_of(input):
        return forward(input, *args)


def _rnn_backward(grad_output, grad_h_n, input, *args):
    _, backward, _ = _launch_functions()
    with on_device_of(input):  # the gradients may be None
        return backward(grad_output, grad_h_n, input, *args)


def _replay_tf32():
    _, _, replay_tf32 = _launch_functions()
    return replay_tf32()


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

    skip_code(run.__code__)  # Dynamo runs this frame as it is (it cannot trace the check)
    return run


def register(device_type: str):
    """The kernels of rnn_forward / rnn_backward for tensors of device_type ("cuda";
    "cpu" under the interpreter, for tests): replayed from C++ where a plan is kept
    (launch.REPLAY_LAUNCHES), else the Triton launch functions.  Returns the handle that
    keeps them registered: released, the key's former kernels are the ops' again."""
    from fastrnn import _C  # built (fastrnn.ops registers nothing without it)

    key = torch._C._dispatch_key_for_device(device_type)
    return _C.register_triton_kernels(key, outside_dynamo(_rnn_forward),
                                      outside_dynamo(_rnn_backward),
                                      outside_dynamo(_replay_tf32))  # fmt: skip
