"""Job rows: one per job dir of a sweep, from its summary.json, its failure.json or its saved config."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import one_line
from ..pruning.files import atomic_write_json
from ..pruning.structures import structures_label
from ..summary import IDENTITY, SUMMARY_FILE, report_fields

FAILURE_FILE = "failure.json"


CSV_FILE = "sweep_summary.csv"


PLOT_FILE = "pareto.png"


TABLE_FILE = "sweep_table.md"


HELDOUT_SPLIT = "test"  # what the report shows beside val, from each job's eval_test.json


EVAL_FILE = "eval_{split}.json"


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


def summary_digest(job: Path) -> str:
    """sha256 of a job's ``summary.json``: an eval file that names another digest belongs to an earlier run."""
    return hashlib.sha256((job / SUMMARY_FILE).read_bytes()).hexdigest()


def eval_file(split: str) -> str:
    """The file :mod:`.evaluate` writes into a run dir for ``split``."""
    return EVAL_FILE.format(split=split)


def record_failure(job_dir: str | Path, error: BaseException) -> Path:
    """Write ``failure.json`` into a job's output dir, so the report shows the job as a failed row."""
    return atomic_write_json(Path(job_dir) / FAILURE_FILE, {"type": type(error).__name__, "error": one_line(error)})


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
        row.update(report_fields(summary), status="ok")
        heldout = job / eval_file(HELDOUT_SPLIT)
        figures = json.loads(heldout.read_text()) if heldout.is_file() else {}
        if figures.get("summary_sha256") == summary_digest(job):  # not the figures of an earlier run here
            row.update(test_top1=figures["pruned"]["top1"], dense_test_top1=figures["dense"]["top1"])
        return row
    row.update(_config_identity(job))
    if failure_path.is_file():
        failure = json.loads(failure_path.read_text())
        row.update(status="failed", error=f"{failure['type']}: {failure['error']}")
    else:
        row.update(status="incomplete", error=f"no {SUMMARY_FILE} or {FAILURE_FILE} (still running or killed)")
    return row


_INT_COLUMNS = {"seed", "params", "flops", "dense_params", "dense_flops"}
_FLOAT_COLUMNS = {"sparsity", "val_top1", "dense_top1", "test_top1", "dense_test_top1"}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an earlier report's ``sweep_summary.csv`` (numbers as numbers, blanks as ``""``): jobs run
    on another machine, or whose dirs are gone, join a report through their CSV.

    Raises:
        ValueError: one line naming the file, if it is missing or lacks report columns.
    """
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(f"{path} is not a {CSV_FILE}: it lacks the column(s) {', '.join(missing)}")
            rows = list(reader)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    for row in rows:
        for key in _INT_COLUMNS | _FLOAT_COLUMNS:
            if row[key] != "":
                row[key] = int(row[key]) if key in _INT_COLUMNS else float(row[key])
    return rows


def merge_rows(rows: list[dict[str, Any]], earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` plus the ``earlier`` rows of jobs ``rows`` does not have (a job's own dir wins over a CSV)."""
    seen = {row["job"] for row in rows}
    return [*rows, *(row for row in earlier if row["job"] not in seen)]


def collect_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    sweep_dir = Path(sweep_dir)
    return [job_row(job, sweep_dir) for job in job_dirs(sweep_dir)]
