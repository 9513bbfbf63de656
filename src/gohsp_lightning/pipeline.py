"""The GOHSP pipeline: (dense) -> rank + ADMM -> hard prune -> KD fine-tune -> export + summary.

Every stage is its own ``Trainer.fit``; hard pruning happens between two fits, never inside one.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import hydra.utils
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import nn

from .callbacks import HeadRankingCallback
from .config import RunConfig, to_dict
from .data import ImageDataModule, resolve_data_config
from .models import create_student, create_teacher, freeze
from .module import GohspModule
from .pruning import (
    Budget,
    PrunePlan,
    apply_plan,
    check_feasible,
    count_flops,
    count_params,
    find_blocks,
    num_tokens,
    project,
    save_pruned,
)
from .pruning.files import atomic_write_json
from .pruning.rankers import rank_heads
from .pruning.units import block_weights
from .tracking import build_loggers, closing_loggers

CHECKPOINT_TARGET = "lightning.pytorch.callbacks.ModelCheckpoint"


class Pipeline:
    """Runs one experiment in ``cfg.output_dir``; :meth:`run` returns the summary dict."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.output_dir)
        self.loggers: list = []

    # ----------------------------------------------------------------- building blocks
    def _trainer(self, stage: str, epochs: int, extra_callbacks: list | None = None) -> L.Trainer:
        callbacks = []
        for spec in self.cfg.callbacks.values():
            if not spec or "_target_" not in spec:
                continue
            overrides = (
                {"dirpath": str(self.run_dir / "checkpoints" / stage)} if spec["_target_"] == CHECKPOINT_TARGET else {}
            )
            callbacks.append(hydra.utils.instantiate(spec, **overrides))
        return hydra.utils.instantiate(
            self.cfg.trainer,
            max_epochs=epochs,
            logger=self.loggers or False,
            callbacks=callbacks + (extra_callbacks or []),
            default_root_dir=str(self.run_dir),
        )

    def _fit(self, module: GohspModule, dm: ImageDataModule, epochs: int, callbacks: list | None = None) -> float:
        """Train ``epochs`` epochs (or only evaluate when 0); returns val top-1 of the result."""
        trainer = self._trainer(module.stage, epochs, callbacks)
        key = f"{module.stage}/val_top1"
        if epochs > 0:
            trainer.fit(module, datamodule=dm)
            if key in trainer.callback_metrics:
                return float(trainer.callback_metrics[key])
        return float(trainer.validate(module, datamodule=dm, verbose=False)[0][key])

    def _teacher(self, dense: nn.Module) -> nn.Module | None:
        d = self.cfg.distill
        if not d.enabled:
            return None
        if d.teacher == "dense":
            return freeze(copy.deepcopy(dense))
        return create_teacher(d.teacher, self.cfg.model.num_classes, d.teacher_checkpoint)

    def _calibration(self, dm: ImageDataModule):
        r = self.cfg.ranking

        def batches():
            return iter(dm.calibration_loader(r.calibration_images, r.batch_size))

        return batches

    # ----------------------------------------------------------------- stages
    def _admm_plan(self, model: nn.Module, dm: ImageDataModule, budget: Budget) -> PrunePlan:
        cfg = self.cfg
        module = GohspModule(model, cfg, "admm", budget=budget)
        ranking = HeadRankingCallback(self._calibration(dm), cfg.ranking, cfg.pruning.ranker, cfg.seed)
        self._fit(module, dm, cfg.pruning.admm_epochs, [ranking])
        plan = module.final_plan()
        z_plan = module.masks.plan()
        agree = sum(a == b for a, b in zip(plan.heads + plan.neurons, z_plan.heads + z_plan.neurons, strict=True))
        rank_zero_info(f"[gohsp] final plan matches the support of Z in {agree}/{2 * len(plan.heads)} layers")
        return plan

    def _oneshot_plan(self, model: nn.Module, dm: ImageDataModule, budget: Budget) -> PrunePlan:
        cfg = self.cfg
        blocks = find_blocks(model)
        scores = rank_heads(
            cfg.pruning.ranker,
            model,
            blocks,
            self._calibration(dm),
            cfg.ranking.damping,
            cfg.ranking.normalize,
            cfg.seed,
        )
        weights = [block_weights(b) for b in blocks]
        p = cfg.pruning
        return project(blocks, weights, budget, scores, p.alpha, p.allocation, p.structures)

    # ----------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.cfg.pruning
        L.seed_everything(cfg.seed, workers=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        model = create_student(cfg.model)
        data_config = resolve_data_config(cfg.data, model)
        dm = ImageDataModule(cfg.data, data_config, cfg.model.num_classes)
        dm.setup()
        input_size = tuple(data_config["input_size"])
        dense_params, dense_flops = count_params(model), count_flops(model, input_size)
        budget = Budget(
            sparsity=p.sparsity,
            total=dense_params if p.budget == "params" else dense_flops,
            unit=p.budget,
            tokens=num_tokens(model),
        )
        if p.method != "dense":
            check_feasible(find_blocks(model), budget, p.structures)
        self.loggers = build_loggers(cfg.logger, self.run_dir, name=f"{cfg.name}-{p.method}-{p.sparsity}")
        with closing_loggers(self.loggers):
            for lg in self.loggers:
                lg.log_hyperparams(to_dict(cfg))
            dense_epochs = p.dense_epochs + (p.admm_epochs + p.finetune_epochs if p.method == "dense" else 0)
            dense_top1 = self._fit(GohspModule(model, cfg, "dense"), dm, dense_epochs)
            if p.method == "dense":
                plan = PrunePlan.dense(find_blocks(model))
                pruned_top1 = dense_top1
            else:
                teacher = self._teacher(model)
                plan = (
                    self._admm_plan(model, dm, budget) if p.method == "gohsp" else self._oneshot_plan(model, dm, budget)
                )
                apply_plan(model, plan)
                finetune = GohspModule(model, cfg, "finetune", teacher=teacher, plan=plan)
                pruned_top1 = self._fit(finetune, dm, p.finetune_epochs)
            return self._summary(model, plan, data_config, dense_params, dense_flops, dense_top1, pruned_top1)

    def _summary(
        self,
        model: nn.Module,
        plan: PrunePlan,
        data_config: dict[str, Any],
        dense_params: int,
        dense_flops: int,
        dense_top1: float,
        pruned_top1: float,
    ) -> dict[str, Any]:
        cfg = self.cfg
        model = model.cpu().eval()
        params, flops = count_params(model), count_flops(model, tuple(data_config["input_size"]))
        export_dir = self.run_dir / "pruned"
        summary = {
            "experiment": cfg.name,
            "model": cfg.model.name,
            "method": cfg.pruning.method,
            "ranker": cfg.pruning.ranker,
            "allocation": cfg.pruning.allocation,
            "sparsity": cfg.pruning.sparsity,
            "seed": cfg.seed,
            "dense": {"params": dense_params, "flops": dense_flops, "val_top1": dense_top1},
            "pruned": {
                "params": params,
                "flops": flops,
                "val_top1": pruned_top1,
                "heads_per_block": plan.heads_per_block,
                "mlp_hidden_per_block": plan.mlp_hidden_per_block,
            },
            "param_reduction": 1 - params / dense_params,
            "flops_reduction": 1 - flops / dense_flops,
            "export_dir": str(export_dir),
        }
        if rank_zero_only.rank == 0:
            kwargs = {**cfg.model.kwargs, "num_classes": cfg.model.num_classes}
            save_pruned(export_dir, model, plan, cfg.model.name, kwargs, data_config, extra={"summary": summary})
            atomic_write_json(self.run_dir / "summary.json", summary)
            rank_zero_info(
                f"[gohsp] params {dense_params} -> {params} ({summary['param_reduction']:.1%} fewer), "
                f"val top1 {dense_top1:.4f} -> {pruned_top1:.4f}; exported to {export_dir}"
            )
        return summary


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run the configured experiment; returns the summary (also written to ``<output_dir>/summary.json``)."""
    torch.set_float32_matmul_precision("high")
    # the frozen KD teacher is in eval mode on purpose
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    return Pipeline(cfg).run()
