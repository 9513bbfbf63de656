"""Held-out evaluation of finished runs: the same figure the run measured, on any split, into the sweep report."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from gohsp_lightning.evaluate import main
from gohsp_lightning.sweep_report import build_report, paired_comparison, report_text

from .conftest import FAST, SUBSET
from .test_sweeps import report_row, run_py

QUICK = [*FAST, "pruning.admm_epochs=1", "pruning.finetune_epochs=1", "trainer.limit_train_batches=2"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real two-job multirun (graph vs random) of the tiny ViT, validated on all 2,000 val images."""
    sweep = tmp_path_factory.mktemp("evaluate") / "sweep"
    result = run_py("-m", f"hydra.sweep.dir={sweep}", *QUICK, "pruning.ranker=graph,random")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


@pytest.fixture
def heldout(tmp_path):
    """An ImageFolder root whose ``test`` split is the embedded val images (so the figures can be checked)."""
    root = tmp_path / "heldout"
    root.mkdir()
    (root / "test").symlink_to(SUBSET / "val")
    return root


def test_the_evaluation_reproduces_the_runs_own_val_figures(sweep, capsys):
    assert main([str(sweep), "--root", str(SUBSET), "--split", "val"]) == 0
    out = capsys.readouterr().out
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        figures = json.loads((sweep / job / "eval_val.json").read_text())
        assert figures["split"] == "val" and figures["pruned"]["images"] == figures["dense"]["images"] == 2000
        assert figures["pruned"]["top1"] == pytest.approx(summary["pruned"]["val_top1"], abs=1e-6)
        assert figures["dense"]["top1"] == pytest.approx(summary["dense"]["val_top1"], abs=1e-6)
        assert figures["pruned"]["ce"] > 0
        assert f"{sweep / job}: val top-1 {figures['pruned']['top1']:.4f} pruned" in out
    first, second = (json.loads((sweep / j / "eval_val.json").read_text())["dense"] for j in ("0", "1"))
    assert first == second  # both jobs pruned one starting model (same seed, no dense epochs)


def test_the_sweep_report_shows_the_heldout_split_beside_val(sweep, heldout):
    assert main([str(sweep), "--root", str(heldout)]) == 0
    rows = list(csv.DictReader((sweep / "sweep_summary.csv").open()))
    for row in rows:
        assert float(row["test_top1"]) == pytest.approx(float(row["val_top1"]), abs=1e-6)
        assert float(row["dense_test_top1"]) == pytest.approx(float(row["dense_top1"]), abs=1e-6)
    table = (sweep / "sweep_table.md").read_text()
    assert "| test top-1 mean ± std | dense test top-1 |" in table
    assert "paired by seed (val top-1)" in table and "paired by seed (test top-1)" in table


def test_a_single_run_dir_is_evaluated_alone(sweep, heldout):
    assert main([str(sweep / "1"), "--root", str(heldout)]) == 0
    assert (sweep / "1" / "eval_test.json").is_file()


def test_bad_paths_are_one_line_errors_that_write_nothing(sweep, tmp_path, capsys):
    assert main([str(tmp_path), "--root", str(SUBSET)]) == 2
    expected = f"error: {tmp_path} is neither a finished run dir (summary.json) nor a sweep dir\n"
    assert capsys.readouterr().err == expected
    assert main([str(sweep / "0"), "--root", str(SUBSET), "--split", "holdout"]) == 2
    assert capsys.readouterr().err.startswith(f"error: --root={str(SUBSET)!r} has no 'holdout' folder")
    assert not (sweep / "0" / "eval_holdout.json").exists()


def test_the_paired_test_comparison_uses_only_jobs_with_test_figures():
    rows = [
        {**report_row(0, 0.50), "test_top1": 0.48},
        {**report_row(1, 0.40), "test_top1": 0.41},
        {**report_row(0, 0.45, ranker="random"), "test_top1": 0.40},
        {**report_row(1, 0.38, ranker="random"), "test_top1": ""},  # not evaluated: no test pair
    ]
    (random,) = paired_comparison(rows, metric="test_top1")
    assert random["pairs"] == 1 and random["diff_mean"] == pytest.approx(0.08)
    (on_val,) = paired_comparison(rows)
    assert on_val["pairs"] == 2 and on_val["diff_mean"] == pytest.approx(0.035)
    text = report_text(rows)
    assert "| 0.4 | gohsp | random | global | both | 1 | +0.0800 ± 0.0000 | 1/1 better, 0 tied |" in text


def test_figures_of_an_earlier_run_in_the_same_dir_are_not_reported(sweep, heldout, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    assert main([str(copy), "--root", str(heldout)]) == 0
    summary = copy / "1" / "summary.json"
    summary.write_text(summary.read_text().replace("{", '{"rerun": true, ', 1))  # the job was run again
    build_report(copy)
    rows = {r["job"]: r for r in csv.DictReader((copy / "sweep_summary.csv").open())}
    assert rows["0"]["test_top1"] != "" and rows["1"]["test_top1"] == ""


def test_a_truncated_starting_model_is_a_one_line_error(sweep, heldout, tmp_path, capsys):
    job = tmp_path / "job"
    shutil.copytree(sweep / "0", job, ignore=shutil.ignore_patterns("eval_*.json"))
    weights = job / "stages" / "dense.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main([str(job), "--root", str(heldout)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {weights} cannot be loaded as the run's dense model")
    assert not (job / "eval_test.json").exists()
