"""The benchmark's shapes: tutorial sizes, throughput sizes, packed batches and GPU-only sizes."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    steps: int  # T (packed: the longest sequence's)
    batch: int  # B
    input_size: int  # I
    hidden: int  # H
    layers: int = 1
    bidirectional: bool = False
    nonlinearity: str = "tanh"
    # Packed input (a PackedSequence of B sequences, longest first) where given, else
    # padded [T, B, I].
    lengths: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "lengths", tuple(self.lengths))  # a list from JSON too
        if self.lengths and (
            len(self.lengths) != self.batch
            or self.lengths[0] != self.steps
            or list(self.lengths) != sorted(self.lengths, reverse=True)
        ):
            raise ValueError(f"{self.name}: lengths must be B={self.batch} lengths, longest "
                             f"first, the longest T={self.steps}; got {self.lengths}")  # fmt: skip

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def rows(self) -> int:
        """Tokens a call runs: T x B, or the lengths' sum for packed input."""
        return sum(self.lengths) if self.lengths else self.steps * self.batch

    def forward_flops(self) -> float:
        """Multiply-adds of the GEMMs (x2), all layers and directions."""
        rows = self.rows
        total = 0
        for layer in range(self.layers):
            layer_in = self.input_size if layer == 0 else self.directions * self.hidden
            total += self.directions * 2 * rows * self.hidden * (layer_in + self.hidden)
        return float(total)

    def describe(self) -> str:
        extra = f" L{self.layers}" if self.layers > 1 else ""
        extra += " bi" if self.bidirectional else ""
        steps = f"T={self.steps}"
        if self.lengths:
            steps = f"lengths {self.lengths[0]}..{self.lengths[-1]}"  # its name says packed
        sizes = f"{steps} B={self.batch} I={self.input_size} H={self.hidden}"
        return f"{self.name} ({sizes}{extra})"


def ramp(longest: int, shortest: int, batch: int) -> tuple[int, ...]:
    """batch sequence lengths from longest down to shortest, evenly spaced."""
    return tuple(longest - (longest - shortest) * i // (batch - 1) for i in range(batch))


SHAPES = [
    # Tutorial shapes: what RNN learners run.
    Shape("hello", 5, 1, 4, 8),
    Shape("pattern25", 25, 1, 4, 128),
    Shape("regression2L", 10, 32, 5, 20, layers=2),
    Shape("cell-loop", 3, 5, 4, 2),
    Shape("single-step", 1, 1, 64, 128),
    # Throughput shapes.
    Shape("small", 100, 32, 64, 128),
    Shape("medium", 100, 64, 256, 256),
    Shape("fastrnns", 100, 64, 512, 512),  # PyTorch's own fastrnns benchmark shape
    Shape("long", 1000, 8, 32, 64),
    Shape("wide", 50, 16, 128, 512),
    Shape("large", 50, 128, 512, 1024),
    Shape("bi2L", 100, 32, 128, 256, layers=2, bidirectional=True),
    # Packed batches of sequences of many lengths (pack_padded_sequence), as text
    # classifiers feed them.
    Shape("packed", 50, 32, 64, 128, lengths=ramp(50, 1, 32)),
    Shape(
        "packed-bi2L", 100, 32, 100, 256, layers=2, bidirectional=True, lengths=ramp(100, 10, 32)
    ),
]
# Too slow for the CPU grid; on a GPU they are the default grid's end.
GPU_SHAPES = [
    Shape("long-B1", 1000, 1, 64, 128),
    Shape("H2048", 100, 64, 2048, 2048),
    Shape("bigbatch", 100, 1024, 128, 256),
]


def default_grid(device: torch.device) -> list[Shape]:
    """SHAPES; on a GPU with GPU_SHAPES before the packed rows, so that a grid cut short
    by a time limit keeps the rows every earlier GPU grid measured."""
    if device.type != "cuda":
        return SHAPES
    padded = [s for s in SHAPES if not s.lengths]
    return padded + GPU_SHAPES + [s for s in SHAPES if s.lengths]


QUICK = ["hello", "pattern25", "regression2L", "cell-loop", "single-step", "small", "long"]
MODES = ("inference", "training")


def make_input(shape: Shape, device, dtype) -> Tensor | PackedSequence:  # [T, B, I]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape.steps, shape.batch, shape.input_size, generator=gen)
    if shape.lengths:
        return pack_padded_sequence(x, list(shape.lengths)).to(device=device, dtype=dtype)
    return x.to(device=device, dtype=dtype)
