"""The contenders: fastrnn (as users call it, or on a named backend), nn.RNN, and the
naive Python loop that RNN tutorials write."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

import fastrnn
from fastrnn.bench.shapes import Shape


def naive_loop(
    x: Tensor, weights: list[Tensor], shape: Shape
) -> tuple[Tensor, Tensor]:  # [T, B, D*H], [L*D, B, H]
    """What RNN tutorials write: one cell step per time step and layer, outputs stacked."""
    act = torch.relu if shape.nonlinearity == "relu" else torch.tanh
    per_cell = len(weights) // (shape.layers * shape.directions)
    layer_input, finals = x, []
    for layer in range(shape.layers):
        direction_outputs = []
        for direction in range(shape.directions):
            cell = layer * shape.directions + direction
            w_ih, w_hh, b_ih, b_hh = weights[cell * per_cell : (cell + 1) * per_cell]
            h = x.new_zeros(x.shape[1], shape.hidden)
            outputs = []
            steps = range(x.shape[0]) if direction == 0 else reversed(range(x.shape[0]))
            for t in steps:
                h = act(layer_input[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
                outputs.append(h)
            if direction == 1:
                outputs.reverse()
            finals.append(h)
            direction_outputs.append(torch.stack(outputs))
        layer_input = torch.cat(direction_outputs, dim=2)
    return layer_input, torch.stack(finals)


@dataclasses.dataclass
class Contender:
    name: str
    module: torch.nn.Module | None  # None for the naive loop (it runs on `parameters`)
    run: Callable[[Tensor], tuple[Tensor, Tensor]]
    parameters: list[Tensor]


def make_contenders(
    shape: Shape, device: torch.device, dtype: torch.dtype, names: list[str]
) -> list[Contender]:
    torch.manual_seed(0)
    kwargs = dict(
        num_layers=shape.layers,
        bidirectional=shape.bidirectional,
        nonlinearity=shape.nonlinearity,
        device=device,
        dtype=dtype,
    )
    reference = torch.nn.RNN(shape.input_size, shape.hidden, **kwargs)
    state = reference.state_dict()
    contenders = []
    for name in names:
        if name == "nn.RNN":
            contenders.append(Contender(name, reference, reference, list(reference.parameters())))
        elif name.startswith("fastrnn"):
            module = fastrnn.RNN(shape.input_size, shape.hidden, **kwargs)
            module.load_state_dict(state)
            backend = name.partition(":")[2]
            if backend:

                def run(x, module=module, backend=backend):
                    with fastrnn.use_backend(backend):
                        return module(x)

            else:
                # Plain "fastrnn" is the module as users call it, on the backend in force
                # (the machine line names it), with no per-call backend switch.
                run = module
            contenders.append(Contender(name, module, run, list(module.parameters())))
        elif name in ("naive", "naive-compiled") and shape.lengths:
            continue  # the tutorial loop runs padded input; packed rows show "-"
        elif name in ("naive", "naive-compiled"):
            weights = [p.detach().clone().requires_grad_() for p in reference.parameters()]

            def loop(x, weights=weights):
                return naive_loop(x, weights, shape)

            run = torch.compile(loop, dynamic=False) if name == "naive-compiled" else loop
            contenders.append(Contender(name, None, run, weights))
        else:
            raise ValueError(f"unknown contender {name!r}")
    return contenders


def default_contenders(device: torch.device) -> list[str]:
    names = ["fastrnn", "nn.RNN", "naive"]
    if device.type == "cpu":
        names.insert(1, "fastrnn:reference")
    return names


def sequence_data(sequence: Tensor | PackedSequence) -> Tensor:
    """A sequence's values: a PackedSequence's data, else the tensor itself."""
    return sequence.data if isinstance(sequence, PackedSequence) else sequence


def step(contender: Contender, x: Tensor | PackedSequence, mode: str):
    if mode == "inference":
        with torch.no_grad():
            return contender.run(x)
    for p in contender.parameters:
        p.grad = None
    out, h_n = contender.run(x)
    (sequence_data(out).sum() + h_n.sum()).backward()
    return out, h_n
