"""W&B dashboards from a real (offline) run: structure heatmaps and tables, head scores; a no-op without W&B."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger

from gohsp_lightning.callbacks import HeadRankingCallback
from gohsp_lightning.dashboards import DashboardCallback
from gohsp_lightning.data import ImageDataModule, resolve_data_config
from gohsp_lightning.models import create_student
from gohsp_lightning.module import GohspModule
from gohsp_lightning.pipeline import run, run_name
from gohsp_lightning.pruning import Budget, count_params

from .conftest import FAST, compose_run

SHORT = [
    "pruning.dense_epochs=1",
    "pruning.admm_epochs=2",
    "pruning.finetune_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
]


def media(run_dir: Path) -> Path:
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    return offline_run / "files" / "media"


def table(media_dir: Path, key: str) -> dict:
    (path,) = (media_dir / "table" / "dashboards").glob(f"{key}_*.table.json")
    return json.loads(path.read_text())


def test_pipeline_logs_dashboards_to_offline_wandb(tmp_path):
    fast = [o for o in FAST if not o.startswith(("logger=", "callbacks="))]
    summary = run(compose_run([*fast, *SHORT, "logger=wandb", "callbacks=dashboards"], tmp_path))
    files = media(tmp_path)
    images = {p.name.rsplit("_", 2)[0] for p in (files / "images" / "dashboards").glob("*.png")}
    assert images == {"admm_structure", "head_scores", "final_structure"}

    heads, widths = summary["pruned"]["heads_per_block"], summary["pruned"]["mlp_hidden_per_block"]
    final = table(files, "final_structure_table")
    assert final["columns"] == ["snapshot", "block", "heads_kept", "heads_total", "mlp_kept", "mlp_total"]
    assert final["data"] == [["pruned", i, heads[i], 4, widths[i], 256] for i in range(3)]
    admm = table(files, "admm_structure_table")
    assert [row[0] for row in admm["data"][::3]] == ["0", "1", "end"]  # after each Z update, then the end
    assert all(1 <= row[2] <= 4 and 1 <= row[4] <= 256 for row in admm["data"])


@pytest.mark.parametrize("structures", ["both", "neurons"])
def test_gates_method_logs_its_gates_to_offline_wandb(structures, tmp_path):
    fast = [o for o in FAST if not o.startswith(("logger=", "callbacks="))]
    gates_run = ["pruning.method=gates", f"pruning.structures={structures}", "logger=wandb", "callbacks=dashboards"]
    run(compose_run([*fast, *SHORT, *gates_run], tmp_path))
    files = media(tmp_path)
    images = {p.name.rsplit("_", 2)[0] for p in (files / "images" / "dashboards").glob("*.png")}
    head_gates = {"gate_values"} if structures == "both" else set()  # the heatmap of head gates, when gated
    assert images == {*head_gates, "gates_structure", "final_structure"}
    gates = table(files, "gates_structure_table")
    assert [row[0] for row in gates["data"][::3]] == ["0", "1"]  # open gates after each epoch
    assert all(0 <= row[2] <= 4 and 0 <= row[4] <= 256 for row in gates["data"])
    if structures == "neurons":  # heads not gated: all kept
        assert all(row[2] == 4 for row in gates["data"])


def test_dashboards_do_nothing_without_wandb(tmp_path):
    cfg = compose_run([*FAST, "callbacks=dashboards"], tmp_path)
    L.seed_everything(0)
    model = create_student(cfg.model)
    dm = ImageDataModule(cfg.data, resolve_data_config(cfg.data, model), cfg.model.num_classes)
    module = GohspModule(model, cfg, "admm", budget=Budget(0.4, count_params(model)))
    ranking = HeadRankingCallback(lambda: iter(dm.calibration_loader(32, 32)), cfg.ranking, "graph")
    dashboards = DashboardCallback()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=CSVLogger(str(tmp_path)),
        callbacks=[dashboards, ranking],
        limit_train_batches=2,
        limit_val_batches=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=dm)
    assert len(ranking.history) == 1
    assert dashboards.snapshots == [] and dashboards.logged_passes == 0
    assert not list(tmp_path.rglob("*.wandb"))


def test_run_names_tell_the_runs_of_a_sweep_apart(tmp_path):
    names = {
        run_name(compose_run([f"pruning.ranker={ranker}", f"seed={seed}"], tmp_path))
        for ranker in ("graph", "random")
        for seed in (0, 1)
    }
    assert "cifar10_subset-gohsp-graph-global-both-params0.4-seed1" in names and len(names) == 4
    assert run_name(compose_run(["pruning=dense"], tmp_path)) == "cifar10_subset-dense-seed0"
