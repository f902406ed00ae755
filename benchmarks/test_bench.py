"""pytest-benchmark suite: one group per (shape, mode), contenders lined up inside it.

    pytest benchmarks/ --benchmark-group-by=group            # time everything
    pytest benchmarks/ --benchmark-disable                   # CI: run and validate once

Each test validates its contender against nn.RNN in float64 before timing it.  GPU
timings synchronise the device.  The shapes and contenders are fastrnn.bench's.
"""

from __future__ import annotations

import pytest
import torch

from fastrnn.bench.contenders import default_contenders, make_contenders, step
from fastrnn.bench.measure import synchronize, validate
from fastrnn.bench.shapes import MODES, SHAPES, make_input

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.float32


@pytest.mark.parametrize("contender", default_contenders(DEVICE))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_rnn(benchmark, shape, mode, contender):
    benchmark.group = f"{shape.describe()} {mode}"
    if contender.startswith("naive") and shape.lengths:
        pytest.skip("the naive loop runs padded input only")
    names = list(dict.fromkeys(["nn.RNN", contender]))
    contenders = make_contenders(shape, DEVICE, DTYPE, names)
    validate(contenders, shape, mode, DEVICE, DTYPE)
    timed = next(c for c in contenders if c.name == contender)
    x = make_input(shape, DEVICE, DTYPE)

    def run():
        step(timed, x, mode)
        synchronize(DEVICE)

    benchmark(run)
