"""ONNX export of a pruned (or dense) timm ViT, with a dynamic batch size and an onnxruntime check.

The pruned model is plain timm modules with smaller ``nn.Linear`` layers and fewer heads (no hooks,
no masks), so it exports like any timm ViT: ``torch.onnx.export`` (the ``torch.export``-based
exporter) traces it, and timm's fused attention becomes ONNX attention ops. ``onnx``, ``onnxscript``
and ``onnxruntime`` are optional dependencies (``pip install "gohsp-lightning[onnx]"``), imported only here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .export import load_pruned, read_config
from .files import atomic_write
from .units import model_input_size

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
INSTALL_HINT = 'pip install "gohsp-lightning[onnx]"'


def _require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency or fail with one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{purpose} needs the optional package {module!r}: {INSTALL_HINT}") from None


def _resolve(source: nn.Module | str | Path, input_size: tuple[int, ...] | None) -> tuple[nn.Module, tuple[int, ...]]:
    if isinstance(source, nn.Module):
        model = source
        size = input_size or model_input_size(model)
    else:
        model = load_pruned(source)
        size = input_size or read_config(source)["data_config"].get("input_size")
    if size is None or len(size) != 3:
        raise ValueError(f"ONNX export needs input_size=(C, H, W); got {size!r} (pass input_size=...)")
    return model, tuple(int(s) for s in size)


@torch.no_grad()
def verify_onnx(
    path: str | Path, model: nn.Module, images: torch.Tensor, atol: float = 1e-4, rtol: float = 1e-3
) -> float:
    """Run ``images`` through onnxruntime and ``model``; return the largest absolute difference.

    Raises:
        ValueError: if the outputs differ beyond ``atol + rtol * |torch output|``.
    """
    ort = _require("onnxruntime", "checking an ONNX export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    param = next(model.parameters())
    expected = model(images.to(param.device, param.dtype)).float().cpu()
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.float().cpu().numpy()})
    got = torch.from_numpy(got)
    if got.shape != expected.shape:
        raise ValueError(f"{path}: onnxruntime output shape {tuple(got.shape)} != PyTorch {tuple(expected.shape)}")
    diff = (got - expected).abs()
    if bool((diff > atol + rtol * expected.abs()).any()):
        raise ValueError(f"{path}: onnxruntime output differs from PyTorch by up to {float(diff.max()):.3g}")
    return float(diff.max())


def export_onnx(
    source: nn.Module | str | Path,
    out_path: str | Path,
    input_size: tuple[int, ...] | None = None,
    opset: int = 18,
    dynamic_batch: bool = True,
    verify: bool = True,
) -> Path:
    """Export a model, or an export directory written by ``save_pruned``, to one ``.onnx`` file.

    The graph takes ``images`` ``[batch, C, H, W]`` (batch dynamic unless ``dynamic_batch=False``) and
    returns ``logits``. With ``verify`` (default), onnxruntime runs a batch of a different size than
    the traced one and must agree with PyTorch, so a bad export fails here, not in production.

    Example:
        >>> export_onnx("outputs/run/pruned", "pruned.onnx")  # doctest: +SKIP
    """
    for module in ("onnx", "onnxscript"):
        _require(module, "ONNX export")
    model, size = _resolve(source, input_size)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        example = torch.randn(2, *size, device=param.device, dtype=param.dtype)
        dynamic: dict[str, Any] = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},)} if dynamic_batch else {}

        def write(tmp: Path) -> None:
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
                **dynamic,
            )

        out = atomic_write(out_path, write)
        if verify:
            check = torch.randn(3 if dynamic_batch else 2, *size, generator=torch.Generator().manual_seed(0))
            verify_onnx(out, model, check)
    finally:
        model.train(was_training)
    return out
