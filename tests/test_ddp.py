"""DDP on 2 CPU processes (gloo, conf/trainer/ddp_sim.yaml): the ranks agree on head scores and plan.

``python run.py trainer=ddp_sim`` runs the whole pipeline; every stage's fit spawns 2 ranks. With
``trainer.strategy=ddp`` (launched as on GPUs) the 2 ranks each run the whole pipeline. ddp_spawn
hands only rank 0's state back to the main process, so the evidence is per rank: each rank writes
``ranks/<stage>.rank<r>.json`` (its plan, its head scores before and after the broadcast, digests of
its buffers and weights) from :class:`~gohsp_lightning.callbacks.RankAgreementCallback`, which also
all-gathers the digests at runtime and would have failed the run on a mismatch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from gohsp_lightning.callbacks import RankAgreementCallback
from gohsp_lightning.module import GohspModule
from gohsp_lightning.pruning import Budget, count_params

from .conftest import ROOT, SHORT_RUN
from .test_module import setup

SETTINGS = [
    *SHORT_RUN,
    "pruning.ranker=taylor",  # scores that differ between heads, so a broadcast that changed nothing shows
    "pruning.dense_epochs=1",
    "pruning.admm_epochs=2",
    "pruning.finetune_epochs=1",
]


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.parametrize(
    "launch",
    [
        ["trainer=ddp_sim"],  # ddp_spawn: each stage's fit spawns the 2 ranks
        ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"],  # the ranks run the pipeline
    ],
    ids=["ddp_sim-spawn", "strategy=ddp"],
)
def test_two_ranks_agree_on_head_scores_and_plan(tmp_path, launch):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *SETTINGS, *launch, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    ranks = [json.loads((run_dir / "ranks" / f"admm.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["agree"] for r in ranks)
    # before the broadcast each rank ranked on its own: the same images, so the same scores within float noise
    local = [torch.tensor(r["local_scores"], dtype=torch.float64) for r in ranks]
    assert torch.allclose(local[0], local[1], rtol=0, atol=1e-6)
    assert float(local[0].std()) > 0  # real, non-uniform scores
    # after it: bit-identical scores, plans, buffers (Z, U, masks) and weights
    assert ranks[0]["head_scores"] == ranks[1]["head_scores"]
    assert ranks[0]["plan"] == ranks[1]["plan"]
    assert ranks[0]["digests"] == ranks[1]["digests"]
    # broadcast_buffers=false reached torch's DistributedDataParallel (from ddp_sim.yaml, or set for "ddp")
    assert ranks[0]["broadcast_buffers"] is False

    for stage in ("dense", "finetune"):
        per_rank = [json.loads((run_dir / "ranks" / f"{stage}.rank{r}.json").read_text()) for r in (0, 1)]
        assert per_rank[0]["digests"] == per_rank[1]["digests"], stage

    summary = json.loads((run_dir / "summary.json").read_text())
    agree = summary["ranks_agree"]
    assert agree["agree"] and agree["checked"] == ["admm", "dense", "finetune"]
    assert agree["stages"]["admm"]["world_size"] == 2
    # the model the pipeline pruned and exported is the one the ranks agreed on
    assert summary["pruned"]["heads_per_block"] == [len(h) for h in ranks[0]["plan"]["heads"]]
    assert summary["pruned"]["mlp_hidden_per_block"] == [len(n) for n in ranks[0]["plan"]["neurons"]]
    assert json.loads((run_dir / "stages" / "admm.json").read_text())["plan"] == ranks[0]["plan"]
    assert (run_dir / "pruned" / "model.safetensors").is_file()


@pytest.mark.ddp
@pytest.mark.slow
def test_two_ranks_keep_the_learnable_gates_identical(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "run.py"), *SETTINGS, "pruning.method=gates", "trainer=ddp_sim"]
    result = subprocess.run(
        [*command, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((run_dir / "ranks" / f"gates.rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["agree"] for r in ranks)
    assert "gates" in ranks[0]["digests"] and ranks[0]["digests"] == ranks[1]["digests"]


class SkewRankOne(L.Callback):
    """Test double for a real fault: rank 1's U drifts from rank 0's at the end of training."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == 1:
            name = pl_module.admm.names[0]
            pl_module.admm.u(name).add_(1e-3)


@pytest.mark.ddp
def test_ranks_that_differ_fail_loudly(tmp_path):
    cfg, model, dm = setup(tmp_path)
    module = GohspModule(model, cfg, "admm", budget=Budget(0.4, count_params(model)))
    strategy = DDPStrategy(start_method="spawn", process_group_backend="gloo", broadcast_buffers=False)
    fit = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[SkewRankOne(), RankAgreementCallback(tmp_path / "ranks")],
    )
    with pytest.raises(Exception, match=r"ranks disagree at the end of the admm stage on buffers"):
        fit.fit(module, datamodule=dm)
    ranks = [json.loads((tmp_path / "ranks" / f"admm.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["digests"]["plan"] == ranks[1]["digests"]["plan"]
    assert ranks[0]["digests"]["buffers"] != ranks[1]["digests"]["buffers"]
    assert json.loads((tmp_path / "ranks" / "admm.json").read_text())["differ"].keys() == {"buffers"}
