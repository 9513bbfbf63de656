"""Turn a composed Hydra config into a run, with one-line errors for bad input.

A single run that fails on bad input prints one line and exits 2. A job of a multirun (``-m``) must not
take the sweep down with it: any failure is recorded in the job's ``failure.json`` (a failed row of the
sweep report) and the job returns NaN, so the sweeper moves on to the next job.
"""

from __future__ import annotations

import logging
import math
import sys

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .config import ConfigError, from_hydra
from .pipeline import run
from .sweep_report import one_line, record_failure

log = logging.getLogger("gohsp_lightning")

USER_ERRORS = (ConfigError, FileNotFoundError, ValueError, FloatingPointError)


def in_multirun() -> bool:
    """True inside a job of ``python run.py -m ...``."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def main_from_hydra(cfg: DictConfig) -> float:
    """Run and return the pruned val top-1 (the sweep metric; NaN for a failed multirun job)."""
    try:
        summary = run(from_hydra(cfg))
    except Exception as err:
        if in_multirun():
            return _record_job_failure(err)
        if isinstance(err, USER_ERRORS):
            print(f"error: {one_line(err)}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    return summary["pruned"]["val_top1"]


def _record_job_failure(err: Exception) -> float:
    """Log the failure (with a traceback unless it is a user error) and leave it for the sweep report."""
    job_dir = HydraConfig.get().runtime.output_dir
    record_failure(job_dir, err)
    log.error(f"job failed, the sweep goes on: {one_line(err)}", exc_info=not isinstance(err, USER_ERRORS))
    return math.nan
