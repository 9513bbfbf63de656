"""gohsp-lightning: GOHSP structured pruning of timm Vision Transformers with PyTorch Lightning and Hydra."""

from .pruning import PrunePlan, apply_plan, load_pruned, save_pruned
from .pruning.onnx_export import export_onnx

__version__ = "0.1.0"

__all__ = ["PrunePlan", "__version__", "apply_plan", "export_onnx", "load_pruned", "save_pruned"]
