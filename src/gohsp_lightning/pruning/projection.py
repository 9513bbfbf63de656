"""Projection onto the heterogeneous structured-sparse set under one global budget.

Every head and every MLP neuron of every block competes for the same budget, counted in parameters
(or FLOPs). A head scores ``pi_norm^alpha * ||group||_2`` (graph ranking as a soft guideline), a
neuron ``||group||_2``; units are removed in increasing order of ``score^2 / cost`` (importance per
unit of budget, after :func:`balance` puts heads and neurons on one scale) until the budget is met.
Per-block counts fall out of this order, so blocks end up different. At least one head and one
neuron stay in every block.

``round_to`` aligns the kept MLP width of every pruned block to a multiple of N (e.g. 8 or 64), which
matrix-multiply kernels run faster than odd widths. Heads are not rounded: a head is ``head_dim``
channels wide (64 in DeiT), so the pruned ``qkv``/``proj`` widths are already aligned multiples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .plan import PrunePlan
from .units import BlockUnits, group_sq_norms, split_by_block, zero_pruned

Unit = Literal["params", "flops"]
Allocation = Literal["global", "uniform"]
Structures = Literal["both", "heads", "neurons"]
Compete = Literal["balanced", "raw"]
UnitScores = tuple[list[torch.Tensor], list[torch.Tensor]]  # (head scores, neuron scores), one tensor per block


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


def neuron_counts(hidden: int, round_to: int = 1) -> list[int]:
    """Kept-neuron counts a block of ``hidden`` neurons may end with, ascending.

    Multiples of ``round_to`` below ``hidden``, plus ``hidden`` itself (the block left unpruned), so a
    block narrower than ``round_to`` keeps all its neurons.
    """
    return list(range(round_to, hidden, round_to)) + [hidden]


def nearest_count(hidden: int, round_to: int, kept: int) -> int:
    """The allowed kept-neuron count (see :func:`neuron_counts`) nearest to ``kept``; ties go to fewer."""
    below = kept // round_to * round_to
    counts = [k for k in (below, below + round_to) if round_to <= k < hidden] + [hidden]
    return min(counts, key=lambda k: (abs(k - kept), k))


def check_unit_scores(blocks: list[BlockUnits], scores: UnitScores) -> UnitScores:
    """``scores`` as float64, after checking that it holds one score per head and per neuron of every block."""
    heads, neurons = scores
    if len(heads) != len(blocks) or len(neurons) != len(blocks):
        raise ValueError(f"unit scores cover {len(heads)}/{len(neurons)} blocks, the model has {len(blocks)}")
    for b, h, n in zip(blocks, heads, neurons, strict=True):
        if h.numel() != b.num_heads or n.numel() != b.hidden:
            raise ValueError(
                f"unit scores of block {b.index} have {h.numel()} heads and {n.numel()} neurons, "
                f"the block has {b.num_heads} and {b.hidden}"
            )
    return [h.double() for h in heads], [n.double() for n in neurons]


def max_removable(blocks: list[BlockUnits], budget: Budget, structures: Structures = "both", round_to: int = 1) -> int:
    """The most a plan can remove while keeping one head and ``round_to`` (or all) neurons per block."""
    total = 0
    for b in blocks:
        if structures in ("both", "heads"):
            total += (b.num_heads - 1) * budget.head_cost(b)
        if structures in ("both", "neurons"):
            total += (b.hidden - min(round_to, b.hidden)) * budget.neuron_cost(b)
    return total


def removed_by_counts(blocks: list[BlockUnits], budget: Budget, kept_heads: list[int], kept_neurons: list[int]) -> int:
    """Budget units removed when block i keeps ``kept_heads[i]`` heads and ``kept_neurons[i]`` neurons."""
    return sum(
        (b.num_heads - kh) * budget.head_cost(b) + (b.hidden - kn) * budget.neuron_cost(b)
        for b, kh, kn in zip(blocks, kept_heads, kept_neurons, strict=True)
    )


def removed_cost(blocks: list[BlockUnits], plan: PrunePlan, budget: Budget) -> int:
    """How much of the budget unit ``plan`` removes from the unpruned ``blocks``."""
    return removed_by_counts(blocks, budget, plan.heads_per_block, plan.mlp_hidden_per_block)


def check_feasible(
    blocks: list[BlockUnits], budget: Budget, structures: Structures = "both", round_to: int = 1
) -> None:
    """Raise a one-line ValueError if the budget cannot be met with >= 1 head and neuron per block."""
    if not 0.0 <= budget.sparsity < 1.0:
        raise ValueError(f"pruning.sparsity={budget.sparsity} is outside [0, 1)")
    limit = max_removable(blocks, budget, structures, round_to)
    if budget.target > limit:
        neurons = "1 neuron" if round_to == 1 else f"{round_to} neurons (pruning.round_to={round_to})"
        raise ValueError(
            f"pruning.sparsity={budget.sparsity} asks to remove {budget.target} {budget.unit} but at most {limit} "
            f"(sparsity <= {limit / budget.total:.4f}) can go while keeping 1 head and {neurons} per block "
            f"with pruning.structures={structures}"
        )


def balance(
    blocks: list[BlockUnits], budget: Budget, h_scores: list[torch.Tensor], n_scores: list[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Scale head and neuron scores so each kind's mean ``score^2 / cost`` is 1.

    Heads and neurons differ in kind (an attention head vs one MLP channel), so their raw importance per
    parameter is not on one scale: on trained ViTs heads often outrank every neuron and the global budget
    would only ever take neurons. Balanced, each unit competes on how it ranks within its kind (the graph
    ranking then decides which heads go), while blocks still compete globally, so layers end up different.
    """
    h_density = torch.cat([h.pow(2) / budget.head_cost(b) for b, h in zip(blocks, h_scores, strict=True)]).mean()
    n_density = torch.cat([n.pow(2) / budget.neuron_cost(b) for b, n in zip(blocks, n_scores, strict=True)]).mean()
    h_scale = h_density.clamp(min=1e-300).rsqrt()
    n_scale = n_density.clamp(min=1e-300).rsqrt()
    return [h * h_scale for h in h_scores], [n * n_scale for n in n_scores]


