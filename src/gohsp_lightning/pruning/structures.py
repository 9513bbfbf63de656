"""Prunable structures by name: what a unit of each is, what it costs, and how it is zeroed, gated and cut.

A structure (attention heads, MLP neurons, ...) is one class registered in :data:`STRUCTURES`. The
rest of the core (projection, plan, masks, surgery, rankers) treats any set of them alike and asks
the structure for anything that depends on which one it is, so adding a structure means adding one
class here. The order of :data:`STRUCTURES` is the tie-break order of the projection.

Each structure owns a disjoint set of a block's weights (:meth:`Structure.weights`): the ADMM
variables are their union, and zeroing one structure never touches another's tensors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .layouts import UnitLayout, head_layout, neuron_layout
from .units import BlockUnits

Gate = Callable[[], torch.Tensor]


class Structure(ABC):
    """One kind of prunable unit, repeated ``size(block)`` times in every block.

    Where the units sit in a block's tensors is the family's business (:mod:`.layouts`); a structure says
    which layout it reads (:meth:`layout`) and what its unit costs beyond its weights' matmuls.
    """

    name: ClassVar[str]
    unit: ClassVar[str]  # one of them, in messages
    # pruning.round_to aligns the kept count of this structure (MLP widths); others move one unit at a time
    aligned: ClassVar[bool] = False

    @abstractmethod
    def layout(self, block: BlockUnits) -> UnitLayout:
        """Where this structure's units live in ``block``."""

    @abstractmethod
    def module(self, block: BlockUnits) -> nn.Module:
        """The sub-module whose run time the units set (it maps the block's ``[batch, tokens, dim]`` input)."""

    @abstractmethod
    def size(self, block: BlockUnits) -> int:
        """Units of this structure in the block as :func:`.find_blocks` saw it (before any later cut)."""

    def unit_params(self, block: BlockUnits) -> int:
        """Parameters one unit holds (what removing it saves)."""
        return sum(s.per_unit for s in self.layout(block).slices if s.is_parameter)

    def unit_flops(self, block: BlockUnits, tokens: int) -> int:
        """FLOPs (multiply-add = 2) one unit costs per image: its rows and columns of every Linear."""
        return 2 * tokens * sum(s.per_unit for s in self.layout(block).slices if s.is_linear_weight)

    def weights(self, block: BlockUnits) -> dict[str, torch.Tensor]:
        """The block's tensors this structure prunes, by a stable name (the ADMM variables' keys)."""
        return {name: s.tensor for name, s in self.layout(block).group.items()}

    def group_sums(self, tensors: dict[str, torch.Tensor], block: BlockUnits) -> torch.Tensor:
        """Signed sum over every unit's group of ``tensors`` (shaped like :meth:`weights`), ``[size]``."""
        return sum(s.group_sums(tensors[name]) for name, s in self.layout(block).group.items() if name in tensors)

    def sq_norms(self, weights: dict[str, torch.Tensor], block: BlockUnits) -> torch.Tensor:
        """Squared l2 norm of every unit's group in ``weights`` (float, ``[size]``)."""
        return self.group_sums({n: w.detach().float().pow(2) for n, w in weights.items()}, block)

    def zero(self, weights: dict[str, torch.Tensor], keep: torch.Tensor, block: BlockUnits) -> dict[str, torch.Tensor]:
        """Copies of this structure's tensors in ``weights`` with the units ``keep`` (0/1) drops zeroed."""
        group = self.layout(block).group
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

    def gate(self, block: BlockUnits, gate: Gate) -> RemovableHandle:
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

    def unit_flops(self, block: BlockUnits, tokens: int) -> int:
        attention = 2 * 2 * tokens * tokens * block.head_dim  # q k^T and A v
        return super().unit_flops(block, tokens) + attention

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


STRUCTURES: dict[str, Structure] = {s.name: s for s in (Heads(), Neurons())}
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
        out.update(s.zero(weights, keep[name], block))
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
