"""PrunePlan: which heads and MLP neurons every block keeps.

The plan is the one hand-off between the optimisation (projection, masks) and the surgery and export.
It is plain ints so it travels through JSON, checkpoints and ``torch.distributed`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .units import BlockUnits


@dataclass(frozen=True)
class PrunePlan:
    """Kept head indices and kept MLP neuron indices per block (sorted, unique)."""

    heads: tuple[tuple[int, ...], ...]
    neurons: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.heads) != len(self.neurons):
            raise ValueError(f"plan has {len(self.heads)} head lists but {len(self.neurons)} neuron lists")
        for kind, lists in (("heads", self.heads), ("neurons", self.neurons)):
            for block, kept in enumerate(lists):
                if not kept:
                    raise ValueError(f"plan keeps no {kind} in block {block}: at least one must stay")
                if list(kept) != sorted(set(kept)) or kept[0] < 0:
                    raise ValueError(f"plan {kind} of block {block} must be sorted unique indices >= 0, got {kept}")

    @classmethod
    def from_keep_masks(cls, heads: list[torch.Tensor], neurons: list[torch.Tensor]) -> PrunePlan:
        """Build a plan from per-block 0/1 (or bool) keep vectors."""
        return cls(
            heads=tuple(tuple(int(i) for i in torch.nonzero(m > 0).flatten()) for m in heads),
            neurons=tuple(tuple(int(i) for i in torch.nonzero(m > 0).flatten()) for m in neurons),
        )

    @classmethod
    def dense(cls, blocks: list[BlockUnits]) -> PrunePlan:
        """The plan that keeps everything."""
        return cls(
            heads=tuple(tuple(range(b.num_heads)) for b in blocks),
            neurons=tuple(tuple(range(b.hidden)) for b in blocks),
        )

    @property
    def heads_per_block(self) -> list[int]:
        return [len(h) for h in self.heads]

    @property
    def mlp_hidden_per_block(self) -> list[int]:
        return [len(n) for n in self.neurons]

    def keep_masks(self, blocks: list[BlockUnits]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-block 0/1 float keep vectors sized for the (unpruned) ``blocks``."""
        self.check(blocks)
        heads, neurons = [], []
        for block, kept_h, kept_n in zip(blocks, self.heads, self.neurons, strict=True):
            h = torch.zeros(block.num_heads)
            h[list(kept_h)] = 1.0
            n = torch.zeros(block.hidden)
            n[list(kept_n)] = 1.0
            heads.append(h)
            neurons.append(n)
        return heads, neurons

    def check(self, blocks: list[BlockUnits]) -> None:
        """Raise ValueError naming the block and index if the plan does not fit these blocks."""
        if len(blocks) != len(self.heads):
            raise ValueError(f"plan has {len(self.heads)} blocks, model has {len(blocks)}")
        for block, kept_h, kept_n in zip(blocks, self.heads, self.neurons, strict=True):
            if kept_h[-1] >= block.num_heads:
                raise ValueError(f"plan keeps head {kept_h[-1]} of block {block.index}, which has {block.num_heads}")
            if kept_n[-1] >= block.hidden:
                raise ValueError(f"plan keeps neuron {kept_n[-1]} of block {block.index}, which has {block.hidden}")

    def to_dict(self) -> dict[str, Any]:
        return {"heads": [list(h) for h in self.heads], "neurons": [list(n) for n in self.neurons]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrunePlan:
        try:
            return cls(
                heads=tuple(tuple(int(i) for i in h) for h in data["heads"]),
                neurons=tuple(tuple(int(i) for i in n) for n in data["neurons"]),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a prune plan (needs 'heads' and 'neurons' lists of ints): {err}") from err