def project(
    blocks: list[BlockUnits],
    weights: list[dict[str, torch.Tensor]],
    budget: Budget,
    head_scores: list[torch.Tensor] | None = None,
    alpha: float = 1.0,
    allocation: Allocation = "global",
    structures: Structures = "both",
    round_to: int = 1,
    fixed_scores: UnitScores | None = None,
    compete: Compete = "balanced",
) -> PrunePlan:
    """The kept heads and neurons of the projection of ``weights`` onto the sparse set.

    ``compete="balanced"`` scales head scores and neuron scores so that each kind's mean importance per
    unit of cost is 1 before they compete (see :func:`balance`); ``"raw"`` compares them as they are.

    ``fixed_scores`` replaces the weight-based scores of every head and neuron (a baseline whose order
    must not follow the weights, e.g. a random order drawn once); ``head_scores`` and ``alpha`` are then unused.

    With ``allocation="global"`` the removed amount lies in ``[target, target + smallest unit cost)``;
    with ``round_to > 1`` it lies within one ``round_to``-neuron chunk (or one head) above ``target``.
    With ``"uniform"`` every block keeps the same share of heads and of neurons (a baseline).
    """
    if round_to < 1:
        raise ValueError(f"pruning.round_to={round_to} must be >= 1")
    check_feasible(blocks, budget, structures, round_to)
    if fixed_scores is not None:
        h_scores, n_scores = check_unit_scores(blocks, fixed_scores)
    else:
        h_scores, n_scores = unit_scores(blocks, weights, head_scores, alpha)
        if compete == "balanced" and structures == "both":
            h_scores, n_scores = balance(blocks, budget, h_scores, n_scores)
        elif compete not in ("balanced", "raw"):
            raise ValueError(f"pruning.compete must be 'balanced' or 'raw', got {compete!r}")
    if allocation == "uniform":
        return _uniform(blocks, budget, h_scores, n_scores, structures, round_to)
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
    plan = PrunePlan(heads=tuple(map(tuple, keep_h)), neurons=tuple(map(tuple, keep_n)))
    if round_to > 1 and structures != "heads":
        return _align_neurons(blocks, budget, plan, h_scores, n_scores, structures, round_to)
    return plan


def _order(scores: torch.Tensor) -> list[int]:
    """Indices from best to worst score (ties: lower index first)."""
    return sorted(range(scores.numel()), key=lambda j: (-float(scores[j]), j))


def _top(scores: torch.Tensor, keep: int) -> tuple[int, ...]:
    return tuple(sorted(_order(scores)[:keep]))


