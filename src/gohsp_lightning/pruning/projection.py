"""Projection onto the heterogeneous structured-sparse set under one global budget.

Every head and every MLP neuron of every block competes for the same budget, counted in parameters
(or FLOPs). A head scores ``pi_norm^alpha * ||group||_2`` (graph ranking as a soft guideline), a
neuron ``||group||_2``; units are removed in increasing order of ``score^2 / cost`` (importance per
unit of budget) until the budget is met. Per-block counts fall out of this order, so blocks end up
different. At least one head and one neuron stay in every block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .plan import PrunePlan
from .units import BlockUnits, group_sq_norms, split_by_block, zero_pruned

Unit = Literal["params", "flops"]
Allocation = Literal["global", "uniform"]
Structures = Literal["both", "heads", "neurons"]


@dataclass(frozen=True)
class Budget:
    """Remove ``sparsity`` of ``total`` (the dense model's parameters or FLOPs per image)."""

    sparsity: float
    total: int
    unit: Unit = "params"
    tokens: int = 0

    @property
    def target(self) -> int:
        return math.ceil(self.sparsity * self.total)

    def head_cost(self, block: BlockUnits) -> int:
        return block.head_params if self.unit == "params" else block.head_flops(self.tokens)

    def neuron_cost(self, block: BlockUnits) -> int:
        return block.neuron_params if self.unit == "params" else block.neuron_flops(self.tokens)


@dataclass(frozen=True)
class _Candidate:
    density: float
    kind: int  # 0 head, 1 neuron
    block: int
    index: int
    cost: int


def unit_scores(
    blocks: list[BlockUnits],
    weights: list[dict[str, torch.Tensor]],
    head_scores: list[torch.Tensor] | None,
    alpha: float,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(head_scores, neuron_scores)`` per block: ``pi^alpha * ||group||`` and ``||group||``."""
    heads, neurons = [], []
    for i, (block, w) in enumerate(zip(blocks, weights, strict=True)):
        head_sq, neuron_sq = group_sq_norms(w, block.num_heads)
        h = head_sq.double().sqrt()
        if head_scores is not None and alpha != 0:
            h = h * head_scores[i].double().clamp(min=0).pow(alpha)
        heads.append(h)
        neurons.append(neuron_sq.double().sqrt())
    return heads, neurons


def max_removable(blocks: list[BlockUnits], budget: Budget, structures: Structures = "both") -> int:
    """The most a plan can remove while keeping one head and one neuron per block."""
    total = 0
    for b in blocks:
        if structures in ("both", "heads"):
            total += (b.num_heads - 1) * budget.head_cost(b)
        if structures in ("both", "neurons"):
            total += (b.hidden - 1) * budget.neuron_cost(b)
    return total


def removed_cost(blocks: list[BlockUnits], plan: PrunePlan, budget: Budget) -> int:
    """How much of the budget unit ``plan`` removes from the unpruned ``blocks``."""
    return sum(
        (b.num_heads - len(h)) * budget.head_cost(b) + (b.hidden - len(n)) * budget.neuron_cost(b)
        for b, h, n in zip(blocks, plan.heads, plan.neurons, strict=True)
    )


def check_feasible(blocks: list[BlockUnits], budget: Budget, structures: Structures = "both") -> None:
    """Raise a one-line ValueError if the budget cannot be met with >= 1 head and neuron per block."""
    if not 0.0 <= budget.sparsity < 1.0:
        raise ValueError(f"pruning.sparsity={budget.sparsity} is outside [0, 1)")
    limit = max_removable(blocks, budget, structures)
    if budget.target > limit:
        raise ValueError(
            f"pruning.sparsity={budget.sparsity} asks to remove {budget.target} {budget.unit} but at most {limit} "
            f"(sparsity <= {limit / budget.total:.4f}) can go while keeping 1 head and 1 neuron per block "
            f"with pruning.structures={structures}"
        )


def project(
    blocks: list[BlockUnits],
    weights: list[dict[str, torch.Tensor]],
    budget: Budget,
    head_scores: list[torch.Tensor] | None = None,
    alpha: float = 1.0,
    allocation: Allocation = "global",
    structures: Structures = "both",
) -> PrunePlan:
    """The kept heads and neurons of the projection of ``weights`` onto the sparse set.

    With ``allocation="global"`` the removed amount lies in ``[target, target + smallest unit cost)``.
    With ``"uniform"`` every block keeps the same share of heads and of neurons (a baseline).
    """
    check_feasible(blocks, budget, structures)
    h_scores, n_scores = unit_scores(blocks, weights, head_scores, alpha)
    if allocation == "uniform":
        return _uniform(blocks, budget, h_scores, n_scores, structures)
    if allocation != "global":
        raise ValueError(f"pruning.allocation must be 'global' or 'uniform', got {allocation!r}")
    candidates = []
    for b in blocks:
        if structures in ("both", "heads"):
            cost = budget.head_cost(b)
            candidates += [
                _Candidate(float(s) ** 2 / cost, 0, b.index, j, cost) for j, s in enumerate(h_scores[b.index])
            ]
        if structures in ("both", "neurons"):
            cost = budget.neuron_cost(b)
            candidates += [
                _Candidate(float(s) ** 2 / cost, 1, b.index, j, cost) for j, s in enumerate(n_scores[b.index])
            ]
    candidates.sort(key=lambda c: (c.density, c.kind, c.block, c.index))
    left = {(b.index, 0): b.num_heads for b in blocks} | {(b.index, 1): b.hidden for b in blocks}
    removed_units: set[tuple[int, int, int]] = set()
    removed = 0
    target = budget.target

    def removable(c: _Candidate) -> bool:
        return (c.kind, c.block, c.index) not in removed_units and left[(c.block, c.kind)] > 1

    def remove(c: _Candidate) -> None:
        nonlocal removed
        removed_units.add((c.kind, c.block, c.index))
        left[(c.block, c.kind)] -= 1
        removed += c.cost

    for c in candidates:
        if removed >= target:
            break
        if removable(c) and removed + c.cost <= target:
            remove(c)
    if removed < target:
        remove(min((c for c in candidates if removable(c)), key=lambda c: (c.cost, c.density)))
    keep_h = [[j for j in range(b.num_heads) if (0, b.index, j) not in removed_units] for b in blocks]
    keep_n = [[j for j in range(b.hidden) if (1, b.index, j) not in removed_units] for b in blocks]
    return PrunePlan(heads=tuple(map(tuple, keep_h)), neurons=tuple(map(tuple, keep_n)))


def _top(scores: torch.Tensor, keep: int) -> tuple[int, ...]:
    order = sorted(range(scores.numel()), key=lambda j: (-float(scores[j]), j))
    return tuple(sorted(order[:keep]))


def _uniform(
    blocks: list[BlockUnits],
    budget: Budget,
    h_scores: list[torch.Tensor],
    n_scores: list[torch.Tensor],
    structures: Structures,
) -> PrunePlan:
    """Largest common keep ratio whose removal meets the budget; the best-scored units stay in each block."""
    steps = max(b.hidden if structures != "heads" else b.num_heads for b in blocks)
    for step in range(steps, 0, -1):
        ratio = (step - 1) / steps
        kept_h = [b.num_heads if structures == "neurons" else max(1, round(ratio * b.num_heads)) for b in blocks]
        kept_n = [b.hidden if structures == "heads" else max(1, round(ratio * b.hidden)) for b in blocks]
        removed = sum(
            (b.num_heads - kh) * budget.head_cost(b) + (b.hidden - kn) * budget.neuron_cost(b)
            for b, kh, kn in zip(blocks, kept_h, kept_n, strict=True)
        )
        if removed >= budget.target:
            return PrunePlan(
                heads=tuple(_top(h_scores[b.index], k) for b, k in zip(blocks, kept_h, strict=True)),
                neurons=tuple(_top(n_scores[b.index], k) for b, k in zip(blocks, kept_n, strict=True)),
            )
    raise ValueError(f"pruning.allocation=uniform cannot remove {budget.target} {budget.unit}")


class StructuredProjector:
    """``Proj_S`` for ADMM: flat ``{"<block>.<name>": W}`` -> same dict with removed groups zeroed.

    Remembers the plan of its last call (``last_plan``), which is the support of Z.
    """

    def __init__(
        self,
        blocks: list[BlockUnits],
        budget: Budget,
        head_scores: list[torch.Tensor] | None = None,
        alpha: float = 1.0,
        allocation: Allocation = "global",
        structures: Structures = "both",
    ) -> None:
        self.blocks, self.budget = blocks, budget
        self.head_scores, self.alpha = head_scores, alpha
        self.allocation, self.structures = allocation, structures
        self.last_plan: PrunePlan | None = None

    def plan(self, flat: dict[str, torch.Tensor]) -> PrunePlan:
        per_block = split_by_block(flat, len(self.blocks))
        return project(
            self.blocks, per_block, self.budget, self.head_scores, self.alpha, self.allocation, self.structures
        )

    def __call__(self, flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        plan = self.plan(flat)
        head_keep, neuron_keep = plan.keep_masks(self.blocks)
        per_block = split_by_block(flat, len(self.blocks))
        self.last_plan = plan
        return {
            f"{b.index}.{name}": t
            for b in self.blocks
            for name, t in zero_pruned(per_block[b.index], head_keep[b.index], neuron_keep[b.index]).items()
        }
