"""Find the prunable structures of a timm Vision Transformer and say what each one costs.

A block holds two kinds of structure (heterogeneous granularity): attention heads (q, k, v rows of
``qkv`` plus the matching ``proj`` columns) and MLP neurons (a ``fc1`` row plus the matching ``fc2``
column). Everything here reads shapes only; it never changes the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BlockUnits:
    """The prunable parts of one transformer block."""

    index: int
    attn: nn.Module
    mlp: nn.Module
    num_heads: int
    head_dim: int
    hidden: int
    dim: int

    @property
    def head_params(self) -> int:
        """Parameters removed with one head: q, k, v rows (+ biases) and its proj columns."""
        qkv_bias = 3 * self.head_dim if self.attn.qkv.bias is not None else 0
        return 3 * self.head_dim * self.dim + qkv_bias + self.head_dim * self.dim

    @property
    def neuron_params(self) -> int:
        """Parameters removed with one MLP neuron: a fc1 row (+ bias) and a fc2 column."""
        fc1_bias = 1 if self.mlp.fc1.bias is not None else 0
        return 2 * self.dim + fc1_bias

    def head_flops(self, tokens: int) -> int:
        """FLOPs (multiply-add = 2) one head costs per image: its qkv and proj slices and its attention."""
        linear = 2 * tokens * self.dim * 4 * self.head_dim
        attention = 2 * 2 * tokens * tokens * self.head_dim
        return linear + attention

    def neuron_flops(self, tokens: int) -> int:
        """FLOPs one MLP neuron costs per image (fc1 row and fc2 column)."""
        return 2 * 2 * tokens * self.dim


def find_blocks(model: nn.Module) -> list[BlockUnits]:
    """Return the prunable units of every block of a timm ``VisionTransformer``-like model.

    Raises:
        ValueError: if the model has no ``blocks`` with ``attn.qkv``/``attn.proj``/``mlp.fc1``/``mlp.fc2``.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no 'blocks': GOHSP prunes timm VisionTransformer-style models")
    found = []
    for index, block in enumerate(blocks):
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        if not all(hasattr(attn, n) for n in ("qkv", "proj", "num_heads", "head_dim")) or not all(
            hasattr(mlp, n) for n in ("fc1", "fc2")
        ):
            raise ValueError(
                f"block {index} of {type(model).__name__} is not a timm Attention + Mlp block "
                "(needs attn.qkv, attn.proj, attn.num_heads, attn.head_dim, mlp.fc1, mlp.fc2)"
            )
        found.append(
            BlockUnits(
                index=index,
                attn=attn,
                mlp=mlp,
                num_heads=int(attn.num_heads),
                head_dim=int(attn.head_dim),
                hidden=int(mlp.fc1.out_features),
                dim=int(attn.proj.out_features),
            )
        )
    return found


def num_tokens(model: nn.Module) -> int:
    """Tokens per image the blocks see (patches plus class/register tokens)."""
    patches = model.patch_embed.num_patches
    prefix = getattr(model, "num_prefix_tokens", 1)
    return int(patches + prefix)


def block_weights(block: BlockUnits) -> dict[str, torch.Tensor]:
    """The weight tensors of one block that structured pruning touches, by a stable name."""
    weights = {
        "qkv.weight": block.attn.qkv.weight,
        "proj.weight": block.attn.proj.weight,
        "fc1.weight": block.mlp.fc1.weight,
        "fc2.weight": block.mlp.fc2.weight,
    }
    if block.attn.qkv.bias is not None:
        weights["qkv.bias"] = block.attn.qkv.bias
    if block.mlp.fc1.bias is not None:
        weights["fc1.bias"] = block.mlp.fc1.bias
    return weights


def group_sq_norms(weights: dict[str, torch.Tensor], num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared l2 norm of every head group and every neuron group of one block.

    Returns:
        ``(heads, neurons)``: float tensors of shape ``[num_heads]`` and ``[hidden]``.
    """
    qkv = weights["qkv.weight"].detach().float()
    dim = qkv.shape[1]
    heads = qkv.reshape(3, num_heads, -1, dim).pow(2).sum(dim=(0, 2, 3))
    heads = heads + weights["proj.weight"].detach().float().reshape(dim, num_heads, -1).pow(2).sum(dim=(0, 2))
    if "qkv.bias" in weights:
        heads = heads + weights["qkv.bias"].detach().float().reshape(3, num_heads, -1).pow(2).sum(dim=(0, 2))
    neurons = weights["fc1.weight"].detach().float().pow(2).sum(dim=1)
    neurons = neurons + weights["fc2.weight"].detach().float().pow(2).sum(dim=0)
    if "fc1.bias" in weights:
        neurons = neurons + weights["fc1.bias"].detach().float().pow(2)
    return heads, neurons


def zero_pruned(
    weights: dict[str, torch.Tensor], head_keep: torch.Tensor, neuron_keep: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Copies of ``weights`` with every removed head and neuron group set to zero.

    ``head_keep``/``neuron_keep`` are 0/1 vectors. This is the Euclidean projection of the block onto
    the structured-sparse set with that support.
    """
    num_heads = head_keep.numel()
    dim = weights["qkv.weight"].shape[1]
    out = {}
    for name, tensor in weights.items():
        h, n = head_keep.to(tensor), neuron_keep.to(tensor)
        if name == "qkv.weight":
            out[name] = (tensor.reshape(3, num_heads, -1, dim) * h[None, :, None, None]).reshape(tensor.shape)
        elif name == "qkv.bias":
            out[name] = (tensor.reshape(3, num_heads, -1) * h[None, :, None]).reshape(tensor.shape)
        elif name == "proj.weight":
            out[name] = (tensor.reshape(dim, num_heads, -1) * h[None, :, None]).reshape(tensor.shape)
        elif name in ("fc1.weight", "fc1.bias"):
            out[name] = tensor * (n[:, None] if tensor.dim() == 2 else n)
        elif name == "fc2.weight":
            out[name] = tensor * n[None, :]
        else:
            raise KeyError(f"unknown prunable weight {name!r}")
    return out


def prunable_weights(blocks: list[BlockUnits]) -> dict[str, torch.Tensor]:
    """Every block's prunable weights in one flat dict keyed ``"<block>.<name>"`` (the ADMM variables)."""
    return {f"{b.index}.{name}": w for b in blocks for name, w in block_weights(b).items()}


def split_by_block(flat: dict[str, torch.Tensor], num_blocks: int) -> list[dict[str, torch.Tensor]]:
    """Inverse of :func:`prunable_weights`' keying: one dict per block with the plain weight names."""
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(num_blocks)]
    for key, tensor in flat.items():
        block, name = key.split(".", 1)
        out[int(block)][name] = tensor
    return out
