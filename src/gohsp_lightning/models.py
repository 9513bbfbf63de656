"""Build the student and teacher networks through timm (hub or local weights, any ViT kwargs)."""

from __future__ import annotations

import pickle
from typing import Any

import timm
from safetensors import SafetensorError
from torch import nn

from .config import ModelConfig
from .errors import one_line
from .pretrained import load_pretrained


def create_student(cfg: ModelConfig, weights: bool = True) -> nn.Module:
    """A timm model from ``cfg``: hub weights (``pretrained``), a local file (``checkpoint``), a model shipped
    in the package (``shipped``, sha256-checked) or random init.

    A local file is read by timm's loader (safetensors, or ``torch.load(weights_only=True)``); a
    classifier of another size than ``num_classes`` is dropped and re-initialised, as timm does for
    fine-tuning. ``weights=False`` builds the architecture only (seeded random init), for a resumed run
    whose weights come from its stage files: no download, and no dependence on ``model.checkpoint``.
    """
    if weights and cfg.shipped is not None:  # config.check_shipped made sure name/kwargs are the card's
        return load_pretrained(cfg.shipped).train()
    kwargs: dict[str, Any] = dict(cfg.kwargs)
    if weights and cfg.checkpoint is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": cfg.checkpoint}
    pretrained = weights and (cfg.pretrained or cfg.checkpoint is not None)
    try:
        return timm.create_model(cfg.name, pretrained=pretrained, num_classes=cfg.num_classes, **kwargs)
    except (RuntimeError, ValueError, OSError, pickle.UnpicklingError, SafetensorError) as err:
        if weights and cfg.checkpoint is not None:
            source = f"model.checkpoint={cfg.checkpoint!r}"
        else:
            source = "the hub" if pretrained else "random init"
        raise ValueError(f"could not build model.name={cfg.name!r} from {source}: {one_line(err)}") from err


def create_teacher(name: str, num_classes: int, checkpoint: str | None) -> nn.Module:
    """A frozen timm teacher (e.g. ``regnety_160``) in eval mode, for knowledge distillation."""
    teacher = create_student(
        ModelConfig(name=name, pretrained=checkpoint is None, checkpoint=checkpoint, num_classes=num_classes)
    )
    return freeze(teacher)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a teacher never trains."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
