"""Resume: a real ``python run.py`` killed in any stage, or between stages, ends like a run that was not killed.

The slow tests kill a run with a signal as soon as the targeted stage has a checkpoint (or, for the kill
between stages, as soon as the dense stage's marker exists), resume it with ``resume_dir=<run dir>`` and
compare the summary with an uninterrupted run of the same seed. On CPU with ``trainer.deterministic=true``
and ``data.num_workers=0`` the whole summary matches exactly, val top-1 included: every stage is seeded
on its own and checkpoints carry the RNG states, so a resumed epoch draws the same batches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from gohsp_lightning.callbacks import HeadRankingCallback
from gohsp_lightning.data import CalibrationBatches
from gohsp_lightning.models import create_student
from gohsp_lightning.module import GohspModule
from gohsp_lightning.pruning import Budget, PrunePlan, apply_plan, count_params, find_blocks

from .conftest import ROOT, TINY_MODEL
from .test_module import setup, trainer

RUN = [sys.executable, str(ROOT / "run.py")]
# A tiny real run: 2 dense, 3 ADMM and 2 fine-tune epochs of 4 batches; checkpoints on, everything seeded.
SETTINGS = [
    "logger=csv",
    "callbacks=model_checkpoint",
    "trainer.enable_progress_bar=false",
    "trainer.deterministic=true",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "data.num_workers=0",
    *TINY_MODEL,
    "pruning.dense_epochs=2",
    "pruning.admm_epochs=3",
    "pruning.finetune_epochs=2",
    "seed=3",
]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}


def run_py(run_dir: Path, *extra: str) -> subprocess.Popen:
    log = open(run_dir.parent / f"{run_dir.name}.out", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [*RUN, *SETTINGS, f"hydra.run.dir={run_dir}", *extra], cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> int:
    code = proc.wait(timeout=timeout)
    proc.stdout and proc.stdout.close()
    return code


def output(run_dir: Path) -> str:
    return (run_dir.parent / f"{run_dir.name}.out").read_text()


def kill_when(proc: subprocess.Popen, trigger: Path, sig: int, timeout: float = 600) -> None:
    """Send ``sig`` to ``proc`` as soon as ``trigger`` exists; fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while not trigger.exists():
        assert proc.poll() is None, f"the run ended before {trigger} appeared"
        assert time.monotonic() < deadline, f"{trigger} did not appear in {timeout} s"
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=120)


def plan_of(summary: dict) -> dict:
    pruned = summary["pruned"]
    return {k: pruned[k] for k in ("heads_per_block", "mlp_hidden_per_block", "params", "flops")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = run_py(run_dir)
    assert finish(proc) == 0, output(run_dir)
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("trigger", "unfinished", "sig"),
    [
        ("checkpoints/dense/last.ckpt", "dense", signal.SIGKILL),  # inside the dense stage
        ("stages/dense.json", "admm", signal.SIGKILL),  # between stages: dense done, ADMM not checkpointed
        ("checkpoints/admm/last.ckpt", "admm", signal.SIGTERM),  # inside ADMM (Lightning's SIGTERM handling)
        ("checkpoints/finetune/last.ckpt", "finetune", signal.SIGKILL),  # inside the pruned stage
    ],
    ids=["in-dense", "between-dense-and-admm", "in-admm-sigterm", "in-finetune"],
)
def test_killed_run_resumes_to_the_same_summary(uninterrupted, tmp_path, trigger, unfinished, sig):
    run_dir = tmp_path / "run"
    proc = run_py(run_dir)
    kill_when(proc, run_dir / trigger, sig)
    assert proc.returncode != 0
    # the kill landed where intended: the targeted stage never finished, and no summary exists
    assert not (run_dir / "stages" / f"{unfinished}.json").exists()
    assert not (run_dir / "summary.json").exists()
    if unfinished == "admm" and trigger.startswith("stages"):
        assert not (run_dir / "checkpoints" / "admm" / "last.ckpt").exists()
    before = {p: p.read_bytes() for p in (run_dir / "stages").glob("*.json")}

    resumed = run_py(tmp_path / "resume", f"resume_dir={run_dir}")
    assert finish(resumed) == 0, output(tmp_path / "resume")
    log = output(tmp_path / "resume")
    assert f"[gohsp] resuming {run_dir}" in log
    # finished stages were skipped (their markers are untouched), the interrupted one continued
    assert all(p.read_bytes() == data for p, data in before.items())
    if trigger.startswith("checkpoints"):
        assert f"from {run_dir / trigger}" in log
    assert log.count("ranked heads") == (1 if unfinished == "dense" or trigger.startswith("stages") else 0)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert plan_of(summary) == plan_of(uninterrupted)
    assert summary["dense"] == uninterrupted["dense"]
    assert summary["pruned"]["val_top1"] == uninterrupted["pruned"]["val_top1"]
    assert summary["ranks_agree"]["agree"]
    assert summary == {**uninterrupted, "export_dir": summary["export_dir"]}
    # the interrupted run's logs are kept; the resumed run logged beside them
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert (run_dir / "resume-1" / "csv" / "metrics.csv").is_file()


