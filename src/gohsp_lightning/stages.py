"""Durable stage boundaries, and where a resumed run picks up.

A stage that finishes leaves two files in ``<run dir>/stages/``, each written atomically, the JSON last:

* ``<stage>.safetensors``: the model weights when the stage ended (pruned for ``admm``, ``oneshot``, ``finetune``);
* ``<stage>.json``: the completion marker: metrics, the plan, and the settings the stage depended on.

Inside a stage, Lightning checkpoints go to ``<run dir>/checkpoints/<stage>/`` (``last.ckpt`` from
ModelCheckpoint, ``hpc_ckpt_*.ckpt`` from a SLURM requeue). A resumed run (``ckpt_path=last``) skips every
stage with a marker and continues the first one without from its newest checkpoint, or from its start.
Checkpoints are read with ``torch.load(weights_only=True)``, stage weights with safetensors: no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ConfigError
from .errors import one_line
from .pruning.files import atomic_write, atomic_write_json
from .pruning.structures import structures_label
from .summary import SUMMARY_FILE

LAST = "last"
# Settings that decide what a finished stage produced; a resumed run must not change them.
RESUME_KEYS = ("seed", "model.name", "model.kwargs", "model.num_classes", "pruning", "ranking", "admm", "gates")
# ...except these, which only matter to a stage that has not started, or only to the fine-tune length.
RESUME_FREE = ("pruning.finetune_epochs",)


def stage_order(method: str) -> list[str]:
    """The stages of ``pruning.method``, in order (the plan stage of ``oneshot`` has no training)."""
    if method == "dense":
        return ["dense"]
    return ["dense", {"gohsp": "admm", "gates": "gates"}.get(method, "oneshot"), "finetune"]


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A Lightning checkpoint, loaded without pickle; a missing, truncated or foreign file is one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}={str(path)!r}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, safetensors file, ...: all surface differently
        raise ValueError(
            f"{key}={str(path)!r} is not a readable checkpoint (truncated or corrupt?): {one_line(err)}"
        ) from None
    stage = checkpoint.get("hyper_parameters", {}).get("stage") if isinstance(checkpoint, dict) else None
    if stage is None or "state_dict" not in checkpoint:
        raise ValueError(f"{key}={str(path)!r} is not a gohsp-lightning stage checkpoint (no hyper_parameters.stage)")
    return checkpoint


def flat_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RESUME_KEYS` of a config dict, flattened to dotted keys."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", config)
    if "pruning.structures" in flat:  # [heads, neurons] and the older "both" are one setting
        flat["pruning.structures"] = structures_label(flat["pruning.structures"])
    return {
        k: v
        for k, v in flat.items()
        if any(k == r or k.startswith(f"{r}.") for r in RESUME_KEYS) and k not in RESUME_FREE
    }


def check_same_settings(now: dict[str, Any], before: dict[str, Any], source: str) -> None:
    """Raise a one-line ConfigError naming the first setting that differs from the interrupted run's."""
    a, b = flat_settings(now), flat_settings(before)
    # a key the earlier run did not have was added since, at its default: only keys both runs have can differ
    for key in sorted(set(a) & set(b)):
        if a.get(key) != b.get(key):
            raise ConfigError(
                f"{key}={a.get(key)!r} but {source} was made with {key}={b.get(key)!r}; "
                "resume with the same settings, or start a new run (without ckpt_path/resume_dir)"
            )


@dataclass
class ResumePoint:
    """What a run finds in its run dir: finished stages (their markers) and where the next one starts."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage: str | None = None
    ckpt: Path | None = None

    @property
    def resumed(self) -> bool:
        return bool(self.done) or self.ckpt is not None

    def ckpt_for(self, stage: str) -> str | None:
        return str(self.ckpt) if self.ckpt is not None and stage == self.stage else None


class StageFiles:
    """The stage markers and stage checkpoints of one run dir."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "stages"

    def marker(self, stage: str) -> dict[str, Any] | None:
        path = self.dir / f"{stage}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); delete it to redo the {stage} stage") from None

    def save(self, stage: str, model: nn.Module, info: dict[str, Any]) -> None:
        """Weights first, then the marker: a marker always has its weights."""
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write(self.dir / f"{stage}.safetensors", lambda tmp: save_file(state, str(tmp)))
        atomic_write_json(self.dir / f"{stage}.json", {"stage": stage, **info})

    def load_weights(self, stage: str, model: nn.Module) -> None:
        """Load a finished stage's weights into ``model`` (already pruned to the stage's plan), strictly."""
        path = self.dir / f"{stage}.safetensors"
        try:
            model.load_state_dict(load_file(str(path)), strict=True)
        except Exception as err:  # missing, truncated (SafetensorError) or not this model (RuntimeError)
            raise ValueError(f"{path} cannot be loaded into the model: {one_line(err)}") from None

    def checkpoint(self, stage: str) -> Path | None:
        """The newest checkpoint a stage left: ModelCheckpoint's ``last.ckpt`` or a SLURM ``hpc_ckpt_*.ckpt``."""
        folder = self.run_dir / "checkpoints" / stage
        found = [p for p in (folder / "last.ckpt", *folder.glob("hpc_ckpt_*.ckpt")) if p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime) if found else None

    def holds_a_run(self) -> str | None:
        """The first file that shows an earlier run wrote here (a fresh run must not overwrite it)."""
        for path in (self.run_dir / SUMMARY_FILE, *sorted(self.dir.glob("*.json"))):
            if path.is_file():
                return str(path)
        return None

    def resume_point(self, order: list[str], ckpt_path: str | None, settings: dict[str, Any]) -> ResumePoint:
        """Where to continue: ``ckpt_path`` is None (fresh run), ``"last"`` or a ``.ckpt`` file."""
        if ckpt_path is None:
            existing = self.holds_a_run()
            if existing is not None:
                raise ConfigError(
                    f"output dir {self.run_dir} already holds a run ({existing}); pass ckpt_path=last to resume it, "
                    "or choose another hydra.run.dir"
                )
            return ResumePoint()
        point = ResumePoint()
        for stage in order:
            marker = self.marker(stage)
            if marker is None:
                break
            check_same_settings(settings, marker.get("settings", {}), str(self.dir / f"{stage}.json"))
            point.done[stage] = marker
        pending = next((s for s in order if s not in point.done), None)
        if ckpt_path == LAST:
            point.ckpt = self.checkpoint(pending) if pending is not None else None
        else:
            point.ckpt = Path(ckpt_path)
        if point.ckpt is None:
            return point
        checkpoint = read_checkpoint(point.ckpt)
        stage = checkpoint["hyper_parameters"]["stage"]
        if stage != pending:
            state = "is already finished" if stage in point.done else "has not started"
            raise ConfigError(
                f"ckpt_path={str(point.ckpt)!r} is a {stage!r} checkpoint, but in {self.run_dir} that stage {state} "
                f"(the next stage is {pending!r}); pass resume_dir=<the run dir that wrote it> or ckpt_path=last"
            )
        check_same_settings(settings, checkpoint["hyper_parameters"].get("config", {}), str(point.ckpt))
        point.stage = stage
        return point
