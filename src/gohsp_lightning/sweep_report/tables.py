"""Markdown for ``sweep_table.md``: the per-group table and the paired comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .rows import GROUP, HELDOUT_SPLIT, REFERENCE
from .stats import aggregate, paired_comparison


def comparison_table(
    comparisons: Sequence[dict[str, Any]], reference: Sequence[str] = REFERENCE, split: str = "val"
) -> str:
    """Markdown for :func:`paired_comparison` on ``split``; empty when no job pairs with the reference."""
    if not comparisons:
        return ""
    with_setting = any(c.get("setting") for c in comparisons)
    columns = ["sparsity", "method", "ranker", "allocation", "structures", *(["setting"] if with_setting else [])]
    columns += ["pairs", "reference − this, top-1 mean ± std", "reference better / tied"]
    lines = [
        f"## {'/'.join(reference)} against each other method, paired by seed ({split} top-1)",
        "",
        "Positive: the reference is better. Each pair shares its seed and so its dense model.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
    ]
    for c in comparisons:
        setting = f" {c['setting'] or '—'} |" if with_setting else ""
        lines.append(
            f"| {c['sparsity']} | {_method_cells(c)} |{setting} "
            f"{c['pairs']} | {c['diff_mean']:+.4f} ± {c['diff_std']:.4f} | "
            f"{c['reference_better']}/{c['pairs']} better, {c['ties']} tied |"
        )
    return "\n".join(lines) + "\n"


def report_text(rows: Sequence[dict[str, Any]], reference: Sequence[str] = REFERENCE) -> str:
    """``sweep_table.md``: the per-group table, then the paired comparison with the reference (if any), on
    val and, where jobs were evaluated on it, on the held-out split."""
    tables = [markdown_table(aggregate(rows))]
    for split, metric in (("val", "val_top1"), (HELDOUT_SPLIT, "test_top1")):
        tables.append(comparison_table(paired_comparison(rows, reference, metric), reference, split))
    return "\n".join(t for t in tables if t)


def parse_reference(text: str) -> tuple[str, ...]:
    """``method/ranker/allocation/structures`` (the CLI's ``--reference``) as a tuple."""
    parts = tuple(text.split("/"))
    if len(parts) != len(GROUP) or not all(parts):
        raise ValueError(f"--reference={text!r} must be {'/'.join(GROUP)}, e.g. {'/'.join(REFERENCE)}")
    return parts


def _method_cells(group: dict[str, Any]) -> str:
    """Method, ranker, allocation, structures as table cells; a dense job has no ranker, allocation or structures."""
    values = [group[k] for k in GROUP]
    return " | ".join(str(v) if i == 0 or group["method"] != "dense" else "—" for i, v in enumerate(values))


def _cell(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _mean_std(mean: float | None, std: float | None) -> str:
    return "—" if mean is None else f"{mean:.4f} ± {std:.4f}"


def markdown_table(groups: Sequence[dict[str, Any]]) -> str:
    """One line per group; a ``setting`` column only when jobs differ in more than the identity columns."""
    with_setting = any(g.get("setting") for g in groups)
    with_test = any(g.get("test_mean") is not None for g in groups)
    columns = ["method", "ranker", "allocation", "structures", "sparsity", *(["setting"] if with_setting else [])]
    columns += ["runs", "val top-1 mean ± std", "per-seed top-1", "params", "FLOPs", "dense top-1"]
    columns += [f"{HELDOUT_SPLIT} top-1 mean ± std", f"dense {HELDOUT_SPLIT} top-1"] if with_test else []
    header = "| " + " | ".join(columns) + " |\n|" + " --- |" * len(columns) + "\n"
    lines = []
    for g in groups:
        seeds = ", ".join(f"s{seed}: {top1:.4f}" for seed, top1 in sorted(g["per_seed"].items())) or "—"
        runs = f"{g['runs']}" + (f" (+{g['failed']} failed)" if g["failed"] else "")
        top1 = _mean_std(g["top1_mean"], g["top1_std"])
        setting = f" {g['setting'] or '—'} |" if with_setting else ""
        test = (
            f" {_mean_std(g['test_mean'], g['test_std'])} | {_cell(g['dense_test_top1'], '.4f')} |" if with_test else ""
        )
        lines.append(
            f"| {_method_cells(g)} | {g['sparsity']} |{setting} "
            f"{runs} | {top1} | {seeds} | {_cell(g['params'], ',.0f')} | {_cell(g['flops'], ',.0f')} "
            f"| {_cell(g['dense_top1'], '.4f')} |{test}"
        )
    return header + "\n".join(lines) + "\n"
