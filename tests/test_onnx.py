"""ONNX export of fastrnn.RNN / RNNCell with both exporters: ONNX's own RNN operator (one
node per layer), run in ONNX Runtime and compared with eager."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import fastrnn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

EXPORTERS = {"dynamo": True, "torchscript": False}


def export(model, args, dynamo: bool) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            return torch.onnx.export(
                model, args, dynamo=True, verbose=False
            ).model_proto.SerializeToString()
        f = io.BytesIO()
        torch.onnx.export(model, args, f, dynamo=False)
        return f.getvalue()


def run_onnx(data: bytes, args) -> list[torch.Tensor]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=False)}
    return [torch.from_numpy(o) for o in session.run(None, feeds)]


def op_types(data: bytes) -> list[str]:
    return [node.op_type for node in onnx.load_from_string(data).graph.node]


class Wrapped(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        return self.module(*args)


RNN_CASES = [
    # (num_layers, bidirectional, nonlinearity, bias, batch_first, with_h0, batched)
    (1, False, "tanh", True, False, False, True),
    (2, True, "relu", True, False, True, True),
    (3, False, "relu", False, True, True, True),
    (2, True, "tanh", False, True, False, True),
    (1, True, "tanh", True, False, True, False),
    (2, False, "tanh", True, False, False, False),
]


def rnn_case_id(case):
    layers, bidir, act, bias, batch_first, h0, batched = case
    return (
        f"L{layers}-{'bi' if bidir else 'uni'}-{act}-{'bias' if bias else 'nobias'}"
        f"-{'bf' if batch_first else 'tf'}-{'h0' if h0 else 'noh0'}"
        f"-{'batched' if batched else 'unbatched'}"
    )


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("case", RNN_CASES, ids=rnn_case_id)
def test_rnn_exports_to_onnx_rnn_nodes_and_matches_eager(case, exporter):
    layers, bidir, act, bias, batch_first, with_h0, batched = case
    torch.manual_seed(0)
    rnn = fastrnn.RNN(5, 7, num_layers=layers, bidirectional=bidir, nonlinearity=act,
                      bias=bias, batch_first=batch_first, dropout=0.3).eval()  # fmt: skip
    steps, batch = 4, 6
    shape = ((batch, steps) if batch_first else (steps, batch)) if batched else (steps,)
    args = [torch.randn(*shape, 5)]
    if with_h0:
        cells = layers * (2 if bidir else 1)
        args.append(torch.randn(cells, batch, 7) if batched else torch.randn(cells, 7))
    data = export(Wrapped(rnn).eval(), tuple(args), EXPORTERS[exporter])
    types = op_types(data)
    assert types.count("RNN") == layers, types
    assert "Loop" not in types and "Scan" not in types
    got = run_onnx(data, args)
    expected = rnn(*args)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_exports_to_one_onnx_rnn_node(nonlinearity, with_hx, exporter):
    torch.manual_seed(0)
    cell = fastrnn.RNNCell(5, 7, nonlinearity=nonlinearity)
    args = [torch.randn(3, 5)] + ([torch.randn(3, 7)] if with_hx else [])
    data = export(Wrapped(cell).eval(), tuple(args), EXPORTERS[exporter])
    assert op_types(data).count("RNN") == 1
    (got,) = run_onnx(data, args)
    torch.testing.assert_close(got, cell(*args).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_packed_input_export_fails_with_a_clear_message(exporter):
    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = fastrnn.RNN(3, 4)

        def forward(self, a, b):
            out, h_n = self.rnn(pack_sequence([a, b]))
            return h_n

    with pytest.raises(Exception, match="PackedSequence input is not supported") as info:
        export(Packed(), (torch.randn(4, 3), torch.randn(2, 3)), EXPORTERS[exporter])
    assert "pad_packed_sequence" in str(info.value)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_export_with_dynamic_sequence_length_and_batch(exporter):
    """One exported graph serves other T and B (what deployment needs)."""
    torch.manual_seed(0)
    rnn = fastrnn.RNN(4, 8, 2, bidirectional=True).eval()
    x = torch.randn(5, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if EXPORTERS[exporter]:
            dims = {0: torch.export.Dim("T"), 1: torch.export.Dim("B")}
            program = torch.onnx.export(
                rnn, (x,), dynamo=True, verbose=False, dynamic_shapes=(dims,)
            )
            data = program.model_proto.SerializeToString()
        else:
            f = io.BytesIO()
            torch.onnx.export(rnn, (x,), f, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "T", 1: "B"}})  # fmt: skip
            data = f.getvalue()
    other = torch.randn(9, 6, 4)
    for got, expected in zip(run_onnx(data, [other]), rnn(other), strict=True):
        torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)


def test_a_scripted_model_exports_with_the_torchscript_exporter():
    """torch.jit.script, then torch.onnx.export(..., dynamo=False): RNN nodes, eager's
    numbers (a scripted RNNCell does not export, nor does a scripted nn.RNNCell)."""
    torch.manual_seed(0)
    rnn = fastrnn.RNN(5, 7, num_layers=2, bidirectional=True, batch_first=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(torch.nn.Sequential(rnn))
    x = torch.randn(3, 4, 5)
    data = export(scripted, (x,), dynamo=False)
    assert op_types(data).count("RNN") == 2
    for got, expected in zip(run_onnx(data, [x]), rnn(x), strict=True):
        torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)
