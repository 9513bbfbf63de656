"""The house style is enforced, not hoped for: ruff (configured in pyproject.toml) passes on the whole tree."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import ROOT


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes(command):
    ruff = shutil.which("ruff")
    assert ruff is not None, 'ruff is a dev dependency: pip install -e ".[dev]"'
    result = subprocess.run([ruff, *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
