"""Held-out figures for finished runs: top-1 on a split that no run has seen.

    python -m gohsp_lightning.evaluate RUN_OR_SWEEP_DIR... --root ../shared/data/cifar10_full [--split test]

Runs choose their recipe on ``val``; a comparison is reported on images none of them saw. For every run dir
(a dir with ``summary.json``, or every such job of a sweep dir) this measures, on ``<root>/<split>``
(ImageFolder layout), the pruned export (``<run>/pruned/``) and the model the run started pruning from
(``<run>/stages/dense.safetensors``: the pretrained model when the run had no dense epochs), each with the
eval transform of the export's data config, and writes ``<run>/eval_<split>.json``. A sweep dir's report
(:mod:`.sweep_report`) is rebuilt afterwards, with the ``test`` figures beside val. The evaluation happens
after the runs, from their files, so a held-out split cannot leak into any run's choices.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
from safetensors.torch import load
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from .data import TRANSFORM_KEYS, eval_transform
from .errors import one_line
from .pruning.export import load_pruned, read_config
from .pruning.files import atomic_write_json
from .pruning.quality import per_image_outcomes
from .summary import SUMMARY_FILE
from .sweep_report import build_report, eval_file, job_dirs, summary_digest


@dataclass(frozen=True)
class Outcome:
    top1: float
    ce: float
    images: int


def split_dataset(root: str | Path, split: str, data_config: dict[str, Any]) -> ImageFolder:
    """``<root>/<split>`` with timm's eval transform for ``data_config``; a missing folder is a one-line error."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"--root={str(root)!r} has no {split!r} folder (ImageFolder layout: {folder}/<class>/)")
    return ImageFolder(str(folder), transform=eval_transform(data_config))


def evaluate_model(model: nn.Module, dataset: ImageFolder, batch_size: int = 500) -> Outcome:
    """Top-1 and mean cross-entropy of ``model`` (eval mode, CPU) over every image of ``dataset``."""
    head = getattr(model, "num_classes", None)
    if head is not None and head != len(dataset.classes):
        raise ValueError(f"{dataset.root} has {len(dataset.classes)} classes but the model predicts {head}")
    losses, correct = per_image_outcomes(model.eval(), DataLoader(dataset, batch_size=batch_size))
    return Outcome(top1=float(correct.mean()), ce=float(losses.mean()), images=int(correct.numel()))


def starting_weights(run_dir: Path) -> bytes:
    """The safetensors bytes of the dense model a run pruned (its ``dense`` stage weights)."""
    path = run_dir / "stages" / "dense.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no stages/dense.safetensors (the weights the run started pruning from)")
    return path.read_bytes()


def starting_model(data: bytes, export: dict[str, Any], source: Path) -> nn.Module:
    """The dense architecture of ``export`` with the weights ``data`` (read from ``source``), in eval mode."""
    model = timm.create_model(export["model_name"], pretrained=False, **export["model_kwargs"])
    try:
        model.load_state_dict(load(data), strict=True)
    except Exception as err:  # truncated (SafetensorError) or another model's weights (RuntimeError)
        raise ValueError(f"{source} cannot be loaded as the run's dense model: {one_line(err)}") from None
    return model.eval()


def run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Each path as a run dir (it holds ``summary.json``) or as a sweep dir (its jobs that finished)."""
    found: list[Path] = []
    for path in paths:
        if (path / SUMMARY_FILE).is_file():
            found.append(path)
            continue
        jobs = job_dirs(path) if path.is_dir() else []
        if not jobs:
            raise FileNotFoundError(f"{path} is neither a finished run dir ({SUMMARY_FILE}) nor a sweep dir")
        found += [job for job in jobs if (job / SUMMARY_FILE).is_file()]
    return found


class Evaluator:
    """Evaluates runs on one split; the starting model of many runs (one pretrained model, one transform) is
    measured once."""

    def __init__(self, root: Path, split: str, batch_size: int) -> None:
        self.root, self.split, self.batch_size = root, split, batch_size
        self.starting: dict[tuple[str, str], Outcome] = {}

    def _outcome(self, model: nn.Module, data_config: dict[str, Any]) -> Outcome:
        return evaluate_model(model, split_dataset(self.root, self.split, data_config), self.batch_size)

    def run(self, run_dir: Path) -> dict[str, Any]:
        """Evaluate one run and write its ``eval_<split>.json``; returns what was written."""
        export = read_config(run_dir / "pruned")
        data_config = export["data_config"]
        weights = starting_weights(run_dir)
        digest = hashlib.sha256(weights).hexdigest()
        key = (digest, json.dumps({k: data_config[k] for k in TRANSFORM_KEYS}, sort_keys=True))
        if key not in self.starting:
            dense = starting_model(weights, export, run_dir / "stages" / "dense.safetensors")
            self.starting[key] = self._outcome(dense, data_config)
        result = {
            "split": self.split,
            "root": str(self.root),
            "summary_sha256": summary_digest(run_dir),  # the report ignores this file once the run is redone
            "pruned": asdict(self._outcome(load_pruned(run_dir / "pruned"), data_config)),
            "dense": {**asdict(self.starting[key]), "sha256": digest},
        }
        atomic_write_json(run_dir / eval_file(self.split), result)
        return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gohsp_lightning.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", type=Path, nargs="+", help="run dirs (with summary.json) or sweep dirs")
    parser.add_argument("--root", type=Path, required=True, help="ImageFolder root holding the split")
    parser.add_argument("--split", default="test", help="the held-out split folder under --root (default test)")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    try:
        runs = run_dirs(args.paths)
        evaluator = Evaluator(args.root, args.split, args.batch_size)
        for run_dir in runs:
            result = evaluator.run(run_dir)
            print(
                f"{run_dir}: {args.split} top-1 {result['pruned']['top1']:.4f} pruned, "
                f"{result['dense']['top1']:.4f} dense ({result['pruned']['images']} images)"
            )
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    for path in args.paths:
        if not (path / SUMMARY_FILE).is_file():
            build_report(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
