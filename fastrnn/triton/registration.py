"""Registers the Triton launch functions as the fastrnn ops' kernels for CUDA tensors.

Autograd, fake kernels and torch.compile support are the ops' own (csrc/autograd.cpp,
fastrnn/ops.py), shared with the C++ CPU kernels.  Tests also register the same launch
functions for CPU tensors, in a library they destroy afterwards, to run the kernels
through the Triton interpreter.
"""

from __future__ import annotations

import torch


def _rnn_forward(*args):
    from fastrnn.triton.launch import rnn_forward_triton  # imports triton on first use

    return rnn_forward_triton(*args)


def _rnn_backward(*args):
    from fastrnn.triton.launch import rnn_backward_triton

    return rnn_backward_triton(*args)


def register(device_type: str, lib: torch.library.Library | None = None) -> None:
    """The Triton launch functions as the kernels of rnn_forward / rnn_backward for
    tensors of device_type ("cuda"; "cpu" under the interpreter, for tests)."""
    torch.library.register_kernel("fastrnn::rnn_forward", device_type, _rnn_forward, lib=lib)
    torch.library.register_kernel("fastrnn::rnn_backward", device_type, _rnn_backward, lib=lib)
