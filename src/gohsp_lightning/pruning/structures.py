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

from .units import BlockUnits

Gate = Callable[[], torch.Tensor]


class Structure(ABC):
    """One kind of prunable unit, repeated ``size(block)`` times in every block."""

    name: ClassVar[str]
    unit: ClassVar[str]  # one of them, in messages
    # pruning.round_to aligns the kept count of this structure (MLP widths); others move one unit at a time
    aligned: ClassVar[bool] = False

    @abstractmethod
    def size(self, block: BlockUnits) -> int:
        """Units of this structure in the (unpruned) block."""

    @abstractmethod
    def unit_params(self, block: BlockUnits) -> int:
        """Parameters one unit holds (what removing it saves)."""

    @abstractmethod
    def unit_flops(self, block: BlockUnits, tokens: int) -> int:
        """FLOPs (multiply-add = 2) one unit costs per image."""

    @abstractmethod
    def weights(self, block: BlockUnits) -> dict[str, torch.Tensor]:
        """The block's tensors this structure prunes, by a stable name (the ADMM variables' keys)."""

    @abstractmethod
    def sq_norms(self, weights: dict[str, torch.Tensor], block: BlockUnits) -> torch.Tensor:
        """Squared l2 norm of every unit's group in ``weights`` (float, ``[size]``)."""

    @abstractmethod
    def zero(self, weights: dict[str, torch.Tensor], keep: torch.Tensor, block: BlockUnits) -> dict[str, torch.Tensor]:
        """Copies of this structure's tensors in ``weights`` with the units ``keep`` (0/1) drops zeroed."""

    @abstractmethod
    def cut(self, block: BlockUnits, kept: torch.Tensor) -> None:
        """Remove, in place, every unit of ``block`` not in ``kept`` (sorted indices)."""

    @abstractmethod
    def consumer(self, block: BlockUnits) -> nn.Linear:
        """The layer that takes the units' outputs as its input columns (where gates act and fold)."""

    def unit_width(self, block: BlockUnits) -> int:
        """Input columns of :meth:`consumer` per unit."""
        return 1

    def gate(self, block: BlockUnits, gate: Gate) -> RemovableHandle:
        """Multiply every unit's output by ``gate()[unit]`` in the forward pass, until the handle is removed."""
        width = self.unit_width(block)

        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return (args[0] * gate().to(args[0].dtype).repeat_interleave(width), *args[1:])

        return self.consumer(block).register_forward_pre_hook(hook)

    @abstractmethod
    def module(self, block: BlockUnits) -> nn.Module:
        """The sub-module whose run time the units set (it maps the block's ``[batch, tokens, dim]`` input)."""

    def fold(self, block: BlockUnits, gate: torch.Tensor) -> None:
        """Multiply ``gate`` (one value per unit) into the layer each unit feeds, in place: the block then
        computes without a hook what :meth:`gate` made it compute."""
        weight = self.consumer(block).weight
        with torch.no_grad():
            weight.mul_(gate.to(weight).repeat_interleave(self.unit_width(block))[None, :])


def _bias_params(layer: nn.Linear, per_unit: int) -> int:
    return per_unit if layer.bias is not None else 0


