"""Physical removal of heads and MLP neurons from a timm Vision Transformer.

Whole heads go, never part of ``head_dim``, so the softmax scale (and timm's fused attention, which
takes no explicit scale) is unchanged. ``num_heads`` and ``attn_dim`` are rewritten because timm's
Attention reshapes with them. New layers are contiguous and keep the old device, dtype and
``requires_grad``, so the pruned model runs the same fast paths as the dense one.
"""

from __future__ import annotations

import torch
from torch import nn

from .plan import PrunePlan
from .units import find_blocks


def _slice_linear(layer: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    weight = layer.weight.detach()
    if rows is not None:
        weight = weight.index_select(0, rows.to(weight.device))
    if cols is not None:
        weight = weight.index_select(1, cols.to(weight.device))
    new = nn.Linear(
        weight.shape[1], weight.shape[0], bias=layer.bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if layer.bias is not None:
            bias = layer.bias.detach()
            new.bias.copy_(bias.index_select(0, rows.to(bias.device)) if rows is not None else bias)
    new.weight.requires_grad_(layer.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(layer.bias.requires_grad)
    return new


def _slice_norm(norm: nn.Module, index: torch.Tensor) -> None:
    """Slice an affine norm over the pruned dimension in place (Identity is left alone)."""
    for name in ("weight", "bias"):
        param = getattr(norm, name, None)
        if isinstance(param, nn.Parameter):
            setattr(norm, name, nn.Parameter(param.detach().index_select(0, index.to(param.device)).contiguous()))
    if hasattr(norm, "normalized_shape"):
        norm.normalized_shape = (int(index.numel()),)


def head_channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Channel indices (within ``attn_dim``) of the given heads."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).flatten()


@torch.no_grad()
def apply_plan(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Remove, in place, every head and neuron the plan does not keep; returns ``model``.

    Example:
        >>> model = timm.create_model("deit_tiny_patch16_224")
        >>> apply_plan(model, plan)  # doctest: +SKIP
    """
    blocks = find_blocks(model)
    plan.check(blocks)
    for block, kept_h, kept_n in zip(blocks, plan.heads, plan.neurons, strict=True):
        attn, mlp = block.attn, block.mlp
        if len(kept_h) < block.num_heads:
            heads = torch.tensor(kept_h, dtype=torch.long)
            channels = head_channels(heads, block.head_dim)
            attn_dim = block.num_heads * block.head_dim
            rows = torch.cat([s * attn_dim + channels for s in range(3)])
            attn.qkv = _slice_linear(attn.qkv, rows=rows)
            attn.proj = _slice_linear(attn.proj, cols=channels)
            if getattr(attn, "gate", None) is not None:
                attn.gate = _slice_linear(attn.gate, rows=channels)
            if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
                _slice_norm(attn.norm, channels)
            attn.num_heads = len(kept_h)
            if hasattr(attn, "attn_dim"):
                attn.attn_dim = len(kept_h) * block.head_dim
        if len(kept_n) < block.hidden:
            neurons = torch.tensor(kept_n, dtype=torch.long)
            mlp.fc1 = _slice_linear(mlp.fc1, rows=neurons)
            mlp.fc2 = _slice_linear(mlp.fc2, cols=neurons)
            if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
                _slice_norm(mlp.norm, neurons)
    return model