def test_resumed_admm_stage_keeps_its_ranking_and_state(tmp_path):
    """Resuming mid-ADMM restores the callback (no re-ranking), the scores, Z/U and the masks."""
    cfg, model, dm = setup(tmp_path)
    budget = Budget(0.4, count_params(model))
    first = GohspModule(model, cfg, "admm", budget=budget)
    ranking = HeadRankingCallback(CalibrationBatches(dm, 64, 32), cfg.ranking, "taylor")
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "admm", save_last=True)
    trainer(tmp_path, 1, [ranking, ckpt], limit_train_batches=2, limit_val_batches=1).fit(first, datamodule=dm)
    saved = torch.load(tmp_path / "admm" / "last.ckpt", weights_only=True)

    _, fresh_model, _ = setup(tmp_path)
    second = GohspModule(fresh_model, cfg, "admm", budget=budget)
    again = HeadRankingCallback(CalibrationBatches(dm, 64, 32), cfg.ranking, "taylor")
    resumed = trainer(tmp_path, 2, [again], limit_train_batches=2, limit_val_batches=1)
    resumed.fit(second, datamodule=dm, ckpt_path=tmp_path / "admm" / "last.ckpt", weights_only=True)
    assert resumed.current_epoch == 2  # one more epoch ran
    assert again.ranked_epochs == [0]  # ...without ranking again
    assert [torch.equal(a, b) for a, b in zip(again.local_scores, ranking.local_scores, strict=True)] == [True] * 3
    assert torch.equal(second.head_scores, saved["state_dict"]["head_scores"])
    assert bool(second.head_scores_set) and bool(second.admm.initialized)
    assert int(second.admm.updates) == 2  # Z/U were restored after one update, then updated once more


def test_finetune_checkpoint_prunes_a_dense_module_before_its_weights_load(tmp_path):
    """on_load_checkpoint re-applies the stored plan, so a dense model takes a pruned-stage checkpoint."""
    cfg, model, dm = setup(tmp_path)
    blocks = find_blocks(model)
    plan = PrunePlan(
        heads=((0, 2), (1,), (0, 1, 3)),
        neurons=tuple(tuple(range(0, b.hidden, 2)) for b in blocks),
    )
    apply_plan(model, plan)
    module = GohspModule(model, cfg, "finetune", plan=plan)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ft", save_last=True)
    trainer(tmp_path, 1, [ckpt], limit_train_batches=2, limit_val_batches=1).fit(module, datamodule=dm)
    checkpoint = torch.load(tmp_path / "ft" / "last.ckpt", weights_only=True)
    assert checkpoint["gohsp_plan"] == plan.to_dict()
    assert set(checkpoint["gohsp_rng"]) >= {"torch", "python", "numpy"}

    _, dense, _ = setup(tmp_path)
    target = GohspModule(dense, cfg, "finetune")
    target.on_load_checkpoint(checkpoint)
    target.load_state_dict(checkpoint["state_dict"], strict=True)
    assert [b.num_heads for b in find_blocks(dense)] == [2, 1, 3]
    assert target.plan == plan
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target.eval()(images), module.eval()(images))

    other = PrunePlan(heads=((0,), (1,), (2,)), neurons=plan.neurons)
    with pytest.raises(ValueError, match="the checkpoint was pruned to heads"):
        GohspModule(apply_plan(create_student(cfg.model), other), cfg, "finetune", plan=other).on_load_checkpoint(
            checkpoint
        )
