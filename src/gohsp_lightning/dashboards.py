"""W&B dashboards: what pruning did to the model, as images, tables and run-summary values.

The pipeline instantiates this callback afresh for every stage, all logging to the one W&B run:

* ``dense``: the dense model's size goes into the run summary (``dense/params``, ``dense/heads_per_block``, ...);
* ``admm``: kept heads and MLP width per block after every Z update, as a heatmap over epochs
  (``dashboards/admm_structure``) and a table; one head-score heatmap per ranking pass
  (``dashboards/head_scores``, from :class:`~gohsp_lightning.callbacks.HeadRankingCallback`'s history);
* ``gates``: the head gates, block by head, after every epoch (``dashboards/gate_values``), and the open
  gates (> 0.5) per block over epochs as a structure heatmap and table (``dashboards/gates_structure``);
* ``finetune``: the pruned structure (``dashboards/final_structure`` + table) and the final summary
  (``final/params``, ``final/flops``, ``final/val_top1``, ``final/param_reduction``, kept heads and widths).

The penalty and sparsity curves are the module's own ``admm/penalty`` and ``admm/sparsity`` metrics. Sweep
runs share a W&B group (see :func:`gohsp_lightning.tracking.build_loggers`). Without a
:class:`~lightning.pytorch.loggers.WandbLogger` (e.g. CSV only) the callback does nothing, and only
rank 0 ever logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from .callbacks import HeadRankingCallback
from .pruning import PrunePlan, count_flops, count_params
from .pruning.structures import STRUCTURES

Snapshot = tuple[str, list[int], list[int]]  # (label, kept heads per block, kept MLP neurons per block)


def _render(fig: Any) -> np.ndarray:
    """An Agg-rendered matplotlib figure as an RGB array (no display, no pyplot state)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def structure_heatmap(
    snapshots: Sequence[Snapshot], heads_total: Sequence[int], mlp_total: Sequence[int], title: str
) -> np.ndarray:
    """Kept share of heads and of MLP neurons, block (rows) by snapshot (columns), annotated with counts."""
    columns = len(snapshots)
    fig = _figure(min(4 + 0.9 * columns, 24), 1.2 + 0.45 * len(heads_total))
    fig.suptitle(title)
    for position, (name, index, totals) in enumerate((("heads", 1, heads_total), ("MLP width", 2, mlp_total)), 1):
        ax = fig.add_subplot(1, 2, position)
        kept = np.array([snap[index] for snap in snapshots], dtype=float).T  # blocks x snapshots
        share = kept / np.asarray(totals, dtype=float)[:, None]
        image = ax.imshow(share, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(f"kept {name}")
        ax.set_yticks(range(len(totals)), [f"block {i}" for i in range(len(totals))])
        every = max(1, columns // 20)  # at most ~20 labelled columns (long ADMM stages)
        ax.set_xticks(
            range(0, columns, every), [snap[0] for snap in snapshots][::every], rotation=90 if columns > 8 else 0
        )
        if columns <= 20:
            for (row, col), value in np.ndenumerate(kept):
                ax.text(col, row, f"{value:.0f}", ha="center", va="center", color="w" if share[row, col] < 0.6 else "k")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return _render(fig)


def score_heatmap(scores: Sequence[Sequence[float]], title: str) -> np.ndarray:
    """Head scores, block (rows) by head (columns)."""
    matrix = np.array([list(s) + [np.nan] * (max(map(len, scores)) - len(s)) for s in scores], dtype=float)
    fig = _figure(2 + 0.6 * matrix.shape[1], 1.2 + 0.45 * matrix.shape[0])
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="magma", aspect="auto")
    ax.set_title(title)
    ax.set_xlabel("head")
    ax.set_yticks(range(matrix.shape[0]), [f"block {i}" for i in range(matrix.shape[0])])
    if matrix.shape[1] <= 16:
        for (row, col), value in np.ndenumerate(matrix):
            if not np.isnan(value):
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", color="c", fontsize="small")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _render(fig)


def _sizes(pl_module: L.LightningModule) -> tuple[list[int], list[int]]:
    return [b.num_heads for b in pl_module.blocks], [b.hidden for b in pl_module.blocks]


class DashboardCallback(Callback):
    """Logs the pruning dashboards of one stage to the run's W&B logger (rank 0 only; no-op without W&B)."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []
        self.logged_passes = 0

    @staticmethod
    def _wandb(trainer: L.Trainer) -> WandbLogger | None:
        if not trainer.is_global_zero:
            return None
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    # ----------------------------------------------------------------- every stage
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        wandb = self._wandb(trainer)
        if wandb is None or getattr(pl_module, "stage", None) != "dense":
            return
        heads, mlp = _sizes(pl_module)
        wandb.experiment.summary.update(
            {
                "dense/params": count_params(pl_module.model),
                "dense/heads_per_block": heads,
                "dense/mlp_hidden_per_block": mlp,
            }
        )

    # ----------------------------------------------------------------- admm
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The support of Z after the previous epoch's update (epoch 0: the first projection)."""
        if getattr(pl_module, "stage", None) == "admm" and self._wandb(trainer) is not None:
            self._snapshot(f"{trainer.current_epoch}", pl_module.masks.plan())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wandb = self._wandb(trainer)
        if wandb is None:
            return
        self._log_ranking_passes(trainer, wandb)
        gates = getattr(pl_module, "gates", None)
        if gates is not None:
            values = gates.values()
            blocks = pl_module.blocks
            open_gates = {  # a structure without gates (pruning.structures=heads, say) keeps every unit
                name: [int((g > 0.5).sum()) for g in values[name]]
                if name in values
                else [STRUCTURES[name].size(b) for b in blocks]
                for name in ("heads", "neurons")
            }
            self.snapshots.append((f"{trainer.current_epoch}", open_gates["heads"], open_gates["neurons"]))
            if "heads" in values:
                caption = f"head gates, epoch {trainer.current_epoch}"
                image = score_heatmap([g.detach().tolist() for g in values["heads"]], caption)
                wandb.log_image("dashboards/gate_values", [image], step=trainer.global_step, caption=[caption])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wandb = self._wandb(trainer)
        stage = getattr(pl_module, "stage", None)
        if wandb is None or stage not in ("admm", "gates", "finetune"):
            return
        self._log_ranking_passes(trainer, wandb)
        if stage == "gates":
            heads, mlp = _sizes(pl_module)
            self._log_structure(wandb, trainer, "gates_structure", self.snapshots, heads, mlp, "gates: open (> 0.5)")
        elif stage == "admm":
            self._snapshot("end", pl_module.masks.plan())
            heads, mlp = _sizes(pl_module)
            self._log_structure(wandb, trainer, "admm_structure", self.snapshots, heads, mlp, "ADMM: support of Z")
        else:
            self._log_final(wandb, trainer, pl_module)

    def _snapshot(self, label: str, plan: PrunePlan) -> None:
        self.snapshots.append((label, plan.heads_per_block, plan.mlp_hidden_per_block))

    def _log_ranking_passes(self, trainer: L.Trainer, wandb: WandbLogger) -> None:
        ranking = next((cb for cb in trainer.callbacks if isinstance(cb, HeadRankingCallback)), None)
        if ranking is None or len(ranking.history) <= self.logged_passes:
            return
        new = ranking.history[self.logged_passes :]
        self.logged_passes = len(ranking.history)
        captions = [f"{ranking.ranker} head scores, epoch {entry['epoch']}" for entry in new]
        images = [score_heatmap(entry["scores"], caption) for entry, caption in zip(new, captions, strict=True)]
        wandb.log_image("dashboards/head_scores", images, step=trainer.global_step, caption=captions)

    # ----------------------------------------------------------------- finetune
    def _log_final(self, wandb: WandbLogger, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = wandb.experiment.summary
        heads, mlp = _sizes(pl_module)
        heads_total = list(summary.get("dense/heads_per_block") or heads)
        mlp_total = list(summary.get("dense/mlp_hidden_per_block") or mlp)
        self._log_structure(wandb, trainer, "final_structure", [("pruned", heads, mlp)], heads_total, mlp_total, "")
        params = count_params(pl_module.model)
        final: dict[str, Any] = {
            "final/params": params,
            "final/heads_per_block": heads,
            "final/mlp_hidden_per_block": mlp,
        }
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "data_config"):
            final["final/flops"] = count_flops(pl_module.model, tuple(datamodule.data_config["input_size"]))
        if "finetune/val_top1" in trainer.callback_metrics:
            final["final/val_top1"] = float(trainer.callback_metrics["finetune/val_top1"])
        if summary.get("dense/params"):
            final["final/param_reduction"] = 1 - params / summary["dense/params"]
        summary.update(final)

    @staticmethod
    def _log_structure(
        wandb: WandbLogger,
        trainer: L.Trainer,
        key: str,
        snapshots: Sequence[Snapshot],
        heads_total: Sequence[int],
        mlp_total: Sequence[int],
        title: str,
    ) -> None:
        image = structure_heatmap(snapshots, heads_total, mlp_total, title or "pruned structure (kept / dense)")
        wandb.log_image(f"dashboards/{key}", [image], step=trainer.global_step)
        rows = [
            [label, block, kept_h[block], heads_total[block], kept_n[block], mlp_total[block]]
            for label, kept_h, kept_n in snapshots
            for block in range(len(heads_total))
        ]
        columns = ["snapshot", "block", "heads_kept", "heads_total", "mlp_kept", "mlp_total"]
        wandb.log_table(f"dashboards/{key}_table", columns=columns, data=rows, step=trainer.global_step)
