"""StructuredMasks: one gate per attention head and per MLP neuron, applied through forward hooks.

The gates are buffers (0/1) set from the ADMM projection; they are what the hard prune reads, what
the dashboards show, and, once attached, make the dense model compute exactly what the pruned model
computes (head outputs and neuron activations multiplied by their gate).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .plan import PrunePlan
from .units import BlockUnits


class StructuredMasks(nn.Module):
    """Per-block head gates ``heads_{i}`` and neuron gates ``neurons_{i}``, all ones at start."""

    def __init__(self, blocks: list[BlockUnits]) -> None:
        super().__init__()
        self.num_blocks = len(blocks)
        self._head_dims = [b.head_dim for b in blocks]
        for b in blocks:
            self.register_buffer(f"heads_{b.index}", torch.ones(b.num_heads))
            self.register_buffer(f"neurons_{b.index}", torch.ones(b.hidden))
        self._handles: list[RemovableHandle] = []

    def heads(self, block: int) -> torch.Tensor:
        return getattr(self, f"heads_{block}")

    def neurons(self, block: int) -> torch.Tensor:
        return getattr(self, f"neurons_{block}")

    def set_plan(self, plan: PrunePlan) -> None:
        """Gate everything the plan drops."""
        if len(plan.heads) != self.num_blocks:
            raise ValueError(f"plan has {len(plan.heads)} blocks, masks have {self.num_blocks}")
        for i, (kept_h, kept_n) in enumerate(zip(plan.heads, plan.neurons, strict=True)):
            heads, neurons = self.heads(i), self.neurons(i)
            heads.zero_()[list(kept_h)] = 1.0
            neurons.zero_()[list(kept_n)] = 1.0

    def plan(self) -> PrunePlan:
        return PrunePlan.from_keep_masks(
            [self.heads(i) for i in range(self.num_blocks)], [self.neurons(i) for i in range(self.num_blocks)]
        )

    def kept_fraction(self) -> float:
        """Share of gates open, over all heads and neurons."""
        gates = [self.heads(i) for i in range(self.num_blocks)] + [self.neurons(i) for i in range(self.num_blocks)]
        return float(sum(g.sum() for g in gates) / sum(g.numel() for g in gates))

    def attach(self, blocks: list[BlockUnits]) -> None:
        """Apply the gates in the forward pass of ``blocks`` until :meth:`detach`."""
        self.detach()
        for b in blocks:
            head_dim = self._head_dims[b.index]
            self._handles.append(b.attn.proj.register_forward_pre_hook(self._head_hook(b.index, head_dim)))
            self._handles.append(b.mlp.fc2.register_forward_pre_hook(self._neuron_hook(b.index)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _head_hook(self, block: int, head_dim: int):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            gate = self.heads(block).to(args[0].dtype).repeat_interleave(head_dim)
            return (args[0] * gate, *args[1:])

        return hook

    def _neuron_hook(self, block: int):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return (args[0] * self.neurons(block).to(args[0].dtype), *args[1:])

        return hook
