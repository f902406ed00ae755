"""Rows grouped by time step, the layout every fastrnn kernel and the reference share.

A sequence is a dense [N, features] matrix whose rows are grouped by time step: step t
owns rows [offsets[t], offsets[t] + batch_sizes[t]).  A padded [T, B, I] input is the
case batch_sizes[t] == B; a PackedSequence the general case (batch sizes non-increasing,
as pack_padded_sequence makes them).  (csrc/rnn_arguments.cpp states the same in C++.)
"""

from __future__ import annotations

import dataclasses

from torch import Tensor


@dataclasses.dataclass(frozen=True)
class StepLayout:
    batch_sizes: list[int]  # rows of each step
    offsets: list[int]  # first row of each step

    @property
    def steps(self) -> int:
        return len(self.batch_sizes)

    @property
    def rows(self) -> int:
        return sum(self.batch_sizes)

    def step_rows(self, t: int) -> slice:
        return slice(self.offsets[t], self.offsets[t] + self.batch_sizes[t])


def step_layout(input: Tensor, batch_sizes: Tensor | None) -> StepLayout:
    """The layout of a padded [T, B, *] input (batch_sizes None) or a packed [N, *] one."""
    if batch_sizes is None:
        sizes = [input.shape[1]] * input.shape[0]
    else:
        sizes = [int(s) for s in batch_sizes.tolist()]
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += size
    return StepLayout(sizes, offsets)
