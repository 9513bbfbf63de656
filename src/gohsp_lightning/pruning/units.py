"""Find the blocks of a timm Vision Transformer and read the shapes its prunable structures live in.

What a structure is (heads, MLP neurons), what it costs and how it is cut lives in :mod:`.structures`.
Everything here reads shapes only; it never changes the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .layouts import SUPPORTED_FAMILIES, check_model, head_layout, neuron_layout


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
    # the block itself and the whole model, for structures that cross blocks (residual channels)
    module: nn.Module | None = field(default=None, compare=False, repr=False)
    model: nn.Module | None = field(default=None, compare=False, repr=False)


def find_blocks(model: nn.Module) -> list[BlockUnits]:
    """Return the prunable units of every block of a timm ``VisionTransformer``-like model.

    Raises:
        ValueError: one line, if the model has no ``blocks`` of ``attn`` + ``mlp`` whose classes
            :mod:`.layouts` knows, or shares per-head tensors across blocks (:func:`.layouts.check_model`).
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no 'blocks': GOHSP prunes timm VisionTransformer-style models")
    check_model(model)
    found = []
    for index, block in enumerate(blocks):
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        if attn is None or mlp is None:
            raise ValueError(f"block {index} of {type(model).__name__} has no 'attn' and 'mlp' to prune")
        try:
            found.append(block_units(index, attn, mlp, block, model))
        except ValueError as error:
            raise ValueError(f"block {index} of {type(model).__name__}: {error}") from None
    return found


def block_units(
    index: int, attn: nn.Module, mlp: nn.Module, module: nn.Module | None = None, model: nn.Module | None = None
) -> BlockUnits:
    """The shapes of one block's attention and MLP, read through their layouts."""
    heads, neurons = head_layout(attn), neuron_layout(mlp)
    return BlockUnits(
        index=index,
        attn=attn,
        mlp=mlp,
        num_heads=heads.units,
        head_dim=heads.width,
        hidden=neurons.units,
        dim=int(heads.consumer.out_features),
        module=module,
        model=model,
    )


def num_tokens(model: nn.Module) -> int:
    """Tokens per image the blocks see (patches plus class/register tokens)."""
    patches = model.patch_embed.num_patches
    prefix = getattr(model, "num_prefix_tokens", 1)
    return int(patches + prefix)


def model_input_size(model: nn.Module) -> tuple[int, ...] | None:
    """The (C, H, W) the model was built for: its patch embedding's, else its pretrained config's."""
    embed = getattr(model, "patch_embed", None)
    if embed is not None and getattr(embed, "img_size", None) is not None:
        return (int(embed.proj.in_channels), *(int(s) for s in embed.img_size))
    return getattr(model, "pretrained_cfg", {}).get("input_size")
