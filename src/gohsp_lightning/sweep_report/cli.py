"""``python -m gohsp_lightning.sweep_report <sweep dir>``: rebuild a sweep's report by hand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .report import write_report
from .rows import CSV_FILE, GROUP, PLOT_FILE, REFERENCE, TABLE_FILE, collect_rows, job_dirs, merge_rows, read_rows
from .stats import identity_of
from .tables import parse_reference


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
    parser.add_argument(
        "--rows",
        type=Path,
        action="append",
        default=[],
        metavar="CSV",
        help=f"also report the jobs of an earlier {CSV_FILE} (e.g. run elsewhere, or whose dirs are gone); "
        "a job with a dir here wins; repeatable",
    )
    args = parser.parse_args(argv)
    try:
        reference = REFERENCE if args.reference is None else parse_reference(args.reference)
        earlier = [row for path in args.rows for row in read_rows(path)]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.sweep_dir.is_dir() or not job_dirs(args.sweep_dir):
        print(f"error: {args.sweep_dir} holds no Hydra job dirs (<job>/.hydra/config.yaml)", file=sys.stderr)
        return 2
    rows = merge_rows(collect_rows(args.sweep_dir), earlier)
    methods = sorted({"/".join(identity_of(row, GROUP)) for row in rows})
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
