"""Shared bits of the examples: the three ways to run an Elman RNN, and a timer."""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import fastrnn

BACKENDS = ("fastrnn", "nn", "naive")


class NaiveRNN(nn.Module):
    """The loop RNN tutorials write: one nn.RNNCell call per step and layer."""

    def __init__(self, input_size, hidden_size, num_layers=1, batch_first=False):
        super().__init__()
        self.batch_first = batch_first
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.cells = nn.ModuleList(nn.RNNCell(size, hidden_size) for size in sizes)

    def forward(self, x, hx=None):  # x: [T, B, I] (or [B, T, I]); hx: [L, B, H]
        if self.batch_first:
            x = x.transpose(0, 1)
        hidden = list(hx) if hx is not None else [None] * len(self.cells)
        outputs = []
        for x_t in x:
            for layer, cell in enumerate(self.cells):
                hidden[layer] = cell(x_t, hidden[layer])
                x_t = hidden[layer]
            outputs.append(x_t)
        out = torch.stack(outputs)
        return (out.transpose(0, 1) if self.batch_first else out), torch.stack(hidden)


def make_rnn(backend: str, input_size, hidden_size, num_layers=1, batch_first=False):
    if backend == "fastrnn":
        return fastrnn.RNN(input_size, hidden_size, num_layers, batch_first=batch_first)
    if backend == "nn":
        return nn.RNN(input_size, hidden_size, num_layers, batch_first=batch_first)
    return NaiveRNN(input_size, hidden_size, num_layers, batch_first=batch_first)


def parse_args(description: str, epochs: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", choices=BACKENDS, default="fastrnn")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    return args


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
