"""What a person sees: the run's own lines, not third-party notices (unless verbose=true); nothing hidden
that reports a problem."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gohsp_lightning.console import short_metric, summary_table

from .conftest import ROOT, SHORT_RUN

NOISE = ("GPU available", "💡 Tip", "`Trainer(limit_val_batches", "LeafSpec", "anonymous setting", "Tracking run with")
RUN = [
    *(o for o in SHORT_RUN if not o.startswith(("callbacks=", "trainer.limit_train_batches="))),
    "callbacks=default",  # with the project's progress bar
    "logger=wandb",
    "+logger.csv={_target_: lightning.pytorch.loggers.CSVLogger, name: csv, version: ''}",  # W&B and CSV both
    "trainer.enable_progress_bar=true",
    "trainer.limit_train_batches=8",  # enough for ThroughputMonitor's window of 5 batches
    "trainer.log_every_n_steps=4",
    "pruning.admm_epochs=1",
    "pruning.finetune_epochs=1",
]


def run_py(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "false"}
    command = [sys.executable, str(ROOT / "run.py"), *RUN, f"hydra.run.dir={tmp_path}", *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_a_run_prints_stage_headers_results_and_a_table_without_third_party_notices(tmp_path):
    quiet = run_py(tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    text = quiet.stdout + quiet.stderr
    assert [n for n in NOISE if n in text] == []
    assert "[gohsp] -- admm: ADMM toward the budget" in text and "[gohsp] -- finetune: fine-tune" in text
    assert "[gohsp] admm: val top-1 " in text and "before fine-tune" in text
    assert "exported to" in text and "GMACs" in text
    # Lightning's ThroughputMonitor logs images/s and FLOPs/s of every stage
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/device/samples_per_sec", "train/device/flops_per_sec"} <= set(header)
    # the progress bar shows short names: no stage prefix, no _step/_epoch suffix, no logger version
    assert "task_loss:" in quiet.stdout and "admm/task_loss" not in quiet.stdout and "v_num" not in quiet.stdout


@pytest.mark.slow
def test_verbose_shows_what_the_libraries_print(tmp_path):
    verbose = run_py(tmp_path, "verbose=true")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "GPU available" in verbose.stderr and "Tracking run with" in verbose.stderr


def test_short_metric_names():
    assert short_metric("admm/task_loss_step") == "task_loss"
    assert short_metric("finetune/val_top1") == "val_top1"
    assert short_metric("admm/val_top1_cut") == "val_top1_cut"


def test_summary_table_rows():
    summary = {
        "dense": {"params": 1000, "macs": 2_000_000_000, "val_top1": 0.7},
        "pruned_before_finetune": {"params": 600, "val_top1": 0.5},
        "pruned": {"params": 600, "macs": 1_200_000_000, "val_top1": 0.68},
        "param_reduction": 0.4,
        "flops_reduction": 0.4,
        "export_dir": "/x/pruned",
    }
    lines = summary_table(summary).splitlines()
    assert lines[1].split() == ["dense", "1,000", "2.0000", "0.7000"]
    assert lines[2].split() == ["before", "fine-tune", "600", "1.2000", "0.5000"]
    assert lines[3].split() == ["pruned", "600", "1.2000", "0.6800"]
    assert lines[4] == "40.0% fewer params, 40.0% fewer MACs; exported to /x/pruned"
