"""``summary.json``: the one schema of a run's result, written by the pipeline, read by the sweep report.

Keys are added, never renamed (sweep dirs of older runs still report). Top-1 figures are on ``data.val_split``;
``flops`` counts a multiply-add as 2, ``macs`` as 1 (what published ViT tables call FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import RunConfig
from .pruning.flops import macs
from .pruning.plan import PrunePlan

SUMMARY_FILE = "summary.json"
IDENTITY = ("method", "ranker", "allocation", "structures", "sparsity", "seed")  # what tells jobs of a sweep apart


@dataclass(frozen=True)
class Top1:
    """Val top-1 along a run: the starting weights (None from random init), after the dense epochs, the
    hard-pruned model before fine-tuning (pruning methods only) and the final model."""

    pretrained: float | None
    dense: float
    pruned: float
    before_finetune: float | None = None


def _costs(params: int, flops: int) -> dict[str, int]:
    return {"params": params, "flops": flops, "macs": macs(flops)}


def build_summary(
    cfg: RunConfig,
    plan: PrunePlan,
    dense: tuple[int, int],
    pruned: tuple[int, int],
    top1: Top1,
    embed_dim: int,
    **extra: Any,
) -> dict[str, Any]:
    """The summary of a finished run; ``dense`` and ``pruned`` are (params, flops), ``embed_dim`` the pruned
    model's residual width (smaller than the dense one when channels were pruned); ``extra`` adds keys
    (export_dir, ranks_agree, latency)."""
    p = cfg.pruning
    (dense_params, dense_flops), (params, flops) = dense, pruned
    return {
        "experiment": cfg.name,
        "model": cfg.model.name,
        "method": p.method,
        "ranker": p.ranker,
        "allocation": p.allocation,
        "structures": p.structures_label,
        "budget": p.budget,
        "sparsity": p.sparsity,
        "seed": cfg.seed,
        # the same for every method of a comparison: dense and oneshot fold the ADMM epochs into theirs
        "total_epochs": p.dense_epochs + p.admm_epochs + p.finetune_epochs,
        "dense": {**_costs(dense_params, dense_flops), "val_top1": top1.dense},
        "pruned": {
            **_costs(params, flops),
            "val_top1": top1.pruned,
            "heads_per_block": plan.heads_per_block,
            "mlp_hidden_per_block": plan.mlp_hidden_per_block,
            "embed_dim": embed_dim,
        },
        "param_reduction": 1 - params / dense_params,
        "flops_reduction": 1 - flops / dense_flops,
        "pretrained": (
            None if top1.pretrained is None else {**_costs(dense_params, dense_flops), "val_top1": top1.pretrained}
        ),
        "pruned_before_finetune": (
            None if top1.before_finetune is None else {"params": params, "val_top1": top1.before_finetune}
        ),
        **extra,
    }


def report_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """What a sweep report row reads from a summary: the job's identity, its costs and val top-1."""
    return {
        **{key: summary.get(key, "") for key in IDENTITY},
        **{key: summary["pruned"][key] for key in ("params", "flops", "val_top1")},
        "dense_params": summary["dense"]["params"],
        "dense_flops": summary["dense"]["flops"],
        "dense_top1": summary["dense"]["val_top1"],
    }
