"""The report's files in a sweep dir: the CSV, the plot and the tables, each written atomically."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..pruning.files import atomic_write
from .plot import plot_pareto
from .rows import COLUMNS, CSV_FILE, PLOT_FILE, REFERENCE, TABLE_FILE, collect_rows
from .tables import report_text


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))


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
