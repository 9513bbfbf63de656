"""Sweep report: one CSV row per job of a Hydra multirun, a Pareto plot and a mean-over-seeds table.

A researcher asks "is GOHSP better here, and at which budget?"; the answer is in the sweep dir:

* ``sweep_summary.csv``: one row per job (method, ranker, allocation, structures, sparsity, seed, params,
  flops, val_top1, dense_top1, status, error, overrides). A failed job is a row with its one-line error.
* ``pareto.png``: val top-1 against parameters and against FLOPs, one line per method/ranker (mean over
  seeds, error bars = std), the dense model before pruning (after its dense epochs) as a star and the Pareto
  front of all points. A same-epochs dense baseline is a job of its own (``pruning.method=dense``), run into
  the same sweep dir with its own ``hydra.sweep.subdir`` so that it does not overwrite jobs 0, 1, ...
* ``sweep_table.md``: the same numbers grouped over seeds (mean, std and every seed's top-1); jobs that
  differ in other swept keys (an Optuna trial's alpha, rho, lr) are told apart by a ``setting`` column.
  Below it, GOHSP (the reference, ``gohsp/graph/global/both``) against every other method at each budget,
  paired by seed: jobs with the same seed start from the same dense model, so the paired difference is
  free of the dense model's seed-to-seed spread, which dominates the plain means.
* held-out figures: once ``python -m gohsp_lightning.evaluate <sweep dir> --root ...`` has written each job's
  ``eval_test.json`` (top-1 on a split no job saw), the CSV and both tables carry ``test`` beside ``val``.

Rows come from each job's ``summary.json`` (written by the pipeline) or, for a failed job,
``failure.json`` (written by the CLI) and the job's ``.hydra/config.yaml``. :class:`SweepReport` is a Hydra
callback (``conf/hydra/default.yaml``) that rebuilds the report after every job, so an interrupted sweep
still has one. Rebuild it by hand with::

    python -m gohsp_lightning.sweep_report multirun/cifar10_subset/2026-11-23_18-00-00
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from .errors import one_line
from .pruning.files import atomic_write, atomic_write_json
from .pruning.structures import structures_label

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
FAILURE_FILE = "failure.json"
CSV_FILE = "sweep_summary.csv"
PLOT_FILE = "pareto.png"
TABLE_FILE = "sweep_table.md"
HELDOUT_SPLIT = "test"  # what the report shows beside val, from each job's eval_test.json
EVAL_FILE = "eval_{split}.json"
IDENTITY = ("method", "ranker", "allocation", "structures", "sparsity", "seed")
COLUMNS = (
    "job",
    *IDENTITY,
    "params",
    "flops",
    "val_top1",
    "dense_top1",
    "test_top1",
    "dense_test_top1",
    "dense_params",
    "dense_flops",
    "status",
    "error",
    "overrides",
)
GROUP = ("method", "ranker", "allocation", "structures")
# What the paired comparison holds every other method against: GOHSP as the paper defines it.
REFERENCE = ("gohsp", "graph", "global", "both")
# Override keys that the identity columns already show, or that only choose a grid (``sweep=``); any other
# override that differs between jobs (an Optuna trial's alpha, rho, lr) is the job's "setting" and keeps it
# apart from other settings in the table. (Hydra keeps ``hydra.*`` overrides out of a job's overrides.yaml.)
IDENTITY_OVERRIDES = {"seed", "pruning", "sweep", *(f"pruning.{key}" for key in IDENTITY)}


def eval_file(split: str) -> str:
    """The file :mod:`.evaluate` writes into a run dir for ``split``."""
    return EVAL_FILE.format(split=split)


def record_failure(job_dir: str | Path, error: BaseException) -> Path:
    """Write ``failure.json`` into a job's output dir, so the report shows the job as a failed row."""
    return atomic_write_json(Path(job_dir) / FAILURE_FILE, {"type": type(error).__name__, "error": one_line(error)})


# ----------------------------------------------------------------------------- rows
def _job_key(job: Path, sweep_dir: Path) -> tuple[Any, ...]:
    parts = job.relative_to(sweep_dir).parts
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job dir under ``sweep_dir`` (a dir with Hydra's ``.hydra/config.yaml``), in job-number order."""
    jobs = {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")} - {sweep_dir}
    return sorted(jobs, key=lambda job: _job_key(job, sweep_dir))


def _config_identity(job: Path) -> dict[str, Any]:
    """Method, ranker, ... of a job that wrote no summary, from the config Hydra saved before it ran."""
    cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text()) or {}
    pruning = cfg.get("pruning") or {}
    identity = {key: cfg.get("seed") if key == "seed" else pruning.get(key) for key in IDENTITY}
    if identity["structures"] is not None:  # a list in the config, its label ("both") in a summary
        identity["structures"] = structures_label(identity["structures"])
    return identity


def job_overrides(job: Path) -> list[str]:
    """The job's command-line and swept overrides (``key=value``), as Hydra saved them."""
    path = job / ".hydra" / "overrides.yaml"
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])] if path.is_file() else []


