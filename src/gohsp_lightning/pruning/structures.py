"""Prunable structures by name: what a unit of each is, what it costs, and how it is zeroed, gated and cut.

A structure (attention heads, MLP neurons, residual channels) is one class registered in
:data:`STRUCTURES`. The rest of the core (projection, plan, masks, surgery, rankers) treats any set of
them alike and asks the structure for anything that depends on which one it is, so adding a structure
means adding one class here. The order of :data:`STRUCTURES` is the tie-break order of the projection.

Heads and neurons repeat in every block; residual channels are ``shared``: one set of units for the
whole model, whose single owner is the first block (:meth:`Structure.owners`). A structure's slices of a
block's weights (:meth:`Structure.weights`) are the ADMM variables; channels slice the same tensors as
heads and neurons along the other axis, so their zeroings compose (:func:`zero_pruned`).

Why one module of ~300 lines: the three structures and the helpers over all of them are one registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .layouts import (
    UnitLayout,
    UnitSlice,
    block_channel_layout,
    channel_layout,
    head_layout,
    masked_norm,
    neuron_layout,
    stream_classifiers,
    stream_norms,
)
from .units import BlockUnits

Gate = Callable[[], torch.Tensor]


class HookGroup:
    """Several hooks removed together, like one :class:`RemovableHandle`."""

    def __init__(self, handles: list[RemovableHandle]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class Structure(ABC):
    """One kind of prunable unit, repeated ``size(block)`` times in every block.

    Where the units sit in a block's tensors is the family's business (:mod:`.layouts`); a structure says
    which layout it reads (:meth:`layout`) and what its unit costs beyond its weights' matmuls.
    """

    name: ClassVar[str]
    unit: ClassVar[str]  # one of them, in messages
    # pruning.round_to aligns the kept count of this structure (MLP widths); others move one unit at a time
    aligned: ClassVar[bool] = False
    # one set of units for the whole model (owned by the first block), not one per block
    shared: ClassVar[bool] = False

    @abstractmethod
    def layout(self, block: BlockUnits) -> UnitLayout:
        """Where this structure's units live: in ``block``, or in the whole model for a shared structure."""

    def block_layout(self, block: BlockUnits) -> UnitLayout:
        """The units' slices inside ``block`` alone (what ADMM and the per-block projection see)."""
        return self.layout(block)

    def owners(self, blocks: list[BlockUnits]) -> list[BlockUnits]:
        """The blocks that each hold one set of units: every block, or the first for a shared structure."""
        return list(blocks[:1]) if self.shared else list(blocks)

    @abstractmethod
    def module(self, block: BlockUnits) -> nn.Module:
        """The sub-module whose run time the units set (it maps the block's ``[batch, tokens, dim]`` input)."""

    @abstractmethod
    def size(self, block: BlockUnits) -> int:
        """Units of this structure in the block as :func:`.find_blocks` saw it (before any later cut)."""

    def unit_params(self, block: BlockUnits) -> int:
        """Parameters one unit holds (what removing it saves)."""
        return sum(s.per_unit for s in self.layout(block).slices if s.is_parameter)

    def positions(self, piece: UnitSlice, block: BlockUnits, tokens: int) -> int:
        """Positions per image the layer holding ``piece`` multiplies (0 for a slice that is no weight)."""
        return tokens if piece.is_linear_weight else 0

    def extra_flops(self, block: BlockUnits, tokens: int) -> int:
        """FLOPs one unit costs per image outside its weights' matmuls."""
        return 0

    def unit_flops(self, block: BlockUnits, tokens: int) -> int:
        """FLOPs (multiply-add = 2) one unit costs per image: its rows and columns of every weight."""
        slices = self.layout(block).slices
        return 2 * sum(self.positions(s, block, tokens) * s.per_unit for s in slices) + self.extra_flops(block, tokens)

    def weights(self, block: BlockUnits) -> dict[str, torch.Tensor]:
        """The block's tensors this structure prunes, by a stable name (the ADMM variables' keys)."""
        return {name: s.tensor for name, s in self.block_layout(block).group.items()}

    def group_sums(self, tensors: dict[str, torch.Tensor], block: BlockUnits) -> torch.Tensor:
        """Signed sum over every unit's group of ``tensors`` (shaped like :meth:`weights`), ``[size]``."""
        group = self.block_layout(block).group
        return sum(s.group_sums(tensors[name]) for name, s in group.items() if name in tensors)

    def sq_norms(self, weights: dict[str, torch.Tensor], block: BlockUnits) -> torch.Tensor:
        """Squared l2 norm of every unit's group in ``weights`` (float, ``[size]``)."""
        return self.group_sums({n: w.detach().float().pow(2) for n, w in weights.items()}, block)

    def zero(self, weights: dict[str, torch.Tensor], keep: torch.Tensor, block: BlockUnits) -> dict[str, torch.Tensor]:
        """Copies of this structure's tensors in ``weights`` with the units ``keep`` (0/1) drops zeroed."""
        group = self.block_layout(block).group
        return {name: s.scaled(weights[name], keep) for name, s in group.items() if name in weights}

    def cut(self, block: BlockUnits, kept: torch.Tensor) -> None:
        """Remove, in place, every unit of ``block`` not in ``kept`` (sorted indices)."""
        self.layout(block).cut(kept)

    def consumer(self, block: BlockUnits) -> nn.Linear:
        """The layer that takes the units' outputs as its input columns (where gates act and fold)."""
        return self.layout(block).consumer

    def unit_width(self, block: BlockUnits) -> int:
        """Input columns of :meth:`consumer` per unit."""
        return self.layout(block).width

    def gate(self, block: BlockUnits, gate: Gate) -> RemovableHandle | HookGroup:
        """Multiply every unit's output by ``gate()[unit]`` in the forward pass, until the handle is removed."""
        width = self.unit_width(block)

        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return (args[0] * gate().to(args[0].dtype).repeat_interleave(width), *args[1:])

        return self.consumer(block).register_forward_pre_hook(hook)

    def fold(self, block: BlockUnits, gate: torch.Tensor) -> None:
        """Multiply ``gate`` (one value per unit) into the layer each unit feeds, in place: the block then
        computes without a hook what :meth:`gate` made it compute."""
        weight = self.consumer(block).weight
        with torch.no_grad():
            weight.mul_(gate.to(weight).repeat_interleave(self.unit_width(block))[None, :])


