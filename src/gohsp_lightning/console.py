"""What a run prints: a header per stage, one progress bar with short metric names, a result line per
stage, and a closing table; third-party chatter silenced unless ``verbose=true``.

Only notices are silenced (Lightning's hardware lines, tips and ``limit_*`` notes, a deprecation inside
Lightning, W&B's banner): every warning or error that reports a problem with the run still shows.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities import rank_zero_info

# Lightning's INFO lines that describe the machine or its own defaults, not the run
NOTICES = re.compile(
    r"^(GPU available|TPU available|HPU available|💡 Tip|`Trainer\(limit_\w+_batches=|Loading `train_dataloader`"
    r"|`Trainer.fit` stopped: `max_epochs=|Seed set to|You are using a CUDA device)"
)
# warnings about Lightning's internals or defaults that this pipeline sets on purpose
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r"The number of training batches \(\d+\) is smaller than the logging interval.*",
)
STAGES = {
    "dense": "dense training",
    "admm": "ADMM toward the budget (head ranking, structured projection)",
    "gates": "learnable gates toward the budget (task loss + expected-cost penalty)",
    "finetune": "fine-tune the hard-pruned model (knowledge distillation)",
}


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not NOTICES.match(record.getMessage())


def quiet_third_party(verbose: bool) -> None:
    """Silence the notices above (idempotent); ``verbose=True`` leaves everything as the libraries print it."""
    if verbose:
        return
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropNotices) for f in handler.filters):
                handler.addFilter(_DropNotices())
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def short_metric(name: str) -> str:
    """``admm/task_loss_step`` -> ``task_loss``: the stage is in the header, the step/epoch split is noise."""
    return re.sub(r"_(step|epoch)$", "", name.split("/", 1)[-1])


class StageProgressBar(RichProgressBar):
    """Lightning's rich progress bar with short metric names and without the logger's version number."""

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {short_metric(k): v for k, v in metrics.items()}


def stage_header(stage: str, epochs: int) -> None:
    what = STAGES.get(stage, stage)
    rank_zero_info(f"[gohsp] -- {stage}: {what}, {epochs} epoch(s)" if epochs else f"[gohsp] -- {stage}: evaluate")


def stage_result(stage: str, top1: float, seconds: float) -> None:
    rank_zero_info(f"[gohsp] {stage}: val top-1 {top1:.4f} ({seconds:.0f} s)")


def summary_table(summary: dict[str, Any]) -> str:
    """The closing table: params, MACs and val top-1 of the dense, hard-pruned and fine-tuned models."""
    rows = [("dense", summary["dense"])]
    if summary.get("pruned_before_finetune"):
        before = summary["pruned_before_finetune"]
        rows.append(("before fine-tune", {**before, "macs": summary["pruned"]["macs"]}))
    rows.append(("pruned", summary["pruned"]))
    lines = [f"{'':18}{'params':>12}{'GMACs':>10}{'top-1':>9}"]
    for label, row in rows:
        top1 = "-" if row.get("val_top1") is None else f"{row['val_top1']:.4f}"
        lines.append(f"{label:18}{row['params']:>12,}{row['macs'] / 1e9:>10.4f}{top1:>9}")
    lines.append(
        f"{summary['param_reduction']:.1%} fewer params, {summary['flops_reduction']:.1%} fewer MACs; "
        f"exported to {summary['export_dir']}"
    )
    return "\n".join(lines)


def images_in_batch(batch: tuple[Any, ...]) -> int:
    """Images in an ``(images, labels)`` batch: ThroughputMonitor's ``batch_size_fn``."""
    return int(batch[0].shape[0])
