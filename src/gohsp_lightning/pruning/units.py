"""Find the blocks of a timm Vision Transformer and read the shapes its prunable structures live in.

What a structure is (heads, MLP neurons), what it costs and how it is cut lives in :mod:`.structures`.
Everything here reads shapes only; it never changes the model.
"""

from __future__ import annotations

from dataclasses import dataclass

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
