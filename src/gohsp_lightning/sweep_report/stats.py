"""Statistics over job rows: means over seeds, and every method against the reference paired by seed."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .rows import GROUP, IDENTITY_OVERRIDES, REFERENCE


def _parse_overrides(row: dict[str, Any]) -> dict[str, str]:
    pairs = (item.partition("=") for item in str(row.get("overrides") or "").split())
    return {key.lstrip("+~"): value for key, _, value in pairs if key.lstrip("+~") not in IDENTITY_OVERRIDES}


def settings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each row's setting: its overrides (other than identity columns and seed) whose values differ across rows."""
    parsed = [_parse_overrides(row) for row in rows]
    keys = sorted({key for p in parsed for key in p})
    varying = [key for key in keys if len({p.get(key) for p in parsed}) > 1]
    return [" ".join(f"{key}={_short(p[key])}" for key in varying if key in p) for p in parsed]


def _short(value: str) -> str:
    """A sampled float in 4 significant digits (0.02693883019285411 -> 0.02694); anything else unchanged."""
    try:
        return value if value.isdigit() else format(float(value), ".4g")
    except ValueError:
        return value


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by method, ranker, allocation, structures, sparsity and setting: mean over the seeds that
    succeeded.

    A group whose every run failed is kept, with ``runs`` 0 and no numbers, so the table still shows it.
    """
    members: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row, setting in zip(rows, settings(rows), strict=True):
        members.setdefault((*identity_of(row, (*GROUP, "sparsity")), setting), []).append(row)
    out = []
    for key, group_rows in members.items():
        ok = [r for r in group_rows if r["status"] == "ok"]
        top1 = [float(r["val_top1"]) for r in ok]
        test = [float(r["test_top1"]) for r in ok if _has(r, "test_top1")]
        out.append(
            {
                **dict(zip((*GROUP, "sparsity", "setting"), key, strict=True)),
                "runs": len(ok),
                "failed": len(group_rows) - len(ok),
                "top1_mean": statistics.fmean(top1) if ok else None,
                "top1_std": (statistics.stdev(top1) if len(top1) > 1 else 0.0) if ok else None,
                "per_seed": {r["seed"]: float(r["val_top1"]) for r in ok},
                "params": statistics.fmean(float(r["params"]) for r in ok) if ok else None,
                "flops": statistics.fmean(float(r["flops"]) for r in ok) if ok else None,
                "dense_top1": statistics.fmean(float(r["dense_top1"]) for r in ok) if ok else None,
                "test_mean": statistics.fmean(test) if test else None,
                "test_std": (statistics.stdev(test) if len(test) > 1 else 0.0) if test else None,
                "dense_test_top1": _mean_of(ok, "dense_test_top1"),
            }
        )
    return sorted(out, key=lambda g: tuple(str(g[k]) for k in (*GROUP, "sparsity", "setting")))


def _has(row: dict[str, Any], key: str) -> bool:
    """Whether a row holds a figure at ``key`` (a CSV row holds "" where a summary had none)."""
    return row.get(key) not in (None, "")


def _mean_of(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in rows if _has(r, key)]
    return statistics.fmean(values) if values else None


def identity_of(row: dict[str, Any], keys: Sequence[str]) -> tuple[str, ...]:
    """A row's values at ``keys`` as strings (a summary gives 0.4 and 0, a CSV gives "0.4" and "0")."""
    return tuple(str(row[k]) for k in keys)


def paired_comparison(
    rows: Sequence[dict[str, Any]], reference: Sequence[str] = REFERENCE, metric: str = "val_top1"
) -> list[dict[str, Any]]:
    """Reference ``metric`` (val or test top-1) minus every other method's, paired by sparsity, seed and setting.

    Jobs of one seed share the dense model (same seed, data and dense epochs), so the difference between
    two methods at one seed is what the method changed; its mean and spread over seeds answer "is the
    reference better here, and at which budget?" far more sharply than two means whose spreads overlap.
    Only pairs where both jobs succeeded count. Positive means the reference is better.
    """
    reference = tuple(reference)
    ok = [
        (row, setting)
        for row, setting in zip(rows, settings(rows), strict=True)
        if row["status"] == "ok" and _has(row, metric)
    ]
    pair_key = ("sparsity", "seed")
    ref_top1 = {
        (*identity_of(row, pair_key), setting): float(row[metric])
        for row, setting in ok
        if identity_of(row, GROUP) == reference
    }
    diffs: dict[tuple[Any, ...], list[float]] = {}
    for row, setting in ok:
        other = identity_of(row, GROUP)
        match = ref_top1.get((*identity_of(row, pair_key), setting))
        if other != reference and match is not None:
            diffs.setdefault((*other, str(row["sparsity"]), setting), []).append(match - float(row[metric]))
    out = []
    for key, values in diffs.items():
        out.append(
            {
                **dict(zip((*GROUP, "sparsity", "setting"), key, strict=True)),
                "pairs": len(values),
                "diff_mean": statistics.fmean(values),
                "diff_std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "reference_better": sum(v > 0 for v in values),
                "ties": sum(v == 0 for v in values),
            }
        )
    return sorted(out, key=lambda c: (float(c["sparsity"]), *(c[k] for k in (*GROUP, "setting"))))
