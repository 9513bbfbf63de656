"""Sweeps through the real ``python run.py -m``: one report row per job, failures included; fair baselines."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from gohsp_lightning import cli
from gohsp_lightning.sweep_report import aggregate, main, paired_comparison, pareto_front, report_text, settings

from .conftest import FAST, ROOT, compose_run

# one thread: on a small shared CPU, torch's default thread pool is several times slower
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
TINY = [
    *FAST,
    "pruning.dense_epochs=1",
    "pruning.admm_epochs=1",
    "pruning.finetune_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
]


def run_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_multirun_reports_every_job_and_survives_an_infeasible_one(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_py("-m", f"hydra.sweep.dir={sweep}", *TINY, "pruning.sparsity=0.3,0.99", "pruning.ranker=graph,random")
    assert result.returncode == 0, result.stderr[-3000:]

    rows = list(csv.DictReader((sweep / "sweep_summary.csv").open()))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    by_key = {(r["sparsity"], r["ranker"]): r for r in rows}
    assert set(by_key) == {("0.3", "graph"), ("0.3", "random"), ("0.99", "graph"), ("0.99", "random")}
    for ranker in ("graph", "random"):
        ok = by_key[("0.3", ranker)]
        summary = json.loads((sweep / ok["job"] / "summary.json").read_text())
        assert ok["status"] == "ok" and ok["error"] == ""
        assert (ok["method"], ok["allocation"], ok["structures"], ok["seed"]) == ("gohsp", "global", "both", "0")
        assert float(ok["val_top1"]) == summary["pruned"]["val_top1"]
        assert float(ok["dense_top1"]) == summary["dense"]["val_top1"]
        assert int(ok["params"]) == summary["pruned"]["params"] <= 0.7 * int(ok["dense_params"])
        assert int(ok["flops"]) == summary["pruned"]["flops"] < int(ok["dense_flops"])
        failed = by_key[("0.99", ranker)]
        assert failed["status"] == "failed"
        assert failed["error"].startswith("ValueError: pruning.sparsity=0.99 asks to remove")
        assert failed["params"] == failed["val_top1"] == ""
        assert not (sweep / failed["job"] / "summary.json").exists()
    # graph and random removed different structures from the same dense model
    plans = [
        json.loads((sweep / by_key[("0.3", r)]["job"] / "summary.json").read_text())["pruned"]
        for r in ("graph", "random")
    ]
    assert plans[0]["mlp_hidden_per_block"] != plans[1]["mlp_hidden_per_block"]

    with Image.open(sweep / "pareto.png") as image:
        assert image.format == "PNG" and image.size[0] >= 800
        image.verify()
    table = (sweep / "sweep_table.md").read_text()
    assert "| gohsp | graph | global | both | 0.3 | 1 | " in table
    assert "| gohsp | random | global | both | 0.99 | 0 (+1 failed) | — |" in table
    graph_top1, random_top1 = (float(by_key[("0.3", r)]["val_top1"]) for r in ("graph", "random"))
    assert "## gohsp/graph/global/both against each other method, paired by seed (val top-1)" in table
    assert f"| 0.3 | gohsp | random | global | both | 1 | {graph_top1 - random_top1:+.4f} ± 0.0000 |" in table
    assert "| 0.99 | gohsp | random |" not in table  # failed jobs pair with nothing

    # the report is rebuilt from the job dirs alone
    before = (sweep / "sweep_summary.csv").read_text()
    (sweep / "sweep_summary.csv").unlink()
    (sweep / "pareto.png").unlink()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "gohsp_lightning.sweep_report", str(sweep)], env=ENV, capture_output=True, text=True
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "4 jobs (2 not ok)" in rebuilt.stdout
    assert (sweep / "sweep_summary.csv").read_text() == before
    assert (sweep / "pareto.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_optuna_sweep_tunes_the_recipe_and_reports_every_trial(tmp_path):
    """sweep=optuna: each trial is a full run whose pruned top-1 Optuna maximizes; failed trials do not stop it."""
    sweep = tmp_path / "optuna"
    result = run_py("-m", "sweep=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "sweep_summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok"] * 3
    sampled = [{o.partition("=")[0]: o.partition("=")[2] for o in r["overrides"].split()} for r in rows]
    assert len({s["admm.rho"] for s in sampled}) == 3  # three different trials, each its own setting
    for s in sampled:
        assert 1e-3 <= float(s["admm.rho"]) <= 1e-1 and 0.0 <= float(s["pruning.alpha"]) <= 2.0
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(float(r["val_top1"]) for r in rows)
    table = (sweep / "sweep_table.md").read_text()
    assert "| setting |" in table and table.count("| gohsp | graph | global | both | 0.4 | admm.rho=") == 3

    infeasible = tmp_path / "infeasible"
    result = run_py(
        "-m",
        "sweep=optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={infeasible}",
        *TINY,
        "pruning.sparsity=0.99",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((infeasible / "sweep_summary.csv").open()))
    assert [r["status"] for r in rows] == ["failed"] * 2
    assert rows[0]["error"].startswith("ValueError: pruning.sparsity=0.99 asks to remove")


def test_sweep_optuna_without_the_plugin_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_installed", lambda module: False)
    with pytest.raises(SystemExit) as exit_info:
        cli.require_optional_plugins(["-m", "sweep=optuna"])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err == 'error: sweep=optuna needs the Optuna sweeper plugin: pip install -e ".[optuna]"\n'
    )
    cli.require_optional_plugins(["-m", "sweep=baselines"])  # other sweeps need nothing extra


def test_settings_are_the_swept_keys_beyond_identity_and_seed():
    rows = [
        {"overrides": "sweep=optuna pruning.ranker=graph seed=0 admm.rho=0.02693883019285411 optim.lr=0.001"},
        {"overrides": "sweep=optuna pruning.ranker=graph seed=1 admm.rho=0.02693883019285411 optim.lr=0.001"},
        {"overrides": "sweep=optuna pruning.ranker=magnitude seed=0 admm.rho=0.5 optim.lr=0.001"},
    ]
    assert settings(rows) == ["admm.rho=0.02694", "admm.rho=0.02694", "admm.rho=0.5"]
    assert settings([{"overrides": "pruning.sparsity=0.3 seed=0"}, {"overrides": "pruning.sparsity=0.4 seed=1"}]) == [
        "",
        "",
    ]
    # a grid preset is no setting: a dense job run apart still pairs with the sweep's jobs
    grid = {"overrides": "sweep=baselines pruning.ranker=graph seed=0"}
    assert settings([grid, {"overrides": "pruning=dense seed=0"}]) == ["", ""]


@pytest.mark.slow
def test_single_run_keeps_the_one_line_error_and_exit_2(tmp_path):
    """The same infeasible job outside a multirun: one line and exit 2, no failure record."""
    result = run_py(f"hydra.run.dir={tmp_path}", *FAST, "pruning.sparsity=0.99")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: pruning.sparsity=0.99 asks to remove")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "failure.json").exists()
    assert not (tmp_path / "sweep_summary.csv").exists()


def test_report_cli_rejects_a_dir_without_jobs(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} holds no Hydra job dirs")


def test_report_cli_rejects_a_malformed_reference(tmp_path, capsys):
    assert main([str(tmp_path), "--reference", "gohsp/graph"]) == 2
    assert capsys.readouterr().err == (
        "error: --reference='gohsp/graph' must be method/ranker/allocation/structures, e.g. gohsp/graph/global/both\n"
    )


def test_report_cli_names_the_methods_when_the_reference_matches_no_job(tmp_path, capsys):
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        "seed: 0\npruning: {method: gohsp, ranker: magnitude, allocation: global}\n"
    )
    (job / "failure.json").write_text('{"type": "ValueError", "error": "boom"}')
    assert main([str(tmp_path), "--reference", "gohsp/grpah/global/both"]) == 2
    assert capsys.readouterr().err == (
        "error: --reference=gohsp/grpah/global/both matches no job; the sweep has gohsp/magnitude/global/None\n"
    )
    assert not (tmp_path / "sweep_table.md").exists()  # nothing written for a bad command


def test_report_cli_joins_the_rows_of_an_earlier_csv_and_a_job_dir_wins(tmp_path, capsys):
    """Jobs whose dirs are gone (another machine, an earlier session) join the report through their CSV."""
    from gohsp_lightning.sweep_report.report import write_csv
    from gohsp_lightning.sweep_report.rows import COLUMNS, read_rows

    earlier = [
        {
            **dict.fromkeys(COLUMNS, ""),
            **report_row(seed, top1),
            "job": f"graph-seed{seed}",
            "test_top1": 0.6,
            "dense_params": 200,
            "dense_flops": 2000,
        }
        for seed, top1 in ((0, 0.5), (1, 0.4))
    ]
    earlier.append({**earlier[0], "job": "random-seed0", "ranker": "random", "val_top1": 0.45})
    write_csv(tmp_path / "old.csv", earlier)
    assert read_rows(tmp_path / "old.csv") == earlier  # numbers come back as numbers, blanks as blanks

    sweep = tmp_path / "sweep"
    job = sweep / "random-seed0"  # run again here: this dir's row replaces the CSV's
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        "seed: 0\npruning: {method: gohsp, ranker: random, allocation: global, structures: both, sparsity: 0.4}\n"
    )
    (job / "failure.json").write_text('{"type": "ValueError", "error": "boom"}')
    assert main([str(sweep), "--rows", str(tmp_path / "old.csv")]) == 0
    assert "3 jobs (1 not ok)" in capsys.readouterr().out
    rows = read_rows(sweep / "sweep_summary.csv")
    assert [(r["job"], r["status"]) for r in rows] == [
        ("random-seed0", "failed"),
        *((r["job"], "ok") for r in earlier[:2]),
    ]
    assert "| gohsp | graph | global | both | 0.4 | 2 | 0.4500 ± 0.0707 |" in (sweep / "sweep_table.md").read_text()

    (tmp_path / "bad.csv").write_text("job,method\n0,gohsp\n")
    assert main([str(sweep), "--rows", str(tmp_path / "bad.csv")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'bad.csv'} is not a sweep_summary.csv: it lacks")
    assert main([str(sweep), "--rows", str(tmp_path / "none.csv")]) == 2
    assert capsys.readouterr().err == f"error: cannot read {tmp_path / 'none.csv'}: No such file or directory\n"


def test_pareto_front_keeps_only_undominated_points():
    points = [(100, 0.5), (80, 0.4), (80, 0.45), (120, 0.48), (60, 0.3), (130, 0.6)]
    assert pareto_front(points) == [(60, 0.3), (80, 0.45), (100, 0.5), (130, 0.6)]


def report_row(seed, top1, status="ok", ranker="graph", sparsity=0.4):
    """A sweep_summary.csv row as collect_rows makes it from a job's summary (or failure)."""
    return {
        "method": "gohsp",
        "ranker": ranker,
        "allocation": "global",
        "structures": "both",
        "sparsity": sparsity,
        "seed": seed,
        "params": 100,
        "flops": 1000,
        "val_top1": top1,
        "dense_top1": 0.5,
        "status": status,
        "overrides": f"pruning.ranker={ranker} seed={seed}",
    }