def _align_neurons(
    blocks: list[BlockUnits],
    budget: Budget,
    plan: PrunePlan,
    h_scores: list[torch.Tensor],
    n_scores: list[torch.Tensor],
    structures: Structures,
    round_to: int,
) -> PrunePlan:
    """Round every block's kept-neuron count of the global ``plan`` to an allowed count, budget still met.

    Each count goes to the nearest allowed one; while the budget is short, the cheapest step (a chunk
    of a block's worst kept neurons, or its worst kept head) is removed; then chunks are given back,
    best first, while the budget stays met. Steps compare ``sum(score^2) / cost``, like the greedy order.
    """
    allowed = [neuron_counts(b.hidden, round_to) for b in blocks]
    orders = [_order(s) for s in n_scores]
    squares = [[float(s[j]) ** 2 for j in order] for s, order in zip(n_scores, orders, strict=True)]
    counts = [nearest_count(b.hidden, round_to, len(kept)) for b, kept in zip(blocks, plan.neurons, strict=True)]
    heads = [sorted(kept, key=lambda j, s=s: (float(s[j]), -j)) for kept, s in zip(plan.heads, h_scores, strict=True)]

    def removed() -> int:
        return removed_by_counts(blocks, budget, [len(h) for h in heads], counts)

    def chunk(b: BlockUnits, lo: int, hi: int) -> tuple[float, int]:
        cost = (hi - lo) * budget.neuron_cost(b)
        return sum(squares[b.index][lo:hi]) / cost, cost

    while removed() < budget.target:
        steps = []
        for b in blocks:
            position = allowed[b.index].index(counts[b.index])
            if position > 0:
                lower = allowed[b.index][position - 1]
                steps.append((chunk(b, lower, counts[b.index])[0], 1, b.index, lower))
            if structures == "both" and len(heads[b.index]) > 1:
                worst = heads[b.index][0]
                steps.append((float(h_scores[b.index][worst]) ** 2 / budget.head_cost(b), 0, b.index, worst))
        _, kind, block, value = min(steps)
        if kind == 1:
            counts[block] = value
        else:
            heads[block].remove(value)
    surplus = removed() - budget.target
    while True:
        steps = []
        for b in blocks:
            position = allowed[b.index].index(counts[b.index])
            if position + 1 < len(allowed[b.index]):
                upper = allowed[b.index][position + 1]
                density, cost = chunk(b, counts[b.index], upper)
                if cost <= surplus:
                    steps.append((-density, b.index, upper, cost))
        if not steps:
            break
        _, block, upper, cost = min(steps)
        counts[block] = upper
        surplus -= cost
    return PrunePlan(
        heads=tuple(tuple(sorted(h)) for h in heads),
        neurons=tuple(tuple(sorted(order[:k])) for order, k in zip(orders, counts, strict=True)),
    )


def _uniform(
    blocks: list[BlockUnits],
    budget: Budget,
    h_scores: list[torch.Tensor],
    n_scores: list[torch.Tensor],
    structures: Structures,
    round_to: int = 1,
) -> PrunePlan:
    """Every block keeps the same share of its heads and the same share of its neurons (a baseline).

    Heads come in a few large units (4-12 per block), so one share for heads and neurons alike would
    overshoot the budget by a whole head per block (0.38 removed for a 0.3 target with 4 heads), and the
    baseline would be compared at a smaller model. Heads therefore keep the share nearest
    ``1 - sparsity`` that removes no more than the budget on its own, and the neuron share is the largest
    that then meets the budget: the removed amount exceeds the target by less than one neuron (one
    ``round_to`` chunk) per block. With ``structures="heads"`` (or ``round_to`` >= the MLP width, which
    leaves no neuron to remove) it is the largest head share that meets the budget, which can overshoot
    by up to one head per block: the price of the same share everywhere. The best-scored units stay in
    each block.
    """
    head_steps, neuron_steps = max(b.num_heads for b in blocks), max(b.hidden for b in blocks)
    all_heads, all_neurons = [b.num_heads for b in blocks], [b.hidden for b in blocks]

    def heads_at(step: int) -> list[int]:
        return [max(1, math.floor(step / head_steps * b.num_heads + 0.5)) for b in blocks]

    def neurons_at(step: int) -> list[int]:
        return [nearest_count(b.hidden, round_to, math.floor(step / neuron_steps * b.hidden + 0.5)) for b in blocks]

    def removed(kept_h: list[int], kept_n: list[int]) -> int:
        return removed_by_counts(blocks, budget, kept_h, kept_n)

    if structures == "heads":
        options = ((heads_at(step), all_neurons) for step in range(head_steps, 0, -1))
    else:
        kept_h = all_heads
        if structures == "both":
            lowest = neurons_at(0)
            reachable = [heads_at(step) for step in range(head_steps, 0, -1)]
            reachable = [kh for kh in reachable if removed(kh, lowest) >= budget.target]
            modest = [kh for kh in reachable if removed(kh, all_neurons) <= budget.target] or reachable
            share = 1 - budget.sparsity
            kept_h = min(modest, key=lambda kh: (abs(sum(kh) / sum(all_heads) - share), -sum(kh)), default=all_heads)
        options = ((kept_h, neurons_at(step)) for step in range(neuron_steps, -1, -1))
    for kept_h, kept_n in options:
        if removed(kept_h, kept_n) >= budget.target:
            return PrunePlan(
                heads=tuple(_top(h_scores[b.index], k) for b, k in zip(blocks, kept_h, strict=True)),
                neurons=tuple(_top(n_scores[b.index], k) for b, k in zip(blocks, kept_n, strict=True)),
            )
    raise ValueError(f"pruning.allocation=uniform cannot remove {budget.target} {budget.unit}")


class StructuredProjector:
    """``Proj_S`` for ADMM: flat ``{"<block>.<name>": W}`` -> same dict with removed groups zeroed.

    Remembers the plan of its last call (``last_plan``), which is the support of Z.
    """

    def __init__(self, blocks: list[BlockUnits], budget: Budget, **options: Any) -> None:
        """``options`` are :func:`project`'s keyword arguments (head_scores, alpha, allocation, ...)."""
        self.blocks, self.budget, self.options = blocks, budget, options
        self.last_plan: PrunePlan | None = None

    def plan(self, flat: dict[str, torch.Tensor]) -> PrunePlan:
        return project(self.blocks, split_by_block(flat, len(self.blocks)), self.budget, **self.options)

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
