"""Turn a composed Hydra config into a run, with one-line errors for bad input."""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from .config import ConfigError, from_hydra
from .pipeline import run

log = logging.getLogger("gohsp_lightning")

USER_ERRORS = (ConfigError, FileNotFoundError, ValueError, FloatingPointError)


def main_from_hydra(cfg: DictConfig) -> float | None:
    """Run and return the pruned val top-1 (the sweep metric); a bad input exits 2 with one line on stderr."""
    try:
        summary = run(from_hydra(cfg))
    except USER_ERRORS as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    return summary["pruned"]["val_top1"]
