"""Rows grouped by time step, the layout every fastrnn kernel and the reference share.

A sequence is a dense [N, features] matrix whose rows are grouped by time step: step t
owns rows [offsets[t], offsets[t] + batch_sizes[t]).  A padded [T, B, I] input is the
case batch_sizes[t] == B; a PackedSequence the general case (batch sizes non-increasing,
as pack_padded_sequence makes them).  (csrc/rnn_arguments.cpp states the same in C++.)
"""

from __future__ import annotations

from torch import Tensor


def step_size_list(input: Tensor, batch_sizes: Tensor | None) -> list[int]:
    """Rows of each step as Python ints: B for a padded [T, B, *] input (batch_sizes None),
    else batch_sizes (a packed [N, *] input's).  A padded input's come from its shape, not
    from a tensor made here: inside torch.func transforms torch < 2.10 wraps a new tensor,
    which then cannot be read."""
    if batch_sizes is None:
        return [input.shape[1]] * input.shape[0]
    return batch_sizes.tolist()
