"""Loggers from config, with W&B offline unless a key is configured, and always closed at the end."""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra.utils
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

WANDB_TARGETS = ("lightning.pytorch.loggers.WandbLogger", "gohsp_lightning.tracking.WandbLogger")


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger without the ``anonymous=None`` it hands ``wandb.init``: current W&B warns on every
    run that the setting has no effect."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


def wandb_key_available() -> bool:
    """True if W&B can authenticate without a prompt (``WANDB_API_KEY`` or a netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def sweep_job() -> tuple[str, int] | None:
    """``(sweep name, job number)`` inside a job of a Hydra multirun, else None.

    The sweep name is the sweep dir's last two parts (``<experiment>-<date>`` by default): unique per
    sweep, and the same for all of its jobs.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    return "-".join(Path(hydra_cfg.sweep.dir).parts[-2:]), int(hydra_cfg.job.num)


def build_loggers(
    specs: dict[str, Any], save_dir: Path, name: str, group: str | None = None, verbose: bool = False
) -> list[Logger]:
    """Instantiate every ``_target_`` entry of ``specs`` (the ``logger`` config group).

    A W&B logger whose ``offline`` is unset runs offline when no key is configured, so a run never
    prompts or hangs; its files go to ``save_dir``. In a multirun, W&B runs are grouped by sweep (unless
    ``group`` or the config sets one) and named ``<name>#<job>``, so the W&B UI compares a sweep's runs.
    Unless ``verbose``, W&B prints only where its files are (its ``quiet`` setting), not its banner and summary.
    """
    job = sweep_job()
    if job is not None:
        group = group or job[0]
        name = f"{name}#{job[1]}"
    loggers = []
    for spec in specs.values():
        if not spec or "_target_" not in spec:
            continue
        spec = dict(spec)
        extra: dict[str, Any] = {}
        if spec["_target_"] in WANDB_TARGETS:
            if spec.get("offline") is None:
                spec["offline"] = os.environ.get("WANDB_MODE") == "offline" or not wandb_key_available()
            spec.setdefault("name", name)
            if group is not None:
                spec.setdefault("group", group)
            if not verbose and "settings" not in spec:
                import wandb

                extra["settings"] = wandb.Settings(quiet=True)
        spec.setdefault("save_dir", str(save_dir))
        loggers.append(hydra.utils.instantiate(spec, **extra))
    return loggers


@contextmanager
def closing_loggers(loggers: list[Logger]) -> Iterator[list[Logger]]:
    """Finalise every logger and end the W&B run, also when the run fails."""
    status = "failed"
    try:
        yield loggers
        status = "success"
    finally:
        for logger in loggers:
            logger.finalize(status)
        if any(isinstance(lg, LightningWandbLogger) for lg in loggers):
            import wandb

            wandb.finish(exit_code=0 if status == "success" else 1)
