"""The examples run with every backend (few epochs: this checks they work, not timing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("backend", ["fastrnn", "nn", "naive"])
@pytest.mark.parametrize("script", ["char_hello", "char_pattern", "seq_regression", "cell_loop"])
def test_example_runs(script, backend):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{script}.py"), "--backend", backend, "--epochs", "3"],
        capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "loss" in result.stdout and f"[{backend}:" in result.stdout


def test_onnx_deploy_example_exports_and_runs_in_onnx_runtime(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "model.onnx"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "onnx_deploy.py"), "--epochs", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 RNN nodes" in result.stdout and out.exists()
    difference = float(result.stdout.split("max |difference| ")[1].split()[0])
    assert difference < 1e-5
