"""GohspModule: one LightningModule for the three training stages of the pipeline.

* ``dense``: plain training (the dense baseline, or warm-up when no pretrained weights exist);
* ``admm``: task loss + rho/2 ||W - Z + U||^2; Z and U are updated every ``admm.update_every_n_steps``
  optimizer steps (or, when that is 0, every ``admm.update_every_n_epochs``); the structured masks follow
  the support of Z;
* ``gates``: task loss + ``gates.penalty`` x the budget shortfall of learnable gates (one per head and MLP
  neuron) multiplied into the forward; the gate temperature anneals from 1 to ``gates.temperature_end``;
* ``finetune``: the physically pruned model, with knowledge distillation from a frozen teacher.

Why one module over 300 lines: one LightningModule for every stage keeps one checkpoint format and one
optimizer set-up; its length is the four stages' steps.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from .config import RunConfig, to_dict
from .data import mixup_fn
from .pruning import (
    AdmmState,
    Budget,
    PrunePlan,
    StructuredMasks,
    StructuredProjector,
    apply_plan,
    find_blocks,
    prunable_weights,
)
from .pruning.distill import distillation_loss
from .pruning.gates import LearnableGates, budget_penalty, expected_removed
from .pruning.projection import removed_cost
from .pruning.rankers import fixed_unit_scores
from .pruning.units import BlockUnits

STAGES = ("dense", "admm", "gates", "finetune")


def projection_options(cfg: RunConfig, blocks: list[BlockUnits], budget: Budget) -> dict[str, Any]:
    """:func:`~.pruning.projection.project`'s options from the config, built in this one place for every method
    (the head scores aside: they come from the ranking)."""
    p = cfg.pruning
    return {
        "alpha": p.alpha,
        "allocation": p.allocation,
        "structures": p.structures,
        "round_to": p.round_to,
        "compete": p.compete,
        "fixed_scores": fixed_unit_scores(p.ranker, blocks, budget, cfg.seed),
    }


class GohspModule(L.LightningModule):
    """Training for one stage. ``budget`` is needed for ``admm``; ``teacher`` enables KD in ``finetune``."""

    def __init__(
        self,
        model: nn.Module,
        cfg: RunConfig,
        stage: str,
        budget: Budget | None = None,
        teacher: nn.Module | None = None,
        plan: PrunePlan | None = None,
    ) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage={stage!r}; choose one of {', '.join(STAGES)}")
        if stage in ("admm", "gates") and budget is None:
            raise ValueError(f"the {stage} stage needs a budget")
        self.save_hyperparameters({"stage": stage, "config": to_dict(cfg)})
        self.model, self.cfg, self.stage, self.budget = model, cfg, stage, budget
        self.teacher = teacher
        self.plan = plan
        self.blocks = find_blocks(model)
        self.masks = StructuredMasks(self.blocks)
        self.register_buffer("head_scores", torch.ones(sum(b.num_heads for b in self.blocks), dtype=torch.float64))
        self.register_buffer("head_scores_set", torch.tensor(False))
        self.admm = AdmmState(prunable_weights(self.blocks), cfg.admm.rho) if stage == "admm" else None
        p = cfg.pruning
        gated = stage == "gates"
        self.gates = (
            LearnableGates(self.blocks, cfg.gates.init, structures=p.structures, kind=cfg.gates.kind) if gated else None
        )
        num_classes = cfg.model.num_classes
        self.mixup = mixup_fn(cfg.data, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")
        # FLOPs of the model's forward pass over one batch, set by the pipeline (see flops_per_batch)
        self.forward_flops_per_batch: int | None = None
        # the ADMM stage: top-1 with the structures outside the support of Z switched off
        self.val_top1_cut = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")

    @property
    def flops_per_batch(self) -> int | None:
        """For Lightning's ThroughputMonitor: a training step costs about 3 forward passes (forward, and backward
        through activations and weights), an evaluation step one; a KD teacher's forward is not counted."""
        if self.forward_flops_per_batch is None:
            return None
        return self.forward_flops_per_batch * (3 if self.training else 1)

    # ----------------------------------------------------------------- head scores and projection
    def set_head_scores(self, flat: torch.Tensor | None) -> None:
        """Store the ranking (flat over blocks); ``None`` means weight magnitude only."""
        if flat is not None:
            self.head_scores.copy_(flat.to(self.head_scores))
        self.head_scores_set.fill_(flat is not None)

    def head_score_list(self) -> list[torch.Tensor] | None:
        if not bool(self.head_scores_set):
            return None
        return list(self.head_scores.cpu().split([b.num_heads for b in self.blocks]))

    def projector(self) -> StructuredProjector:
        """``Proj_S`` with the current head scores; ``pruning.ranker=random`` fixes the order from the seed."""
        options = projection_options(self.cfg, self.blocks, self.budget)
        return StructuredProjector(self.blocks, self.budget, head_scores=self.head_score_list(), **options)

    def final_plan(self) -> PrunePlan:
        """The hard-prune plan: the projection of the trained weights W (not W + U)."""
        return self.projector().plan(prunable_weights(self.blocks))

    # ----------------------------------------------------------------- training
    def train(self, mode: bool = True) -> GohspModule:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_model(self) -> None:
        """``compile=<backend>``: compile the model in place (``nn.Module.compile``), so parameter names,
        checkpoints, hooks (masks, gates, head statistics) and the surgery see the same modules as in eager."""
        if self.cfg.compile is not None:
            self.model.compile(backend=self.cfg.compile)

    def on_fit_start(self) -> None:
        if self.gates is not None:
            self.gates.attach(self.blocks)

    def on_fit_end(self) -> None:
        if self.gates is not None:
            self.gates.detach()

    def on_train_start(self) -> None:
        if self.admm is not None and not bool(self.admm.initialized):
            self.admm.reset(prunable_weights(self.blocks), self._project_and_mask)

    def on_train_epoch_start(self) -> None:
        if self.gates is not None:  # linear from 1 at the first epoch to temperature_end at the last
            last = max(int(self.trainer.max_epochs or 1) - 1, 1)
            end = self.cfg.gates.temperature_end
            self.gates.temperature.fill_(1 + (end - 1) * min(self.current_epoch / last, 1.0))

    def _project_and_mask(self, flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        projector = self.projector()
        projected = projector(flat)
        self.masks.set_plan(projector.last_plan)
        return projected

    def _task_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 2:  # mixup/cutmix soft targets
            return SoftTargetCrossEntropy()(logits, target)
        return F.cross_entropy(logits, target, label_smoothing=self.cfg.data.label_smoothing)

    def _distill_loss(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return distillation_loss(logits, teacher_logits, self.cfg.distill.kind, self.cfg.distill.temperature)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        logits = self.model(x)
        task = self._task_loss(logits, y)
        loss = task
        if self.teacher is not None:
            w = self.cfg.distill.weight
            loss = (1 - w) * task + w * self._distill_loss(logits, x)
        logs = {"task_loss": task.detach()}
        if self.admm is not None:
            penalty = self.admm.penalty(prunable_weights(self.blocks))
            loss = loss + penalty
            logs["penalty"] = penalty.detach()
        if self.gates is not None:
            penalty = self.cfg.gates.penalty * budget_penalty(self.gates, self.blocks, self.budget)
            loss = loss + penalty
            logs["penalty"] = penalty.detach()
            removed = expected_removed(self.gates, self.blocks, self.budget).detach()
            logs["expected_sparsity"] = removed / self.budget.total
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss ({loss.item()}) in stage {self.stage!r} at epoch {self.current_epoch}, "
                f"step {self.global_step}; lower optim.lr or check the data"
            )
        logs["loss"] = loss.detach()
        # per step this rank's value (no all-reduce on the hot path); per epoch the mean over all ranks' batches,
        # reduced once at the epoch's end
        self.log_dict(
            {f"{self.stage}/{k}_step": v for k, v in logs.items()}, prog_bar=True, on_step=True, on_epoch=False
        )
        self.log_dict(
            {f"{self.stage}/{k}_epoch": v for k, v in logs.items()}, on_step=False, on_epoch=True, sync_dist=True
        )
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        every = self.cfg.admm.update_every_n_steps
        if self.admm is not None and every > 0 and self.global_step % every == 0:
            self._admm_update()

    def on_train_epoch_end(self) -> None:
        a = self.cfg.admm
        if (
            self.admm is not None
            and a.update_every_n_steps == 0
            and (self.current_epoch + 1) % a.update_every_n_epochs == 0
        ):
            self._admm_update()

    def _admm_update(self) -> None:
        """Z = Proj_S(W + U), U += W - Z, rho *= growth; the masks follow the support of Z."""
        weights = prunable_weights(self.blocks)
        self.admm.update(weights, self._project_and_mask)
        self.admm.scale_rho(self.cfg.admm.rho_growth, self.cfg.admm.rho_max)
        self.log_dict(
            {
                "admm/primal_residual": self.admm.primal_residual(weights),
                "admm/rho": float(self.admm.rho),
                "admm/sparsity": self.current_sparsity(),
            },
            sync_dist=True,  # equal on every rank by construction; synced so Lightning need not warn
        )

    def current_sparsity(self) -> float:
        """Fraction of the budget unit that the current masks (support of Z) remove."""
        if self.budget is None:
            return 0.0
        return removed_cost(self.blocks, self.masks.plan(), self.budget) / self.budget.total

    # ----------------------------------------------------------------- evaluation
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.val_top1.update(logits, y)
        self.log(f"{self.stage}/val_loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        self.log(f"{self.stage}/val_top1", self.val_top1, on_epoch=True, prog_bar=True)
        if self.admm is not None:
            # W is dense during ADMM: val_top1 says nothing of what the cut will cost; this does
            attached = self.masks.attached
            self.masks.attach(self.blocks)
            try:
                self.val_top1_cut.update(self.model(x), y)
            finally:
                if not attached:
                    self.masks.detach()
            self.log("admm/val_top1_cut", self.val_top1_cut, on_epoch=True, prog_bar=True)

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg.optim
        lr = o.finetune_lr if self.stage == "finetune" and o.finetune_lr is not None else o.lr
        optimizer = create_optimizer_v2(self.model, opt=o.opt, lr=lr, weight_decay=o.weight_decay, momentum=o.momentum)
        if self.gates is not None:  # before the scheduler, which then scales the gates' lr like the weights'
            optimizer.add_param_group(
                {"params": list(self.gates.parameters()), "lr": self.cfg.gates.lr, "weight_decay": 0.0}
            )
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        per_step = o.step_on == "step"
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=o.sched,
            num_epochs=epochs,
            warmup_epochs=o.warmup_epochs,
            min_lr=o.min_lr,
            step_on_epochs=not per_step,
            updates_per_epoch=max(int(self.trainer.estimated_stepping_batches) // epochs, 1) if per_step else 0,
        )
        interval = "step" if per_step else "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """timm schedulers take the position explicitly: the epoch, or the optimizer step (``optim.step_on``)."""
        if self.cfg.optim.step_on == "step":
            scheduler.step_update(num_updates=self.global_step)
        else:
            scheduler.step(epoch=self.current_epoch + 1)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the plan (a pruned stage's shapes) and the RNG states, as tensors and primitives only."""
        if self.plan is not None:
            checkpoint["gohsp_plan"] = self.plan.to_dict()
        checkpoint["gohsp_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Prune to the stored plan before Lightning loads the weights, and restore the RNG states.

        Lightning calls this before ``load_state_dict`` and before the optimizer exists, so a dense model
        given to a fine-tune module can take a pruned checkpoint. The RNGs make a resumed epoch draw the
        same batches and augmentations as the epoch of an uninterrupted run.
        """
        stored = checkpoint.get("gohsp_plan")
        if stored is not None:
            self._adopt_plan(PrunePlan.from_dict(stored))
        if "gohsp_rng" in checkpoint:
            set_rng_state(checkpoint["gohsp_rng"])

    def _adopt_plan(self, plan: PrunePlan) -> None:
        if self.plan is not None and self.plan != plan:
            raise ValueError(
                f"the checkpoint was pruned to heads {plan.heads_per_block}, MLP {plan.mlp_hidden_per_block} but this "
                f"module to heads {self.plan.heads_per_block}, MLP {self.plan.mlp_hidden_per_block}"
            )
        shapes = ([b.num_heads for b in self.blocks], [b.hidden for b in self.blocks])
        if shapes != (plan.heads_per_block, plan.mlp_hidden_per_block):
            plan.check(self.blocks)
            apply_plan(self.model, plan)
            self.blocks = find_blocks(self.model)
            self.masks = StructuredMasks(self.blocks)
            self.head_scores = torch.ones(sum(b.num_heads for b in self.blocks), dtype=torch.float64)
        self.plan = plan


def rng_state() -> dict[str, Any]:
    """torch (CPU and this process's CUDA device), Python and NumPy RNG states, loadable with weights_only=True."""
    version, python, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(python, dtype=torch.int64),
        "python_meta": [version, gauss],
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_meta": [int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state` (a CUDA state is restored only where CUDA is in use)."""
    torch.set_rng_state(state["torch"].cpu())
    version, gauss = state["python_meta"]
    random.setstate((version, tuple(int(x) for x in state["python"].tolist()), gauss))
    pos, has_gauss, cached = state["numpy_meta"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(state["cuda"].cpu())
