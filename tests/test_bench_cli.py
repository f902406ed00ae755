"""python -m fastrnn.bench: its JSON, and a run stopped part way (as `timeout` stops it)
reporting the rows it finished."""

import json
import os
import signal

from fastrnn.bench import __main__ as bench_cli

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
