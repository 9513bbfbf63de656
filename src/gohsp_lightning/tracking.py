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

WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"


def wandb_key_available() -> bool:
    """True if W&B can authenticate without a prompt (``WANDB_API_KEY`` or a netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def build_loggers(specs: dict[str, Any], save_dir: Path, name: str, group: str | None = None) -> list[Logger]:
    """Instantiate every ``_target_`` entry of ``specs`` (the ``logger`` config group).

    A W&B logger whose ``offline`` is unset runs offline when no key is configured, so a run never
    prompts or hangs; its files go to ``save_dir``.
    """
    loggers = []
    for spec in specs.values():
        if not spec or "_target_" not in spec:
            continue
        spec = dict(spec)
        if spec["_target_"] == WANDB_TARGET:
            if spec.get("offline") is None:
                spec["offline"] = os.environ.get("WANDB_MODE") == "offline" or not wandb_key_available()
            spec.setdefault("name", name)
            if group is not None:
                spec.setdefault("group", group)
        spec.setdefault("save_dir", str(save_dir))
        loggers.append(hydra.utils.instantiate(spec))
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
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish(exit_code=0 if status == "success" else 1)
