"""Physical removal of the units a plan drops (heads, MLP neurons, ...) from a timm Vision Transformer.

Each structure cuts its own layers (:meth:`Structure.cut`): new layers are contiguous and keep the
old device, dtype and ``requires_grad``, so the pruned model runs the same fast paths as the dense one.
Structures slice different axes (heads the rows of ``qkv``, channels its columns), so their order is free.
"""

from __future__ import annotations

import torch
from torch import nn

from .plan import PrunePlan
from .structures import STRUCTURES
from .units import find_blocks


@torch.no_grad()
def apply_plan(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Remove, in place, every unit the plan does not keep; returns ``model``.

    Example:
        >>> model = timm.create_model("deit_tiny_patch16_224")
        >>> apply_plan(model, plan)  # doctest: +SKIP
    """
    blocks = find_blocks(model)
    plan.check(blocks)
    for name, per_block in plan.kept.items():
        s = STRUCTURES[name]
        for block, kept in zip(s.owners(blocks), per_block, strict=True):
            if len(kept) < s.size(block):
                s.cut(block, torch.tensor(kept, dtype=torch.long))
    return model
