"""Pure-PyTorch GOHSP core: units, structures, masks, head ranking, projection, ADMM, surgery, FLOPs, export.

Imports torch, timm, networkx and safetensors only (never Lightning, Hydra, OmegaConf or W&B), so it
can be used from any training loop.
"""

from .activations import attention_similarity
from .admm import AdmmState
from .export import load_pruned, read_config, save_pruned
from .flops import count_flops, count_params
from .masks import StructuredMasks
from .plan import PrunePlan
from .projection import Budget, StructuredProjector, check_feasible, project
from .ranking import head_graph, stationary_scores
from .structures import STRUCTURES, Structure, prunable_weights, structure_names
from .surgery import apply_plan
from .units import BlockUnits, find_blocks, num_tokens

__all__ = [
    "AdmmState",
    "BlockUnits",
    "Budget",
    "PrunePlan",
    "STRUCTURES",
    "Structure",
    "StructuredMasks",
    "StructuredProjector",
    "apply_plan",
    "attention_similarity",
    "check_feasible",
    "count_flops",
    "count_params",
    "find_blocks",
    "head_graph",
    "load_pruned",
    "num_tokens",
    "project",
    "prunable_weights",
    "read_config",
    "save_pruned",
    "stationary_scores",
    "structure_names",
]
