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