def _slice_linear(layer: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A contiguous copy of ``layer`` with only the given output rows / input columns (device, dtype,
    ``requires_grad`` kept), so the pruned model runs the same fast paths as the dense one."""
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
    if isinstance(norm, nn.Identity):
        return
    for name in ("weight", "bias"):
        param = getattr(norm, name, None)
        if isinstance(param, nn.Parameter):
            setattr(norm, name, nn.Parameter(param.detach().index_select(0, index.to(param.device)).contiguous()))
    if hasattr(norm, "normalized_shape"):
        norm.normalized_shape = (int(index.numel()),)


def head_channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Channel indices (within ``attn_dim``) of the given heads."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).flatten()


class Heads(Structure):
    """Attention heads: a head's q, k, v rows of ``qkv`` (timm's ``(3, heads, head_dim)`` split) plus the
    matching ``proj`` columns. Whole heads go, never part of ``head_dim``, so the softmax scale (and
    timm's fused attention, which takes no explicit scale) is unchanged."""

    name = "heads"
    unit = "head"

    def size(self, block: BlockUnits) -> int:
        return block.num_heads

    def unit_params(self, block: BlockUnits) -> int:
        return 4 * block.head_dim * block.dim + _bias_params(block.attn.qkv, 3 * block.head_dim)

    def unit_flops(self, block: BlockUnits, tokens: int) -> int:
        linear = 2 * tokens * block.dim * 4 * block.head_dim
        attention = 2 * 2 * tokens * tokens * block.head_dim
        return linear + attention

    def weights(self, block: BlockUnits) -> dict[str, torch.Tensor]:
        out = {"qkv.weight": block.attn.qkv.weight, "proj.weight": block.attn.proj.weight}
        if block.attn.qkv.bias is not None:
            out["qkv.bias"] = block.attn.qkv.bias
        return out

    def sq_norms(self, weights: dict[str, torch.Tensor], block: BlockUnits) -> torch.Tensor:
        h, dim = block.num_heads, block.dim
        norms = weights["qkv.weight"].detach().float().reshape(3, h, -1, dim).pow(2).sum(dim=(0, 2, 3))
        norms = norms + weights["proj.weight"].detach().float().reshape(dim, h, -1).pow(2).sum(dim=(0, 2))
        if "qkv.bias" in weights:
            norms = norms + weights["qkv.bias"].detach().float().reshape(3, h, -1).pow(2).sum(dim=(0, 2))
        return norms

    def zero(self, weights: dict[str, torch.Tensor], keep: torch.Tensor, block: BlockUnits) -> dict[str, torch.Tensor]:
        h, dim = block.num_heads, block.dim
        qkv, proj = weights["qkv.weight"], weights["proj.weight"]
        k = keep.to(qkv)
        out = {
            "qkv.weight": (qkv.reshape(3, h, -1, dim) * k[None, :, None, None]).reshape(qkv.shape),
            "proj.weight": (proj.reshape(dim, h, -1) * k[None, :, None]).reshape(proj.shape),
        }
        if "qkv.bias" in weights:
            bias = weights["qkv.bias"]
            out["qkv.bias"] = (bias.reshape(3, h, -1) * k.to(bias)[None, :, None]).reshape(bias.shape)
        return out

    def cut(self, block: BlockUnits, kept: torch.Tensor) -> None:
        attn = block.attn
        channels = head_channels(kept, block.head_dim)
        attn_dim = block.num_heads * block.head_dim
        attn.qkv = _slice_linear(attn.qkv, rows=torch.cat([s * attn_dim + channels for s in range(3)]))
        attn.proj = _slice_linear(attn.proj, cols=channels)
        if getattr(attn, "gate", None) is not None:
            attn.gate = _slice_linear(attn.gate, rows=channels)
        _slice_norm(getattr(attn, "norm", nn.Identity()), channels)
        # timm's Attention reshapes with these
        attn.num_heads = int(kept.numel())
        if hasattr(attn, "attn_dim"):
            attn.attn_dim = int(kept.numel()) * block.head_dim

    def consumer(self, block: BlockUnits) -> nn.Linear:
        return block.attn.proj

    def unit_width(self, block: BlockUnits) -> int:
        return block.head_dim

    def module(self, block: BlockUnits) -> nn.Module:
        return block.attn


class Neurons(Structure):
    """MLP neurons: a ``fc1`` row (+ bias) and the matching ``fc2`` column."""

    name = "neurons"
    unit = "neuron"
    aligned = True

    def size(self, block: BlockUnits) -> int:
        return block.hidden

    def unit_params(self, block: BlockUnits) -> int:
        return 2 * block.dim + _bias_params(block.mlp.fc1, 1)

    def unit_flops(self, block: BlockUnits, tokens: int) -> int:
        return 2 * 2 * tokens * block.dim

    def weights(self, block: BlockUnits) -> dict[str, torch.Tensor]:
        out = {"fc1.weight": block.mlp.fc1.weight, "fc2.weight": block.mlp.fc2.weight}
        if block.mlp.fc1.bias is not None:
            out["fc1.bias"] = block.mlp.fc1.bias
        return out

    def sq_norms(self, weights: dict[str, torch.Tensor], block: BlockUnits) -> torch.Tensor:
        norms = weights["fc1.weight"].detach().float().pow(2).sum(dim=1)
        norms = norms + weights["fc2.weight"].detach().float().pow(2).sum(dim=0)
        if "fc1.bias" in weights:
            norms = norms + weights["fc1.bias"].detach().float().pow(2)
        return norms

    def zero(self, weights: dict[str, torch.Tensor], keep: torch.Tensor, block: BlockUnits) -> dict[str, torch.Tensor]:
        k = keep.to(weights["fc1.weight"])
        out = {"fc1.weight": weights["fc1.weight"] * k[:, None], "fc2.weight": weights["fc2.weight"] * k[None, :]}
        if "fc1.bias" in weights:
            out["fc1.bias"] = weights["fc1.bias"] * k.to(weights["fc1.bias"])
        return out

    def cut(self, block: BlockUnits, kept: torch.Tensor) -> None:
        mlp = block.mlp
        mlp.fc1 = _slice_linear(mlp.fc1, rows=kept)
        mlp.fc2 = _slice_linear(mlp.fc2, cols=kept)
        _slice_norm(getattr(mlp, "norm", nn.Identity()), kept)

    def consumer(self, block: BlockUnits) -> nn.Linear:
        return block.mlp.fc2

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
