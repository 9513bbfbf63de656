"""Data: ImageFolder (ImageNet layout) or torchvision CIFAR-10, with timm transforms and mixup.

The calibration set for head ranking is a fixed, evenly spaced slice of the training set with eval
transforms, identical on every rank (no DistributedSampler, no shuffling).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import timm.data
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import CIFAR10, ImageFolder

from .config import DataConfig


def resolve_data_config(cfg: DataConfig, model: torch.nn.Module) -> dict[str, Any]:
    """timm's data config of ``model`` (input_size, mean, std, interpolation, crop_pct) with ``cfg``'s overrides."""
    data_config = dict(timm.data.resolve_model_data_config(model))
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:  # timm reports the pretrained size (224) even for a model built at another size
        data_config["input_size"] = (data_config["input_size"][0], *img_size)
    overrides = {
        "input_size": tuple(cfg.input_size) if cfg.input_size else None,
        "crop_pct": cfg.crop_pct,
        "mean": tuple(cfg.mean) if cfg.mean else None,
        "std": tuple(cfg.std) if cfg.std else None,
        "interpolation": cfg.interpolation,
    }
    data_config.update({k: v for k, v in overrides.items() if v is not None})
    return data_config


TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct")  # what the eval transform reads


def eval_transform(data_config: dict[str, Any]) -> Any:
    """timm's evaluation transform for ``data_config`` (resize, centre crop at ``crop_pct``, normalise): what
    validation, the held-out evaluation and the shipped model's card all measure with."""
    return timm.data.create_transform(**{k: data_config[k] for k in TRANSFORM_KEYS}, is_training=False)


def check_data_root(cfg: DataConfig, splits: Sequence[str] | None = None) -> None:
    """Raise a one-line FileNotFoundError if ``data.root`` (or a split folder of it) is missing.

    Cheap (no image is read), so a run calls it before it builds or downloads a model: a wrong data root
    is then reported as such, not as a network error from the hub. ``splits`` defaults to train and val.
    """
    root = Path(cfg.root)
    if cfg.dataset == "cifar10":
        if not cfg.download and not root.exists():
            raise FileNotFoundError(f"data.root={cfg.root!r} does not exist (set data.download=true to fetch CIFAR-10)")
        return
    for split in splits or (cfg.train_split, cfg.val_split):
        layout = f"ImageFolder layout: {cfg.root}/{split}/<class>/<image>"
        if not root.is_dir():
            raise FileNotFoundError(f"data.root={cfg.root!r} does not exist ({layout})")
        if not (root / split).is_dir():
            raise FileNotFoundError(f"data.root={cfg.root!r} has no {split!r} folder ({layout})")


def mixup_fn(cfg: DataConfig, num_classes: int) -> timm.data.Mixup | None:
    """timm's batch-level Mixup/CutMix (with label smoothing), or None when both are off."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return timm.data.Mixup(
        mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing, num_classes=num_classes
    )


class ImageDataModule(L.LightningDataModule):
    """Train/val loaders for an ImageFolder root or CIFAR-10, plus the calibration loader."""

    def __init__(self, cfg: DataConfig, data_config: dict[str, Any], num_classes: int) -> None:
        super().__init__()
        self.cfg, self.data_config, self.num_classes = cfg, data_config, num_classes
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.calib_set: Dataset | None = None

    def _transform(self, training: bool) -> Any:
        dc = self.data_config
        if not training:
            return eval_transform(dc)
        return timm.data.create_transform(
            **{k: dc[k] for k in TRANSFORM_KEYS if k != "crop_pct"},
            is_training=True,
            scale=tuple(self.cfg.scale),
            hflip=self.cfg.hflip,
            auto_augment=self.cfg.auto_augment,
            re_prob=self.cfg.re_prob,
        )

    def _dataset(self, split: str, training: bool) -> Dataset:
        cfg = self.cfg
        root = Path(cfg.root)
        transform = self._transform(training)
        check_data_root(cfg, (split,))
        if cfg.dataset == "cifar10":
            dataset: Any = CIFAR10(
                str(root), train=split == cfg.train_split, download=cfg.download, transform=transform
            )
            classes = dataset.classes
        else:
            folder = root / split
            try:
                dataset = ImageFolder(str(folder), transform=transform)
            except (FileNotFoundError, RuntimeError) as err:
                raise FileNotFoundError(f"data.root={cfg.root!r}: {folder} holds no images ({err})") from None
            classes = dataset.classes
        if len(classes) != self.num_classes:
            raise ValueError(
                f"data.root={cfg.root!r} has {len(classes)} classes in {split!r} "
                f"but model.num_classes={self.num_classes}; set model.num_classes to match"
            )
        return dataset

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(self.cfg.train_split, training=True)
            self.val_set = self._dataset(self.cfg.val_split, training=False)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool = False) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        mixing = self.cfg.mixup > 0 or self.cfg.cutmix > 0
        return self._loader(self.train_set, self.cfg.batch_size, shuffle=True, drop_last=mixing)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, self.cfg.eval_batch_size, shuffle=False)

    def calibration_loader(self, images: int, batch_size: int) -> DataLoader:
        """``images`` training images, evenly spaced over the set (all classes), eval transforms, fixed order."""
        self.setup()
        if self.calib_set is None or len(self.calib_set) != min(images, len(self.train_set)):
            self.calib_set = self.fixed_subset(self.cfg.train_split, images)
        return DataLoader(self.calib_set, batch_size=batch_size, shuffle=False, num_workers=0)

    def fixed_subset(self, split: str, images: int, exclude: Sequence[int] = ()) -> Subset:
        """``images`` images of ``split`` with eval transforms, evenly spaced over the images not in ``exclude``.

        Folders and CIFAR-10 are sorted by class, so even spacing covers every class. Two calls where the
        second excludes the first's ``indices`` give disjoint sets (e.g. for a test-retest of a ranking).
        """
        base = self._dataset(split, training=False)
        skip = set(exclude)
        candidates = [i for i in range(len(base)) if i not in skip]
        count = min(images, len(candidates))
        if count == 0:
            raise ValueError(f"data split {split!r} has no images left to pick {images} from")
        positions = torch.linspace(0, len(candidates) - 1, count).round().long().tolist()
        return Subset(base, [candidates[p] for p in positions])


class CalibrationBatches:
    """``batches()`` for the rankers: a fresh iterator over the calibration set on every call.

    A class rather than a closure because ``ddp_spawn`` pickles the callbacks that hold it.
    """

    def __init__(self, dm: ImageDataModule, images: int, batch_size: int) -> None:
        self.dm, self.images, self.batch_size = dm, images, batch_size

    def __call__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.dm.calibration_loader(self.images, self.batch_size))
