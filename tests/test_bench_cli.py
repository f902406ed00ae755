"""python -m fastrnn.bench: its JSON, a run stopped part way (as `timeout` stops it)
reporting the rows it finished, and its packed rows."""

import json
import os
import signal

import pytest
import torch

from fastrnn.bench import __main__ as bench_cli
from fastrnn.bench.contenders import make_contenders
from fastrnn.bench.measure import ValidationError, validate
from fastrnn.bench.shapes import GPU_SHAPES, SHAPES, Shape, default_grid, ramp

ARGS = ["--device", "cpu", "--shapes", "hello,cell-loop", "--modes", "inference",
        "--contenders", "fastrnn,nn.RNN", "--repeats", "1"]  # fmt: skip


def measured_shapes(path) -> list[str]:
    with open(path) as f:
        return [row["shape"]["name"] for row in json.load(f)["rows"]]


def test_bench_cli_writes_every_row(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench_cli.main([*ARGS, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "STOPPED" not in out
    assert measured_shapes(path) == ["hello", "cell-loop"]
    assert "inference: fastrnn vs nn.RNN: geometric mean" in out


def test_bench_cli_stopped_by_sigterm_reports_the_rows_done(tmp_path, monkeypatch, capsys):
    grid = bench_cli.run_grid

    def grid_terminated_after_first_row(*args, on_row, **kwargs):
        def on_row_then_terminate(peak, rows):
            on_row(peak, rows)
            os.kill(os.getpid(), signal.SIGTERM)

        return grid(*args, on_row=on_row_then_terminate, **kwargs)

    monkeypatch.setattr(bench_cli, "run_grid", grid_terminated_after_first_row)
    handler = signal.getsignal(signal.SIGTERM)
    path = tmp_path / "bench.json"
    assert bench_cli.main([*ARGS, "--json", str(path)]) == 1
    out = capsys.readouterr().out
    assert "STOPPED after 1 of 2 rows" in out
    assert measured_shapes(path) == ["hello"]
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert [line.split(" (")[0] for line in table[1:]] == ["| hello"]
    assert signal.getsignal(signal.SIGTERM) is handler


def test_bench_cli_packed_rows_run_packed_input_without_the_naive_loop(tmp_path, capsys):
    """A packed row feeds every contender one PackedSequence (validated against float64
    nn.RNN on it first); the naive loop, which runs padded input, shows "-"; tokens are
    the lengths' sum."""
    packed = next(s for s in SHAPES if s.name == "packed")
    assert packed.lengths == ramp(50, 1, 32) and packed.rows == sum(packed.lengths) == 831
    path = tmp_path / "bench.json"
    args = ["--device", "cpu", "--shapes", "packed", "--contenders", "fastrnn,nn.RNN,naive",
            "--repeats", "1", "--json", str(path)]  # fmt: skip
    assert bench_cli.main(args) == 0
    with open(path) as f:
        rows = json.load(f)["rows"]
    assert [row["mode"] for row in rows] == ["inference", "training"]
    for row in rows:
        assert set(row["timings"]) == {"fastrnn", "nn.RNN"}
        assert row["tokens_per_s"] == pytest.approx(
            packed.rows / row["timings"]["fastrnn"]["median_s"]
        )
        assert Shape(**row["shape"]) == packed  # the JSON's lengths read back
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| packed")]
    assert len(table) == 2 and all("packed (lengths 50..1 B=32" in line for line in table)
    assert all(line.split(" | ")[4] == "-" for line in table)  # naive ms


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_bench_validation_refuses_a_wrong_packed_result(mode):
    """The benchmark's check against float64 nn.RNN reads a packed output: a contender
    whose recurrent weight is off fails it."""
    shape = Shape("packed-tiny", 4, 3, 2, 5, lengths=(4, 2, 1))
    contenders = make_contenders(shape, torch.device("cpu"), torch.float32, ["nn.RNN", "fastrnn"])
    validate(contenders, shape, mode, torch.device("cpu"), torch.float32)
    with torch.no_grad():  # the reference takes nn.RNN's weights (the first contender's)
        contenders[1].module.weight_hh_l0[0, 0] += 1e-3
    with pytest.raises(ValidationError, match="fastrnn on packed-tiny"):
        validate(contenders, shape, mode, torch.device("cpu"), torch.float32)


def test_default_grid_runs_the_packed_rows_last_on_a_gpu():
    """The CPU grid is SHAPES; a GPU's adds GPU_SHAPES before the packed rows, so that a
    grid cut short by its time limit keeps the rows earlier GPU grids measured."""
    assert default_grid(torch.device("cpu")) == SHAPES
    names = [s.name for s in default_grid(torch.device("cuda"))]
    packed = [s.name for s in SHAPES if s.lengths]
    assert packed == ["packed", "packed-bi2L"]
    padded = [s.name for s in SHAPES if not s.lengths]
    assert names == padded + [s.name for s in GPU_SHAPES] + packed
