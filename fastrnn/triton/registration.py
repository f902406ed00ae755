"""Registers the Triton launch functions as the fastrnn ops' kernels for CUDA tensors.

Autograd, fake kernels and torch.compile support are the ops' own (csrc/autograd.cpp,
fastrnn/ops.py), shared with the C++ CPU kernels.  Tests also register the same launch
functions for CPU tensors, in a library they destroy afterwards, to run the kernels
through the Triton interpreter.
"""

from __future__ import annotations

import contextlib

import torch


def on_device_of(tensor: torch.Tensor):
    """A context with tensor's CUDA device current, as ATen ops run theirs: Triton
    compiles for and launches on the current device, and a custom op gets no device
    guard from the dispatcher.  No context (nothing to switch) for the current device
    and for CPU tensors."""
    device = tensor.device
    if device.type != "cuda" or device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(device)


def _rnn_forward(input, *args):
    from fastrnn.triton.launch import rnn_forward_triton  # imports triton on first use

    with on_device_of(input):
        return rnn_forward_triton(input, *args)


def _rnn_backward(grad_output, grad_h_n, input, *args):
    from fastrnn.triton.launch import rnn_backward_triton

    with on_device_of(input):  # the gradients may be None
        return rnn_backward_triton(grad_output, grad_h_n, input, *args)


def register(device_type: str, lib: torch.library.Library | None = None) -> None:
    """The Triton launch functions as the kernels of rnn_forward / rnn_backward for
    tensors of device_type ("cuda"; "cpu" under the interpreter, for tests)."""
    torch.library.register_kernel("fastrnn::rnn_forward", device_type, _rnn_forward, lib=lib)
    torch.library.register_kernel("fastrnn::rnn_backward", device_type, _rnn_backward, lib=lib)
