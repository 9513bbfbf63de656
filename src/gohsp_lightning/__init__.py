"""gohsp-lightning: GOHSP structured pruning of timm Vision Transformers with PyTorch Lightning and Hydra."""

from .pretrained import list_pretrained, load_pretrained
from .pruning import PrunePlan, apply_plan, load_pruned, save_pruned
from .pruning.onnx_export import export_onnx

__version__ = "0.1.0"

__all__ = [
    "PrunePlan",
    "__version__",
    "apply_plan",
    "export_onnx",
    "list_pretrained",
    "load_pretrained",
    "load_pruned",
    "save_pruned",
]