class Heads(Structure):
    """Attention heads: a head's q, k, v rows (and biases) plus its ``proj`` columns, wherever the family
    keeps them. Whole heads go, never part of ``head_dim``, so the softmax scale (and fused attention,
    which takes no explicit scale) is unchanged."""

    name = "heads"
    unit = "head"

    def layout(self, block: BlockUnits) -> UnitLayout:
        return head_layout(block.attn)

    def size(self, block: BlockUnits) -> int:
        return block.num_heads

    def extra_flops(self, block: BlockUnits, tokens: int) -> int:
        return 2 * 2 * tokens * tokens * block.head_dim  # q k^T and A v

    def module(self, block: BlockUnits) -> nn.Module:
        return block.attn


class Neurons(Structure):
    """MLP neurons: a hidden unit's ``fc1`` row(s) (+ bias; two halves for gated MLPs) and ``fc2`` column."""

    name = "neurons"
    unit = "neuron"
    aligned = True

    def layout(self, block: BlockUnits) -> UnitLayout:
        return neuron_layout(block.mlp)

    def size(self, block: BlockUnits) -> int:
        return block.hidden

    def module(self, block: BlockUnits) -> nn.Module:
        return block.mlp


class Channels(Structure):
    """Residual-stream (embedding) channels, shared by every block: a channel is a row of the patch
    embedding, an entry of every token, position embedding, norm and LayerScale, a column of every layer
    that reads the stream (qkv, fc1, the classifier) and a row of every layer that writes it (proj, fc2).
    ``head_dim`` stays whole. Scored by the blocks' Linear slices, which are ADMM variables already.

    Masked, each norm over the stream computes its statistics over the kept channels only and the readers
    see zeros elsewhere, so the masked model computes what the cut one computes.
    """

    name = "channels"
    unit = "channel"
    shared = True

    def layout(self, block: BlockUnits) -> UnitLayout:
        return channel_layout(_model(block))

    def block_layout(self, block: BlockUnits) -> UnitLayout:
        return block_channel_layout(_found(block, "module"), block.dim, f"blocks.{block.index}")

    def size(self, block: BlockUnits) -> int:
        return block.dim

    def module(self, block: BlockUnits) -> nn.Module:
        return _model(block)

    def positions(self, piece: UnitSlice, block: BlockUnits, tokens: int) -> int:
        model = _model(block)
        if any(piece.owner is h for h in stream_classifiers(model)):
            return 1  # the classifier reads one pooled vector
        if isinstance(piece.owner, nn.Conv2d) and piece.attr == "weight":
            return int(model.patch_embed.num_patches)
        return super().positions(piece, block, tokens)

    def gate(self, block: BlockUnits, gate: Gate) -> HookGroup:
        """Cut the stream to the channels ``gate()`` (0/1) keeps: every norm over it normalises over them
        alone and zeroes the rest, and the classifiers read zeros elsewhere."""
        model = _model(block)

        def norm_hook(module: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> torch.Tensor:
            return masked_norm(module, args[0], gate())

        def read_hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return (args[0] * gate().to(args[0].dtype), *args[1:])

        handles = [norm.register_forward_hook(norm_hook) for norm in stream_norms(model)]
        return HookGroup(handles + [h.register_forward_pre_hook(read_hook) for h in stream_classifiers(model)])

    def consumer(self, block: BlockUnits) -> nn.Linear:
        raise ValueError("residual channels have no single consumer layer: learned gates prune heads and neurons")


def _found(block: BlockUnits, attr: str) -> nn.Module:
    """``block.module`` or ``block.model``, which only :func:`.find_blocks` fills in."""
    value = getattr(block, attr)
    if value is None:
        raise ValueError("channel pruning needs blocks found by find_blocks(model)")
    return value


def _model(block: BlockUnits) -> nn.Module:
    return _found(block, "model")


STRUCTURES: dict[str, Structure] = {s.name: s for s in (Heads(), Neurons(), Channels())}
# the values pruning.structures took before it was a list
ALIASES: dict[str, tuple[str, ...]] = {"both": ("heads", "neurons")}


def structure_names(value: str | Sequence[str]) -> tuple[str, ...]:
    """The structures ``pruning.structures`` names, in :data:`STRUCTURES` order.

    Accepts a list of names (``[heads, neurons]``), one name, or an alias (``both``).

    Raises:
        ValueError: one line naming the bad value and what is allowed.
    """
    names = ALIASES.get(value, (value,)) if isinstance(value, str) else tuple(value)
    allowed = f"choose from {', '.join(STRUCTURES)} (a list, one name, or {', '.join(ALIASES)})"
    unknown = [n for n in names if n not in STRUCTURES]
    if unknown or not names:
        raise ValueError(f"pruning.structures={value!r} is not allowed; {allowed}")
    if len(set(names)) != len(names):
        raise ValueError(f"pruning.structures={value!r} names a structure twice; {allowed}")
    return tuple(n for n in STRUCTURES if n in names)


def structures_label(value: str | Sequence[str]) -> str:
    """A short name for a set of structures (run names, sweep tables): its alias if it has one, else ``a+b``."""
    names = structure_names(value)
    return next((alias for alias, members in ALIASES.items() if members == names), "+".join(names))


def block_weights(block: BlockUnits) -> dict[str, torch.Tensor]:
    """Every tensor of one block that structured pruning touches (the union over :data:`STRUCTURES`)."""
    return {name: w for s in STRUCTURES.values() for name, w in s.weights(block).items()}


def group_sq_norms(weights: dict[str, torch.Tensor], block: BlockUnits) -> dict[str, torch.Tensor]:
    """Squared l2 norm of every unit's group, per structure name."""
    return {name: s.sq_norms(weights, block) for name, s in STRUCTURES.items()}


def zero_pruned(
    weights: dict[str, torch.Tensor], keep: dict[str, torch.Tensor], block: BlockUnits
) -> dict[str, torch.Tensor]:
    """Copies of ``weights`` with every unit that ``keep`` (0/1 per structure name) drops set to zero.

    This is the Euclidean projection of the block onto the structured-sparse set with that support.
    """
    unknown = set(weights) - set(block_weights(block))
    if unknown:
        raise KeyError(f"unknown prunable weight {sorted(unknown)[0]!r}")
    out = dict(weights)
    for name, s in STRUCTURES.items():
        out.update(s.zero(out, keep[name], block))  # on the running result: channels cross heads' tensors
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
