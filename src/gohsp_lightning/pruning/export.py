"""Save and load a pruned model as ``model.safetensors`` + ``config.json``, with no pickle anywhere.

``config.json`` holds what is needed to rebuild the architecture (timm model name and kwargs, the kept
heads and neurons per block) and to feed it (timm data config: input_size, mean, std, interpolation,
crop_pct). Loading builds the dense architecture without weights, applies the plan, then loads the
tensors strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .files import atomic_write, atomic_write_json
from .plan import PrunePlan
from .surgery import apply_plan

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 2  # 2: the plan may hold a model-level "channels" list; version 1 files load unchanged


def save_pruned(
    directory: str | Path,
    model: nn.Module,
    plan: PrunePlan,
    model_name: str,
    model_kwargs: dict[str, Any],
    data_config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the pruned ``model`` to ``directory``; each file is written atomically."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model_kwargs": model_kwargs,
        "plan": plan.to_dict(),
        "heads_per_block": plan.heads_per_block,
        "mlp_hidden_per_block": plan.mlp_hidden_per_block,
        "data_config": _json_safe(data_config),
        **(extra or {}),
    }
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    atomic_write_json(directory / CONFIG_FILE, config)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """The export's ``config.json``; one-line errors name the directory and the missing file or key."""
    directory = Path(directory)
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"export dir {directory} is missing {', '.join(missing)} (needs {WEIGHTS_FILE} and {CONFIG_FILE})"
        )
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{directory / CONFIG_FILE} is not valid JSON: {err}") from err
    for key in ("model_name", "model_kwargs", "plan", "data_config"):
        if key not in config:
            raise ValueError(
                f"{directory / CONFIG_FILE} has no {key!r} (needs model_name, model_kwargs, plan, data_config)"
            )
    return config


def load_pruned(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported pruned model in eval mode.

    Example:
        >>> model = load_pruned("outputs/2026-11-23/12-00-00/pruned")  # doctest: +SKIP
        >>> logits = model(images)  # doctest: +SKIP
    """
    directory = Path(directory)
    config = read_config(directory)
    model = timm.create_model(config["model_name"], pretrained=False, **config["model_kwargs"])
    apply_plan(model, PrunePlan.from_dict(config["plan"]))
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt files
        raise ValueError(f"{directory / WEIGHTS_FILE} is not a readable safetensors file: {err}") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shapes = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if missing or unexpected or bad_shapes:
        raise ValueError(
            f"{directory / CONFIG_FILE} does not match {WEIGHTS_FILE}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, shape mismatch {bad_shapes[:3]}"
        )
    model.load_state_dict(state, strict=True)
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), **config["data_config"]}
    return model.to(device).eval()


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
