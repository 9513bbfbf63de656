"""Ship a trained dense model in the package: weights (safetensors) + card (JSON) with measured figures.

    python scripts/ship_pretrained.py --run-dir outputs/pretrain_cifar10/<date> \
        --data-root ../shared/data/cifar10_full --name vit6x6_cifar10

Reads the run's export (``<run dir>/pruned/``: the dense model, as a ``pruning=dense`` run leaves it) or, with
``--checkpoint``, a Lightning checkpoint of an unfinished run; measures top-1 on ``val`` and ``test`` of
``--data-root`` and the mean attention entropy of every block on 512 val images; writes
``src/gohsp_lightning/pretrained/<name>.safetensors`` and ``<name>.json`` (sha256 of the weights inside).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from gohsp_lightning.config import DataConfig
from gohsp_lightning.data import TRANSFORM_KEYS, ImageDataModule, resolve_data_config
from gohsp_lightning.evaluate import evaluate_model, split_dataset
from gohsp_lightning.pretrained import sha256_hex
from gohsp_lightning.pruning import find_blocks
from gohsp_lightning.pruning.activations import head_statistics
from gohsp_lightning.pruning.export import read_config

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gohsp_lightning" / "pretrained"


def weights_of(run_dir: Path, checkpoint: Path | None) -> tuple[dict[str, torch.Tensor], dict, int]:
    """The dense weights, the export config (model name and kwargs) and the epochs trained."""
    if checkpoint is None:
        marker = json.loads((run_dir / "stages" / "dense.json").read_text())
        state = load_file(str(run_dir / "pruned" / "model.safetensors"))
        return state, read_config(run_dir / "pruned"), int(marker["settings"]["pruning.dense_epochs"])
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model_cfg = ckpt["hyper_parameters"]["config"]["model"]
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    kwargs = {**model_cfg["kwargs"], "num_classes": model_cfg["num_classes"]}
    return state, {"model_name": model_cfg["name"], "model_kwargs": kwargs}, int(ckpt["epoch"]) + 1


def top1(model: torch.nn.Module, root: Path, split: str, data_config: dict) -> tuple[float, int]:
    outcome = evaluate_model(model, split_dataset(root, split, data_config))
    return outcome.top1, outcome.images


def recipe(args: argparse.Namespace, epochs: int, wall: float, earlier: dict | None) -> dict:
    """How the weights were made; a continued run lists the phases, and the totals add up."""
    this = {
        "command": args.command,
        "config": "conf/experiment/pretrain_cifar10.yaml",
        "epochs": epochs,
        "train_images": 50000,
        "wall_time_s": round(wall),
        "hardware": args.hardware,
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    if earlier is None:
        return this
    phases = [*earlier.get("phases", [earlier]), this]
    return {
        **this,
        "command": " && ".join(p["command"] for p in phases),
        "epochs": sum(p["epochs"] for p in phases),
        "wall_time_s": sum(p["wall_time_s"] for p in phases),
        "phases": phases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a .ckpt of an unfinished run instead")
    parser.add_argument("--data-root", type=Path, required=True, help="ImageFolder root with val/ and test/")
    parser.add_argument("--name", required=True)
    parser.add_argument("--command", default="python run.py experiment=pretrain_cifar10 data.root=<cifar10_full>")
    parser.add_argument("--hardware", default=f"{platform.processor() or platform.machine()}, CPU only")
    parser.add_argument("--wall-time-s", type=float, default=None, help="default: from the run's files")
    parser.add_argument(
        "--continues",
        type=Path,
        default=None,
        help="the card of the weights this run started from (model.checkpoint=...): the new card's recipe lists "
        "both phases, and its epochs and wall time add up",
    )
    args = parser.parse_args()
    earlier = json.loads(args.continues.read_text())["recipe"] if args.continues is not None else None

    state, config, epochs = weights_of(args.run_dir, args.checkpoint)
    kwargs = dict(config["model_kwargs"])
    num_classes = kwargs.pop("num_classes")
    model = timm.create_model(config["model_name"], pretrained=False, num_classes=num_classes, **kwargs)
    model.load_state_dict(state, strict=True)
    model.eval()
    resolved = resolve_data_config(DataConfig(crop_pct=1.0), model)  # the input size the model was built at
    data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items() if k in TRANSFORM_KEYS}
    val_top1, val_n = top1(model, args.data_root, "val", data_config)
    test_top1, test_n = top1(model, args.data_root, "test", data_config)
    dm = ImageDataModule(DataConfig(root=str(args.data_root), val_split="val"), data_config, num_classes)
    dm.setup()
    entropy_images = list(DataLoader(dm.fixed_subset("val", 512), batch_size=128))
    stats = head_statistics(model, find_blocks(model), (x for x, _ in entropy_images))
    wall = args.wall_time_s
    if wall is None:  # from the loggers' first file to the dense stage's marker (or the checkpoint)
        end = args.checkpoint or args.run_dir / "stages" / "dense.json"
        wall = end.stat().st_mtime - (args.run_dir / "csv" / "hparams.yaml").stat().st_mtime
    weights_file = PACKAGE / f"{args.name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights_file), metadata={"format": "pt"})
    card = {
        "name": args.name,
        "model": {"name": config["model_name"], "kwargs": kwargs, "num_classes": num_classes},
        "sha256": sha256_hex(weights_file.read_bytes()),
        "params": sum(p.numel() for p in model.parameters()),
        "data_config": data_config,
        "classes": ImageFolder(str(args.data_root / "val")).classes,
        "recipe": recipe(args, epochs, wall, earlier),
        "metrics": {"val_top1": val_top1, "val_images": val_n, "test_top1": test_top1, "test_images": test_n},
        "attention_entropy": {
            "per_block": [round(float(e.mean()), 4) for e in stats.entropy],
            "per_head": [[round(float(v), 4) for v in e] for e in stats.entropy],
            "ln_tokens": round(math.log(stats.tokens), 4),
            "images": stats.images,
            "split": "val",
        },
    }
    (PACKAGE / f"{args.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({k: card[k] for k in ("name", "sha256", "metrics", "attention_entropy")}, indent=2))


if __name__ == "__main__":
    main()
