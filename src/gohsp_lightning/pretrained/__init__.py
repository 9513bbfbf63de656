"""Trained models shipped inside the package: ``list_pretrained()`` and ``load_pretrained(name)``.

Each model is ``<name>.safetensors`` beside ``<name>.json``, its card: timm name and kwargs, the timm data
config it was trained with, the sha256 of the weights (checked on every load), the recipe command, wall
time and hardware, val/test top-1 and the attention entropy of every block. Found through
``importlib.resources``, so it works from any working directory and from an installed wheel.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any

import timm
from safetensors.torch import load
from torch import nn

CARD_SUFFIX = ".json"
WEIGHTS_SUFFIX = ".safetensors"


def _folder() -> Any:
    return resources.files(__name__)


def list_pretrained() -> list[str]:
    """Names of the shipped models, sorted."""
    return sorted(p.name[: -len(CARD_SUFFIX)] for p in _folder().iterdir() if p.name.endswith(CARD_SUFFIX))


def pretrained_card(name: str) -> dict[str, Any]:
    """The card of a shipped model; an unknown name is a one-line error listing the shipped ones."""
    if name not in list_pretrained():
        raise ValueError(f"model.shipped={name!r} is not a shipped model; choose one of {', '.join(list_pretrained())}")
    return json.loads(_folder().joinpath(name + CARD_SUFFIX).read_text())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pretrained_state_dict(name: str) -> dict[str, Any]:
    """The shipped weights of ``name``, after checking their sha256 against the card."""
    card = pretrained_card(name)
    data = _folder().joinpath(name + WEIGHTS_SUFFIX).read_bytes()
    digest = sha256_hex(data)
    if digest != card["sha256"]:
        raise ValueError(
            f"shipped weights {name}{WEIGHTS_SUFFIX} are corrupt: sha256 {digest} but the card says {card['sha256']}"
        )
    return load(data)


def load_pretrained(name: str) -> nn.Module:
    """The shipped timm model ``name`` in eval mode; ``model.pretrained_cfg`` holds its timm data config
    (input_size, mean, std, interpolation, crop_pct), so ``timm.data.resolve_model_data_config`` feeds it right."""
    card = pretrained_card(name)
    arch = card["model"]
    model = timm.create_model(arch["name"], pretrained=False, num_classes=arch["num_classes"], **arch["kwargs"])
    model.load_state_dict(pretrained_state_dict(name), strict=True)
    model.pretrained_cfg = {**dict(model.pretrained_cfg), **card["data_config"]}
    return model.eval()
