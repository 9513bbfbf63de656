"""``pareto.png``: top-1 against parameters and FLOPs, one line per method, with the Pareto front."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..pruning.files import atomic_write
from .rows import GROUP
from .stats import aggregate


def _label(group: dict[str, Any], varying: set[str]) -> str:
    if group["method"] == "dense":  # ranker, allocation and structures mean nothing without pruning
        return "dense, same epochs"
    return "/".join(str(group[k]) for k in GROUP if k in ("method", "ranker") or k in varying)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (lower) and accuracy (higher), by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, top1 in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or top1 > front[-1][1]:
            front.append((cost, top1))
    return front


def best_per_budget(groups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of the settings tried at one sparsity (an Optuna search), the one with the best mean top-1."""
    best: dict[Any, dict[str, Any]] = {}
    for g in groups:
        if g["sparsity"] not in best or g["top1_mean"] > best[g["sparsity"]]["top1_mean"]:
            best[g["sparsity"]] = g
    return list(best.values())


def plot_pareto(path: Path, rows: Sequence[dict[str, Any]], title: str) -> Path:
    """Top-1 vs params and vs FLOPs, one line per method/ranker (Agg, no display needed).

    Where jobs tried several settings at one budget, the line goes through the best of them.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [g for g in aggregate(rows) if g["runs"]]
    ok = [r for r in rows if r["status"] == "ok"]
    before = [r for r in ok if r["method"] != "dense"]  # a dense job's dense_top1 is after all its epochs
    varying = {k for k in ("allocation", "structures") if len({g[k] for g in groups}) > 1}
    lines: dict[str, list[dict[str, Any]]] = {}
    for g in groups:
        lines.setdefault(_label(g, varying), []).append(g)
    lines = {label: best_per_budget(members) for label, members in lines.items()}
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    failed = sum(r["status"] != "ok" for r in rows)
    fig.suptitle(f"{title}: {len(ok)} runs" + (f", {failed} failed" if failed else ""))
    for ax, cost, unit in (
        (fig.add_subplot(1, 2, 1), "params", "parameters"),
        (fig.add_subplot(1, 2, 2), "flops", "FLOPs"),
    ):
        for label, members in sorted(lines.items()):
            members = sorted(members, key=lambda g: g[cost])
            ax.errorbar(
                [g[cost] / 1e6 for g in members],
                [g["top1_mean"] for g in members],
                yerr=[g["top1_std"] for g in members],
                marker="o",
                capsize=3,
                label=label,
            )
        front = pareto_front([(g[cost], g["top1_mean"]) for members in lines.values() for g in members])
        if len(front) > 1:
            ax.step(
                [c / 1e6 for c, _ in front],
                [t for _, t in front],
                where="post",
                color="grey",
                linestyle=":",
                label="Pareto front",
            )
        if before:
            ax.plot(
                statistics.fmean(float(r[f"dense_{cost}"]) for r in before) / 1e6,
                statistics.fmean(float(r["dense_top1"]) for r in before),
                marker="*",
                markersize=14,
                color="black",
                linestyle="none",
                label="dense, before pruning",
            )
        ax.set_xlabel(f"{unit} (M)")
        ax.set_ylabel("val top-1")
        ax.grid(alpha=0.3)
        if groups or ok:
            ax.legend(fontsize="small")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
