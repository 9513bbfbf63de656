"""The LightningModule and the ranking callback on real images with a tiny real ViT."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from gohsp_lightning.callbacks import HeadRankingCallback, broadcast_from_rank_zero
from gohsp_lightning.data import ImageDataModule, resolve_data_config
from gohsp_lightning.models import create_student
from gohsp_lightning.module import GohspModule
from gohsp_lightning.pruning import Budget, apply_plan, count_params, find_blocks
from gohsp_lightning.pruning.quality import per_image_outcomes

from .conftest import FAST, compose_run


class EpochMetrics(L.Callback):
    """Keeps a copy of the epoch-level metrics after every training epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items()})


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"))


def setup(tmp_path, *overrides):
    cfg = compose_run([*FAST, *overrides], tmp_path)
    L.seed_everything(0)
    model = create_student(cfg.model)
    dm = ImageDataModule(cfg.data, resolve_data_config(cfg.data, model), cfg.model.num_classes)
    return cfg, model, dm


def trainer(tmp_path, epochs, callbacks, **kwargs):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=callbacks,
        **kwargs,
    )


def test_admm_penalty_and_residual_fall_while_training(tmp_path):
    # the cosine/forward/uniform formulation: on this random-init model the cka/backward/energy scores kept moving
    # the support between the 5 per-epoch Z updates, and the penalty plateaued (0.43 -> 0.44)
    graph = ["ranking.similarity=cosine", "ranking.chain=forward", "ranking.teleport=uniform"]
    cfg, model, dm = setup(tmp_path, "admm.rho=0.05", "optim.lr=2e-3", "admm.update_every_n_steps=0", *graph)
    module = GohspModule(model, cfg, "admm", budget=Budget(0.4, count_params(model)))
    ranking = HeadRankingCallback(lambda: iter(dm.calibration_loader(64, 32)), cfg.ranking, "graph")
    metrics = EpochMetrics()
    fit = trainer(
        tmp_path, 5, [ranking, metrics], limit_train_batches=15, limit_val_batches=1, enable_checkpointing=False
    )
    fit.fit(module, datamodule=dm)
    penalties = [m["admm/penalty_epoch"] for m in metrics.epochs]
    # the module logs the residual after the callbacks' epoch-end hook: read it one epoch late, then at the end
    final = {k: float(v) for k, v in fit.callback_metrics.items()}
    residuals = [m["admm/primal_residual"] for m in metrics.epochs if "admm/primal_residual" in m] + [
        final["admm/primal_residual"]
    ]
    # balanced head/neuron competition can move the support between Z updates, so the fall is not monotone
    assert penalties[-1] < 0.75 * penalties[0], penalties
    assert residuals[-1] < residuals[0], residuals
    # the callback ranked once, at the start of the stage, and the scores reached the module
    assert ranking.ranked_epochs == [0]
    assert bool(module.head_scores_set)
    assert abs(float(module.head_scores.mean()) - 1.0) < 1e-6
    # the masks follow the support of Z, at the budget
    assert abs(module.current_sparsity() - 0.4) < 0.01


