"""The benchmark's shapes: tutorial sizes, throughput sizes, and GPU-only sizes."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    steps: int  # T
    batch: int  # B
    input_size: int  # I
    hidden: int  # H
    layers: int = 1
    bidirectional: bool = False
    nonlinearity: str = "tanh"

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def forward_flops(self) -> float:
        """Multiply-adds of the GEMMs (x2), all layers and directions."""
        rows = self.steps * self.batch
        total = 0
        for layer in range(self.layers):
            layer_in = self.input_size if layer == 0 else self.directions * self.hidden
            total += self.directions * 2 * rows * self.hidden * (layer_in + self.hidden)
        return float(total)

    def describe(self) -> str:
        extra = f" L{self.layers}" if self.layers > 1 else ""
        extra += " bi" if self.bidirectional else ""
        sizes = f"T={self.steps} B={self.batch} I={self.input_size} H={self.hidden}"
        return f"{self.name} ({sizes}{extra})"


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
]
# Too slow for the CPU grid; on a GPU they are the default grid's end.
GPU_SHAPES = [
    Shape("long-B1", 1000, 1, 64, 128),
    Shape("H2048", 100, 64, 2048, 2048),
    Shape("bigbatch", 100, 1024, 128, 256),
]
QUICK = ["hello", "pattern25", "regression2L", "cell-loop", "single-step", "small", "long"]
MODES = ("inference", "training")


def make_input(shape: Shape, device, dtype) -> Tensor:  # [T, B, I]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape.steps, shape.batch, shape.input_size, generator=gen)
    return x.to(device=device, dtype=dtype)
