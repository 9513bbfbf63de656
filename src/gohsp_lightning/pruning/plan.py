"""PrunePlan: which units of every structure (heads, MLP neurons, ...) every block keeps.

The plan is the one hand-off between the optimisation (projection, masks) and the surgery and export.
It is plain ints keyed by structure name, so it travels through JSON, checkpoints and
``torch.distributed`` unchanged; a structure the plan does not name is kept whole. A structure holds one
list per owner (:meth:`Structure.owners`): one per block, or a single list for a shared structure
(residual channels).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

from .structures import STRUCTURES
from .units import BlockUnits

Kept = tuple[tuple[int, ...], ...]


class PrunePlan:
    """Kept indices per structure name and owner (sorted, unique): ``PrunePlan(heads=..., neurons=...)``,
    a list per block each; a shared structure (``channels=``) holds one list for the whole model."""

    def __init__(self, **kept: Any) -> None:
        unknown = [name for name in kept if name not in STRUCTURES]
        if unknown or not any(not STRUCTURES[n].shared for n in kept):
            raise ValueError(
                f"a prune plan names structures from {', '.join(STRUCTURES)}, at least one per block "
                f"({', '.join(n for n, s in STRUCTURES.items() if not s.shared)}), got {', '.join(kept) or 'none'}"
            )
        lists = {
            name: tuple(tuple(int(i) for i in block) for block in kept[name]) for name in STRUCTURES if name in kept
        }
        if len({len(v) for n, v in lists.items() if not STRUCTURES[n].shared}) > 1:
            sizes = ", ".join(f"{len(v)} {name} lists" for name, v in lists.items())
            raise ValueError(f"plan has {sizes}: every structure needs one list per block")
        shared = [n for n, v in lists.items() if STRUCTURES[n].shared and len(v) != 1]
        if shared:
            raise ValueError(f"plan has {len(lists[shared[0]])} {shared[0]} lists: {shared[0]} need one for the model")
        for name, per_block in lists.items():
            for block, indices in enumerate(per_block):
                if not indices:
                    where = "the model" if STRUCTURES[name].shared else f"block {block}"
                    raise ValueError(f"plan keeps no {name} in {where}: at least one must stay")
                if list(indices) != sorted(set(indices)) or indices[0] < 0:
                    raise ValueError(f"plan {name} of block {block} must be sorted unique indices >= 0, got {indices}")
        self._kept = lists

    @property
    def kept(self) -> Mapping[str, Kept]:
        """Kept indices per structure name (read-only)."""
        return MappingProxyType(self._kept)

    @property
    def num_blocks(self) -> int:
        return len(next(v for n, v in self._kept.items() if not STRUCTURES[n].shared))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrunePlan) and self._kept == other._kept

    def __hash__(self) -> int:
        return hash(tuple(self._kept.items()))

    def __repr__(self) -> str:
        return f"PrunePlan({', '.join(f'{k}={v}' for k, v in self._kept.items())})"

    @property
    def heads(self) -> Kept:
        return self._kept["heads"]

    @property
    def neurons(self) -> Kept:
        return self._kept["neurons"]

    def counts(self, name: str) -> list[int]:
        """Kept units of structure ``name`` per owner (per block; one number for a shared structure)."""
        return [len(k) for k in self._kept[name]]

    @property
    def heads_per_block(self) -> list[int]:
        return self.counts("heads")

    @property
    def mlp_hidden_per_block(self) -> list[int]:
        return self.counts("neurons")

    @classmethod
    def from_keep_masks(cls, masks: Mapping[str, list[torch.Tensor]]) -> PrunePlan:
        """Build a plan from per-block 0/1 (or bool) keep vectors per structure name."""
        return cls(
            **{
                name: tuple(tuple(int(i) for i in torch.nonzero(m > 0).flatten()) for m in per_block)
                for name, per_block in masks.items()
            }
        )

    @classmethod
    def dense(cls, blocks: list[BlockUnits]) -> PrunePlan:
        """The plan that keeps everything."""
        return cls(**{name: tuple(tuple(range(s.size(b))) for b in s.owners(blocks)) for name, s in STRUCTURES.items()})

    def keep_masks(self, blocks: list[BlockUnits]) -> dict[str, list[torch.Tensor]]:
        """Per-owner 0/1 float keep vectors of every structure, sized for the (unpruned) ``blocks``."""
        self.check(blocks)
        masks: dict[str, list[torch.Tensor]] = {}
        for name, s in STRUCTURES.items():
            masks[name] = []
            for i, b in enumerate(s.owners(blocks)):
                keep = torch.zeros(s.size(b))
                keep[list(self._kept[name][i]) if name in self._kept else slice(None)] = 1.0
                masks[name].append(keep)
        return masks

    def block_keep(self, masks: dict[str, list[torch.Tensor]], block: int) -> dict[str, torch.Tensor]:
        """The keep vectors :meth:`keep_masks` gives block ``block`` (a shared structure's one for every block)."""
        return {name: m[0 if STRUCTURES[name].shared else block] for name, m in masks.items()}

    def check(self, blocks: list[BlockUnits]) -> None:
        """Raise ValueError naming the block and index if the plan does not fit these blocks."""
        if len(blocks) != self.num_blocks:
            raise ValueError(f"plan has {self.num_blocks} blocks, model has {len(blocks)}")
        for name, per_block in self._kept.items():
            s = STRUCTURES[name]
            for block, indices in zip(s.owners(blocks), per_block, strict=True):
                if indices[-1] >= s.size(block):
                    where = "the model" if s.shared else f"block {block.index}"
                    raise ValueError(f"plan keeps {s.unit} {indices[-1]} of {where}, which has {s.size(block)}")

    def to_dict(self) -> dict[str, Any]:
        return {name: [list(k) for k in per_block] for name, per_block in self._kept.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrunePlan:
        try:
            return cls(**{name: [[int(i) for i in k] for k in per_block] for name, per_block in data.items()})
        except (TypeError, AttributeError) as err:
            raise ValueError(
                f"not a prune plan (needs lists of kept ints per structure, e.g. 'heads' and 'neurons'): {err}"
            ) from err