def test_per_step_logs_stay_on_their_rank_and_epoch_logs_sync_once(tmp_path, monkeypatch):
    """An all-reduce per metric per step stalls multi-GPU training: step values are logged as the rank's own,
    epoch values are reduced once at the epoch's end."""
    cfg, model, dm = setup(tmp_path)
    module = GohspModule(model, cfg, "admm", budget=Budget(0.4, count_params(model)))
    logged: dict[str, dict] = {}
    real_log = module.log

    def spy(name: str, value: torch.Tensor, **kwargs) -> None:
        logged[name] = kwargs
        real_log(name, value, **kwargs)

    monkeypatch.setattr(module, "log", spy)
    trainer(tmp_path, 1, [], limit_train_batches=2, limit_val_batches=1, enable_checkpointing=False).fit(module, dm)
    per_step = {name: kw for name, kw in logged.items() if kw.get("on_step")}
    assert {"admm/loss_step", "admm/penalty_step", "admm/task_loss_step"} <= set(per_step)
    assert not any(kw.get("sync_dist") for kw in per_step.values())
    assert logged["admm/loss_epoch"]["sync_dist"] and not logged["admm/loss_epoch"]["on_step"]


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_head_scores_travel_to_other_ranks_as_a_cpu_tensor(device):
    """Lightning's broadcast pickles what it sends: a CUDA tensor would land on rank 0's GPU on every rank.
    The helper sends a CPU copy and hands the result back on the caller's device (scripts/gpu_check.sh runs
    the CUDA case)."""
    sent: list[torch.device] = []

    class RecordingStrategy(SingleDeviceStrategy):
        def broadcast(self, obj, src=0):
            sent.append(obj.device)
            return super().broadcast(obj, src)

    scores = torch.arange(6, dtype=torch.float64, device=device)
    got = broadcast_from_rank_zero(RecordingStrategy(device=torch.device(device)), scores)
    assert sent == [torch.device("cpu")]
    assert got.device == scores.device and torch.equal(got.cpu(), scores.cpu())


def test_checkpoints_load_with_weights_only(tmp_path):
    cfg, model, dm = setup(tmp_path)
    budget = Budget(0.3, count_params(model))
    admm = GohspModule(model, cfg, "admm", budget=budget)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "admm", save_last=True)
    trainer(tmp_path, 1, [ckpt], limit_train_batches=2, limit_val_batches=1).fit(admm, datamodule=dm)
    state = torch.load(tmp_path / "admm" / "last.ckpt", weights_only=True)
    assert any(k.startswith("admm.z__") for k in state["state_dict"])
    assert state["hyper_parameters"]["config"]["pruning"]["sparsity"] == 0.4

    plan = admm.final_plan()
    apply_plan(model, plan)
    finetune = GohspModule(model, cfg, "finetune", teacher=create_student(cfg.model).eval(), plan=plan)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ft", save_last=True)
    trainer(tmp_path, 1, [ckpt], limit_train_batches=2, limit_val_batches=1).fit(finetune, datamodule=dm)
    state = torch.load(tmp_path / "ft" / "last.ckpt", weights_only=True)
    assert state["gohsp_plan"] == plan.to_dict()
    heads = [b.num_heads for b in find_blocks(model)]
    assert heads == plan.heads_per_block


def test_calibration_set_is_fixed_and_covers_every_class(tmp_path):
    _, _, dm = setup(tmp_path)
    first = [y for _, y in dm.calibration_loader(100, 32)]
    again = [y for _, y in dm.calibration_loader(100, 32)]
    labels = torch.cat(first)
    assert torch.equal(labels, torch.cat(again))
    assert len(labels) == 100 and set(labels.tolist()) == set(range(10))


def test_admm_updates_every_n_steps(tmp_path, monkeypatch):
    """update_every_n_steps=2 over 7 steps: Z and U move after steps 2, 4, 6, and not at the epoch's end."""
    cfg, model, dm = setup(tmp_path, "admm.update_every_n_steps=2")
    module = GohspModule(model, cfg, "admm", budget=Budget(0.4, count_params(model)))
    updates: list[int] = []
    real = module._admm_update
    monkeypatch.setattr(module, "_admm_update", lambda: (updates.append(module.global_step), real())[1])
    fit = trainer(tmp_path, 1, [], limit_train_batches=7, limit_val_batches=1, enable_checkpointing=False)
    fit.fit(module, datamodule=dm)
    assert updates == [2, 4, 6]
    # the same run with the per-epoch interval updates once
    cfg, model, dm = setup(tmp_path, "admm.update_every_n_steps=0")
    epoch_module = GohspModule(model, cfg, "admm", budget=Budget(0.4, count_params(model)))
    updates.clear()
    real_epoch = epoch_module._admm_update
    monkeypatch.setattr(epoch_module, "_admm_update", lambda: (updates.append(1), real_epoch())[1])
    trainer(tmp_path, 1, [], limit_train_batches=7, limit_val_batches=1, enable_checkpointing=False).fit(
        epoch_module, datamodule=dm
    )
    assert updates == [1]


