"""Turn a composed Hydra config into a run, with one-line errors for bad input.

A single run that fails on bad input prints one line and exits 2. A job of a multirun (``-m``) must not
take the sweep down with it: any failure is recorded in the job's ``failure.json`` (a failed row of the
sweep report) and the job returns -inf, the worst top-1, so the sweeper moves on to the next job. Not NaN:
Optuna's Hydra sweeper cannot record a NaN trial (it raises), while -inf is a valid, failed-looking value
to a maximizing search and is ignored by the basic sweeper.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .config import ConfigError, RunConfig, from_hydra
from .errors import one_line
from .pipeline import run
from .sweep_report import record_failure

log = logging.getLogger("gohsp_lightning")

USER_ERRORS = (ConfigError, FileNotFoundError, ValueError, FloatingPointError)
# the clone's conf/ (src/gohsp_lightning/cli.py -> ../../conf)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_run(overrides: Sequence[str], output_dir: str | Path, conf_dir: Path = CONF_DIR) -> RunConfig:
    """Compose ``conf/`` as ``python run.py OVERRIDES`` would, with the run dir ``output_dir``, outside
    ``@hydra.main`` (for tools that take run.py's overrides, e.g. the ranking-quality harness)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import open_dict

    if not conf_dir.is_dir():
        raise ConfigError(f"no config folder at {conf_dir}: run from a clone of gohsp-lightning")
    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    except HydraException as err:
        raise ConfigError(f"overrides: {one_line(err)}") from None
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(Path.cwd())
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return from_hydra(cfg)


def require_optional_plugins(argv: Sequence[str]) -> None:
    """``sweep=optuna`` needs an optional extra: say how to get it, where Hydra would only say the sweeper
    config is missing."""
    if "sweep=optuna" in argv and not _installed("hydra_plugins.hydra_optuna_sweeper"):
        print('error: sweep=optuna needs the Optuna sweeper plugin: pip install -e ".[optuna]"', file=sys.stderr)
        raise SystemExit(2)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def in_multirun() -> bool:
    """True inside a job of ``python run.py -m ...``."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def main_from_hydra(cfg: DictConfig) -> float:
    """Run and return the pruned val top-1 (the sweep metric; -inf for a failed multirun job)."""
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
    return -math.inf