def test_aggregate_means_over_seeds_and_counts_failures():
    row = report_row
    (group,) = aggregate([row(0, 0.40), row(1, 0.44), row(2, "", "failed")])
    assert group["runs"] == 2 and group["failed"] == 1
    assert group["top1_mean"] == pytest.approx(0.42)
    assert group["top1_std"] == pytest.approx(0.0282843, abs=1e-6)
    assert group["per_seed"] == {0: 0.40, 1: 0.44}
    (only_failed,) = aggregate([{**row(0, "", "failed"), "sparsity": 0.99}])
    assert only_failed["runs"] == 0 and only_failed["failed"] == 1 and only_failed["top1_mean"] is None


def test_paired_comparison_subtracts_same_seed_jobs_from_the_reference():
    def row(ranker, sparsity, seed, top1, status="ok"):
        return report_row(seed, top1, status, ranker, sparsity)

    rows = [
        row("graph", 0.4, 0, 0.50),
        row("graph", 0.4, 1, 0.40),
        row("graph", 0.4, 2, 0.45),
        row("random", 0.4, 0, 0.46),
        row("random", 0.4, 1, 0.38),
        row("random", 0.4, 2, "", "failed"),  # no pair
        row("random", 0.2, 0, 0.60),  # no reference at 0.2
        row("magnitude", "0.4", "1", "0.40"),  # read back from the CSV: strings
    ]
    by_ranker = {c["ranker"]: c for c in paired_comparison(rows)}
    assert set(by_ranker) == {"random", "magnitude"}
    random = by_ranker["random"]
    assert (random["sparsity"], random["pairs"], random["reference_better"], random["ties"]) == ("0.4", 2, 2, 0)
    assert random["diff_mean"] == pytest.approx(0.03)
    assert random["diff_std"] == pytest.approx(0.0141421, abs=1e-6)
    magnitude = by_ranker["magnitude"]
    assert [magnitude[k] for k in ("pairs", "diff_mean", "reference_better", "ties")] == [1, 0, 0, 1]
    text = report_text(rows)
    assert "| 0.4 | gohsp | random | global | both | 2 | +0.0300 ± 0.0141 | 2/2 better, 0 tied |" in text
    # another reference; with none of its jobs in the sweep there is no comparison section
    against_random = paired_comparison(rows, ("gohsp", "random", "global", "both"))
    assert {c["ranker"] for c in against_random} == {"graph", "magnitude"}
    assert "paired by seed" not in report_text(rows, ("oneshot", "graph", "global", "both"))
    # a dense job has no ranker, allocation or structures to show
    dense = [{**row("graph", 0.4, seed, 0.47), "method": "dense"} for seed in (0, 1)]
    assert "| 0.4 | dense | — | — | — | 2 | -0.0200 ± 0.0707 | 1/2 better, 0 tied |" in report_text(rows + dense)


@pytest.mark.parametrize("method", ["gohsp", "oneshot", "dense"])
def test_every_method_trains_the_same_number_of_epochs(method, tmp_path):
    epochs = ["pruning.dense_epochs=4", "pruning.admm_epochs=3", "pruning.finetune_epochs=2"]
    p = compose_run([f"pruning.method={method}", *epochs], tmp_path).pruning
    assert p.dense_epochs + p.admm_epochs + p.finetune_epochs == 9
    if method == "oneshot":  # no ADMM stage: its epochs go to the fine-tune
        assert (p.admm_epochs, p.finetune_epochs) == (0, 5)
    via_group = compose_run([f"pruning={method}", *epochs], tmp_path).pruning
    assert via_group == p


def test_sweep_configs_compose_with_their_grids(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["sweep=baselines"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["pruning.ranker"] == "graph,magnitude,random"
    assert params["pruning.allocation"] == "global,uniform"
    assert cfg.hydra.callbacks.sweep_report._target_ == "gohsp_lightning.sweep_report.SweepReport"
