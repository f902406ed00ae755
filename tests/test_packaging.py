"""The installable package holds every subpackage of the source tree, and its source
distribution every file the extension builds from."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "fastrnn").rglob("__init__.py")
    }
    assert found == listed, f"pyproject packages {sorted(listed)} vs source tree {sorted(found)}"


def test_the_source_distribution_holds_every_file_the_build_reads(tmp_path):
    """An sdist (what `pip install` builds from where no wheel fits) carries every source
    and header of the extension, so that it builds."""
    sdist = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
         "sdist", "-d", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sdist.returncode == 0, sdist.stderr
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        shipped = {Path(*Path(name).parts[1:]).as_posix() for name in tar.getnames()}
    needed = {path.relative_to(ROOT).as_posix() for path in (ROOT / "csrc").rglob("*.*")}
    assert needed <= shipped, f"missing from the sdist: {sorted(needed - shipped)}"