def test_admm_validation_reports_what_the_cut_costs(tmp_path):
    """admm/val_top1 is the dense W; admm/val_top1_cut switches off what Z's support drops, as the prune will."""
    cfg, model, dm = setup(tmp_path, "admm.rho=1e-9")
    module = GohspModule(model, cfg, "admm", budget=Budget(0.6, count_params(model)))
    fit = trainer(tmp_path, 1, [], limit_train_batches=2, limit_val_batches=2, enable_checkpointing=False)
    fit.fit(module, datamodule=dm)
    metrics = {k: float(v) for k, v in fit.callback_metrics.items()}
    assert {"admm/val_top1", "admm/val_top1_cut"} <= set(metrics)
    # the cut model is exactly the masked one: the same number as a validation with the masks attached
    module.masks.attach(module.blocks)
    batches = list(itertools.islice(iter(dm.val_dataloader()), 2))
    masked = float(per_image_outcomes(module.model, batches)[1].mean())
    module.masks.detach()
    assert metrics["admm/val_top1_cut"] == pytest.approx(masked)
    assert not module.masks.attached


def test_step_schedule_warms_up_per_step(tmp_path):
    cfg, model, dm = setup(tmp_path, "optim.step_on=step", "optim.warmup_epochs=1", "optim.lr=1e-3")
    module = GohspModule(model, cfg, "dense")
    lrs: list[float] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer(tmp_path, 2, [Record()], limit_train_batches=5, limit_val_batches=1, enable_checkpointing=False).fit(
        module, datamodule=dm
    )
    # the learning rate rises within the first epoch (per-step warm-up), then decays
    assert lrs[0] < lrs[1] < lrs[2] < lrs[4]
    assert lrs[-1] < max(lrs)


def test_ranking_runs_under_the_stages_precision(tmp_path):
    """bf16-mixed: the calibration forwards run under the same autocast as the training steps."""
    cfg, model, dm = setup(tmp_path)
    module = GohspModule(model, cfg, "admm", budget=Budget(0.4, count_params(model)))
    seen: list[torch.dtype] = []
    model.blocks[0].attn.qkv.register_forward_hook(
        lambda m, _i, out: None if model.training else seen.append(out.dtype)
    )
    ranking = HeadRankingCallback(lambda: iter(dm.calibration_loader(16, 8)), cfg.ranking, "graph")
    fit = trainer(
        tmp_path,
        1,
        [ranking],
        precision="bf16-mixed",
        limit_train_batches=1,
        limit_val_batches=0,
        enable_checkpointing=False,
    )
    fit.fit(module, datamodule=dm)
    assert ranking.ranked_epochs == [0] and bool(module.head_scores_set)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(torch.isfinite(s) for s in module.head_scores)


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_option_compiles_the_stage_model_in_place(tmp_path, backend):
    cfg, model, dm = setup(tmp_path, f"compile={backend}")
    names = list(model.state_dict())
    module = GohspModule(model, cfg, "dense")
    compiling: list[bool] = []
    model.blocks[0].register_forward_pre_hook(lambda _m, _a: compiling.append(torch.compiler.is_compiling()))
    fit = trainer(tmp_path, 1, [], limit_train_batches=2, limit_val_batches=1, enable_checkpointing=False)
    fit.fit(module, datamodule=dm)
    assert True in compiling  # the forward went through torch.compile (Dynamo traced the block)
    assert list(model.state_dict()) == names  # same parameter names: checkpoints and exports unchanged
    with pytest.raises(ValueError, match=r"^compile='inductr' is not allowed; choose one of .*inductor"):
        compose_run([*FAST, "compile=inductr"], tmp_path)
