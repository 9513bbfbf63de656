"""Shared fixtures: tiny real timm ViTs, the embedded CIFAR-10 slice, and Hydra composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch

from gohsp_lightning import cli
from gohsp_lightning.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SUBSET = ROOT / "data" / "cifar10_subset"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Fast settings for pipeline runs in tests: a small real ViT at 32x32, no progress bar, no workers.
# The small real ViT (3 blocks of 4 heads, 16 tokens) every subprocess and pipeline test trains.
TINY_MODEL = [
    "model=tiny_cifar",  # random init (the default experiment prunes the shipped model, of another size)
    "model.kwargs.embed_dim=64",
    "model.kwargs.depth=3",
    "model.kwargs.num_heads=4",
    "model.kwargs.patch_size=8",
    "ranking.calibration_images=64",
]
# A short checkpointed run of the tiny model, for `python run.py` subprocess tests.
SHORT_RUN = [
    "logger=csv",
    "callbacks=model_checkpoint",
    "trainer.enable_progress_bar=false",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "data.num_workers=0",
    *TINY_MODEL,
]
FAST = [
    "admm.update_every_n_steps=0",  # Z/U once per epoch, as the module tests count them (the default run: 10 steps)
    "logger=csv",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_checkpointing=false",
    "data.num_workers=0",
    *TINY_MODEL,
]


def masked_forward(model: torch.nn.Module, plan, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with ``plan``'s structured masks attached (what the cut model should compute)."""
    from gohsp_lightning.pruning import StructuredMasks, find_blocks

    blocks = find_blocks(model)
    masks = StructuredMasks(blocks)
    masks.set_plan(plan)
    masks.attach(blocks)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        masks.detach()


def tiny_vit(seed: int = 0, **overrides) -> torch.nn.Module:
    """A real timm VisionTransformer at 32x32 with 3 blocks of 4 heads (head_dim 16, qkv bias on)."""
    torch.manual_seed(seed)
    kwargs = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, num_classes=10, qkv_bias=True)
    kwargs.update(overrides)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs).eval()


@pytest.fixture
def model() -> torch.nn.Module:
    return tiny_vit()


@pytest.fixture
def images() -> torch.Tensor:
    """Real CIFAR-10 images from the embedded slice, normalised like the model expects."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)])
    dataset = ImageFolder(str(SUBSET / "val"), transform=transform)
    return torch.stack([dataset[i * 125][0] for i in range(16)])


def compose_run(overrides: list[str], output_dir: Path) -> RunConfig:
    """Compose ``conf/`` like ``python run.py`` would, with the run dir set to ``output_dir``."""
    return cli.compose_run(overrides, output_dir, CONF)
