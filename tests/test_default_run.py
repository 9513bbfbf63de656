"""The README's offline default, `python run.py`, exactly as a new user runs it (slow: minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gohsp_lightning import load_pruned
from gohsp_lightning.pruning import count_params

from .conftest import ROOT


@pytest.mark.slow
def test_offline_default_run(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    subprocess.run([sys.executable, "run.py", f"hydra.run.dir={tmp_path}"], cwd=ROOT, env=env, check=True, timeout=1200)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["experiment"] == "cifar10_subset"
    assert summary["param_reduction"] >= 0.4
    assert summary["flops_reduction"] > 0.2
    # ten classes: chance is 0.1; both models learn, and pruning keeps most of the accuracy
    assert summary["dense"]["val_top1"] > 0.2
    assert summary["pruned"]["val_top1"] > 0.2
    assert count_params(load_pruned(tmp_path / "pruned")) == summary["pruned"]["params"]
    assert list((tmp_path / "wandb").glob("offline-run-*")), "W&B should have logged offline"
