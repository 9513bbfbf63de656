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

One module per job: ``rows`` (job dirs -> rows), ``stats`` (means, paired differences), ``tables`` (markdown),
``plot`` (Pareto plot), ``report`` (the files), ``callback`` (Hydra), ``cli`` (the command above).
"""

from .callback import SweepReport
from .cli import main
from .plot import pareto_front
from .report import build_report, write_report
from .rows import SUMMARY_FILE, collect_rows, eval_file, job_dirs, record_failure, summary_digest
from .stats import aggregate, paired_comparison, settings
from .tables import report_text

__all__ = [
    "SUMMARY_FILE",
    "SweepReport",
    "aggregate",
    "build_report",
    "collect_rows",
    "eval_file",
    "job_dirs",
    "main",
    "paired_comparison",
    "pareto_front",
    "record_failure",
    "report_text",
    "settings",
    "summary_digest",
    "write_report",
]
