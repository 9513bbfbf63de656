"""Find the blocks of a timm Vision Transformer and read the shapes its prunable structures live in.

What a structure is (heads, MLP neurons), what it costs and how it is cut lives in :mod:`.structures`.
Everything here reads shapes only; it never changes the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# timm modules whose models the structures prune correctly: blocks of timm's Attention (fused qkv laid out
# as (3, heads, head_dim), softmax(q k^T) attention) and Mlp (fc1 -> act -> fc2). Other families (EVA's RoPE
# and q/v biases, BEiT's relative position bias, Swin's windows, hybrids' CNN stems) compute attention in ways
# the head statistics and the surgery do not model yet: they are refused up front, not pruned wrongly.
SUPPORTED_FAMILIES: dict[str, str] = {
    "vision_transformer": "vit_* (AugReg, CLIP, DINOv2, register-token, global-pool and qk-norm ViTs)",
    "deit": "deit_*, deit_*_distilled, deit3_*",
}


def model_family(name: str) -> str:
    """The timm module that defines model ``name`` (e.g. ``vision_transformer``, ``swin_transformer``)."""
    from timm.models import model_entrypoint

    return model_entrypoint(name).__module__.rsplit(".", 1)[-1]


def check_family(name: str) -> None:
    """Raise a one-line ValueError unless timm model ``name`` is of a :data:`SUPPORTED_FAMILIES` family.

    Reads timm's registry only: nothing is built or downloaded.
    """
    family = model_family(name)
    if family not in SUPPORTED_FAMILIES:
        supported = "; ".join(f"{f}: {models}" for f, models in SUPPORTED_FAMILIES.items())
        raise ValueError(
            f"model.name={name!r} is a timm {family} model, which cannot be pruned here; supported: {supported}"
        )


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
        if mlp.fc2.in_features != mlp.fc1.out_features:
            raise ValueError(
                f"block {index} of {type(model).__name__} has a gated MLP ({type(mlp).__name__}: fc1 gives "
                f"{mlp.fc1.out_features} features, fc2 takes {mlp.fc2.in_features}); only timm's plain Mlp is supported"
            )
        found.append(block_units(index, attn, mlp))
    return found


def block_units(index: int, attn: nn.Module, mlp: nn.Module) -> BlockUnits:
    """The shapes of one block's timm Attention and Mlp (checked by :func:`find_blocks`)."""
    return BlockUnits(
        index=index,
        attn=attn,
        mlp=mlp,
        num_heads=int(attn.num_heads),
        head_dim=int(attn.head_dim),
        hidden=int(mlp.fc1.out_features),
        dim=int(attn.proj.out_features),
    )


def num_tokens(model: nn.Module) -> int:
    """Tokens per image the blocks see (patches plus class/register tokens)."""
    patches = model.patch_embed.num_patches
    prefix = getattr(model, "num_prefix_tokens", 1)
    return int(patches + prefix)