def job_row(job: Path, sweep_dir: Path) -> dict[str, Any]:
    """One CSV row: the job's summary, or its identity with ``status`` failed (and the error) or incomplete."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row["job"] = job.relative_to(sweep_dir).as_posix()
    row["overrides"] = " ".join(job_overrides(job))
    summary_path, failure_path = job / SUMMARY_FILE, job / FAILURE_FILE
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        row.update({key: summary.get(key, "") for key in IDENTITY})
        row.update({key: summary["pruned"][key] for key in ("params", "flops", "val_top1")})
        row.update({f"dense_{key}": summary["dense"][key] for key in ("params", "flops")})
        row.update(dense_top1=summary["dense"]["val_top1"], status="ok")
        heldout = job / eval_file(HELDOUT_SPLIT)
        if heldout.is_file():
            figures = json.loads(heldout.read_text())
            row.update(test_top1=figures["pruned"]["top1"], dense_test_top1=figures["dense"]["top1"])
        return row
    row.update(_config_identity(job))
    if failure_path.is_file():
        failure = json.loads(failure_path.read_text())
        row.update(status="failed", error=f"{failure['type']}: {failure['error']}")
    else:
        row.update(status="incomplete", error=f"no {SUMMARY_FILE} or {FAILURE_FILE} (still running or killed)")
    return row


def collect_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    sweep_dir = Path(sweep_dir)
    return [job_row(job, sweep_dir) for job in job_dirs(sweep_dir)]


# ----------------------------------------------------------------------------- aggregation
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
        members.setdefault((*_identity(row, (*GROUP, "sparsity")), setting), []).append(row)
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


def _identity(row: dict[str, Any], keys: Sequence[str]) -> tuple[str, ...]:
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
        (*_identity(row, pair_key), setting): float(row[metric])
        for row, setting in ok
        if _identity(row, GROUP) == reference
    }
    diffs: dict[tuple[Any, ...], list[float]] = {}
    for row, setting in ok:
        other = _identity(row, GROUP)
        match = ref_top1.get((*_identity(row, pair_key), setting))
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


# ----------------------------------------------------------------------------- outputs
def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))


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


def write_report(sweep_dir: Path, rows: Sequence[dict[str, Any]], reference: Sequence[str] = REFERENCE) -> str:
    """Write the CSV, the plot and the tables of ``rows`` into ``sweep_dir``; returns the tables' text."""
    write_csv(sweep_dir / CSV_FILE, rows)
    plot_pareto(sweep_dir / PLOT_FILE, rows, title="/".join(sweep_dir.resolve().parts[-2:]))
    text = report_text(rows, reference)
    atomic_write(sweep_dir / TABLE_FILE, lambda tmp: tmp.write_text(text))
    return text


def build_report(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Collect the rows of ``sweep_dir`` and write its report; returns the rows."""
    rows = collect_rows(sweep_dir)
    write_report(Path(sweep_dir), rows)
    return rows


# ----------------------------------------------------------------------------- Hydra callback
class SweepReport(Callback):
    """Rebuilds the report of a multirun after each job and at the end (single runs are left alone).

    A job that raises (rather than returning after recording its failure, as the CLI does) is recorded
    here from Hydra's ``JobReturn``, so it still becomes a failed row.
    """

    def __init__(self) -> None:
        self.sweep_dirs: set[Path] = set()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return
        if job_return.status == JobStatus.FAILED and isinstance(job_return._return_value, BaseException):
            record_failure(hydra_cfg.runtime.output_dir, job_return._return_value)
        sweep_dir = (Path(hydra_cfg.runtime.cwd) / hydra_cfg.sweep.dir).resolve()  # cwd may be the job dir
        self.sweep_dirs.add(sweep_dir)
        self._build(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for sweep_dir in sorted(self.sweep_dirs):
            rows = self._build(sweep_dir)
            failed = [r for r in rows if r["status"] != "ok"]
            log.info(f"sweep report: {len(rows) - len(failed)} ok, {len(failed)} failed -> {sweep_dir / CSV_FILE}")
            for row in failed:
                log.warning(f"job {row['job']} {row['status']}: {row['error']}")

    @staticmethod
    def _build(sweep_dir: Path) -> list[dict[str, Any]]:
        """A report that cannot be built is logged, never allowed to stop the sweep."""
        try:
            return build_report(sweep_dir)
        except Exception as err:  # the jobs' results on disk matter more than the report
            log.error(f"sweep report for {sweep_dir} failed: {type(err).__name__}: {one_line(err)}")
            return []


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gohsp_lightning.sweep_report", description="Rebuild the report of a Hydra sweep dir."
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun dir, e.g. multirun/cifar10_subset/<date>")
    parser.add_argument(
        "--reference",
        help=f"the method every other one is compared with, paired by seed ({'/'.join(GROUP)}; "
        f"default {'/'.join(REFERENCE)})",
    )
    args = parser.parse_args(argv)
    try:
        reference = REFERENCE if args.reference is None else parse_reference(args.reference)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.sweep_dir.is_dir() or not job_dirs(args.sweep_dir):
        print(f"error: {args.sweep_dir} holds no Hydra job dirs (<job>/.hydra/config.yaml)", file=sys.stderr)
        return 2
    rows = collect_rows(args.sweep_dir)
    methods = sorted({"/".join(_identity(row, GROUP)) for row in rows})
    if args.reference is not None and "/".join(reference) not in methods:
        print(
            f"error: --reference={args.reference} matches no job; the sweep has {', '.join(methods)}", file=sys.stderr
        )
        return 2
    text = write_report(args.sweep_dir, rows, reference)
    failed = sum(r["status"] != "ok" for r in rows)
    print(text, end="")
    print(
        f"{len(rows)} jobs ({failed} not ok); wrote {', '.join((CSV_FILE, PLOT_FILE, TABLE_FILE))} in {args.sweep_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
