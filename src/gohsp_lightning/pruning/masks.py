"""StructuredMasks: one gate per unit of every structure (head, MLP neuron, ...), applied through hooks.

The gates are buffers (0/1) set from the ADMM projection; they are what the hard prune reads, what
the dashboards show, and, once attached, make the dense model compute exactly what the pruned model
computes (each unit's output multiplied by its gate, as :meth:`Structure.gate` places it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .plan import PrunePlan
from .structures import STRUCTURES, HookGroup
from .units import BlockUnits


class StructuredMasks(nn.Module):
    """Per-owner gates ``<structure>_<owner>`` (e.g. ``heads_0``, ``neurons_0``; a shared structure has
    ``channels_0`` only), all ones at start."""

    def __init__(self, blocks: list[BlockUnits]) -> None:
        super().__init__()
        self.num_blocks = len(blocks)
        self.owners = {name: len(s.owners(blocks)) for name, s in STRUCTURES.items()}
        for name, s in STRUCTURES.items():
            for i, b in enumerate(s.owners(blocks)):
                self.register_buffer(f"{name}_{i}", torch.ones(s.size(b)))
        self._handles: list[RemovableHandle | HookGroup] = []

    def gate(self, structure: str, block: int) -> torch.Tensor:
        """The gate vector of ``structure`` in ``block`` (a buffer: writing to it changes the forward)."""
        return getattr(self, f"{structure}_{block}")

    def gates(self, structure: str) -> list[torch.Tensor]:
        return [self.gate(structure, i) for i in range(self.owners[structure])]

    def set_plan(self, plan: PrunePlan) -> None:
        """Gate everything the plan drops (structures it does not name stay open)."""
        if plan.num_blocks != self.num_blocks:
            raise ValueError(f"plan has {plan.num_blocks} blocks, masks have {self.num_blocks}")
        for name in STRUCTURES:
            for i, gate in enumerate(self.gates(name)):
                if name in plan.kept:
                    gate.zero_()[list(plan.kept[name][i])] = 1.0
                else:
                    gate.fill_(1.0)

    def plan(self) -> PrunePlan:
        return PrunePlan.from_keep_masks({name: self.gates(name) for name in STRUCTURES})

    def kept_fraction(self) -> float:
        """Share of gates open, over all units of all structures."""
        gates = [g for name in STRUCTURES for g in self.gates(name)]
        return float(sum(g.sum() for g in gates) / sum(g.numel() for g in gates))

    def attach(self, blocks: list[BlockUnits]) -> None:
        """Apply the gates in the forward pass of ``blocks`` until :meth:`detach`.

        A shared structure that keeps every unit is left out: its hooks recompute every norm of the model
        (set the plan before attaching)."""
        self.detach()
        for name, s in STRUCTURES.items():
            if s.shared and all(bool(g.all()) for g in self.gates(name)):
                continue
            for i, b in enumerate(s.owners(blocks)):
                self._handles.append(s.gate(b, lambda name=name, i=i: self.gate(name, i)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)
