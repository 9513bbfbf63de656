"""Projection onto the heterogeneous structured-sparse set under one global budget.

Every unit of every competing structure (:mod:`.structures`: heads, MLP neurons, residual channels) of
every block competes for the same budget, counted in parameters (or FLOPs). A head scores
``pi_norm^alpha * ||group||_2`` (graph ranking as a soft guideline), any other unit ``||group||_2``;
units are removed in increasing order of ``score^2 / cost`` (importance per unit of budget, after
:func:`balance` puts the structures on one scale) until the budget is met. Per-block counts fall out
of this order, so blocks end up different. At least one unit of every structure stays in every block.

Residual channels slice the same tensors as heads and neurons, so a unit's cost depends on what else
goes (:mod:`.costs`): with channels competing, the order is the same (costs taken at the dense model) and
the walk along it counts each unit at its exact cost given what has gone before, so a plan that takes no
channel is the plan without channels.

``round_to`` aligns the kept MLP width of every pruned block to a multiple of N (e.g. 8 or 64), which
matrix-multiply kernels run faster than odd widths. Heads are not rounded: a head is ``head_dim``
channels wide (64 in DeiT), so the pruned ``qkv``/``proj`` widths are already aligned multiples.

Why one module of ~600 lines: the global order, the crossing-cost prefix (channels), the per-block
alignment (``round_to``), the uniform allocation and the latency bisection all decide the same kept
counts and share its private helpers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch

from .costs import RemovedCost, cost_terms, removed_by_terms
from .plan import PrunePlan
from .structures import (
    STRUCTURES,
    Structure,
    group_sq_norms,
    split_by_block,
    structure_names,
    structures_label,
    zero_pruned,
)
from .units import BlockUnits

if TYPE_CHECKING:
    from .latency import LatencyTable

Unit = Literal["params", "flops", "latency"]
Allocation = Literal["global", "uniform"]
Compete = Literal["balanced", "raw"]
Structures = str | Sequence[str]  # pruning.structures: names, one name or an alias (structures.structure_names)
UnitScores = dict[str, list[torch.Tensor]]  # per structure name, one score tensor per block


@dataclass(frozen=True)
class Budget:
    """Remove ``sparsity`` of ``total`` (the dense model's parameters, FLOPs per image, or latency in ns)."""

    sparsity: float
    total: int
    unit: Unit = "params"
    tokens: int = 0
    latency: LatencyTable | None = None  # unit="latency": the measured table the costs come from

    @property
    def target(self) -> int:
        return math.ceil(self.sparsity * self.total)

    def cost(self, structure: str | Structure, block: BlockUnits) -> int:
        """What removing one unit of ``structure`` from ``block`` saves, in this budget's unit."""
        s = STRUCTURES[structure] if isinstance(structure, str) else structure
        if self.unit == "latency":
            if self.latency is None:
                raise ValueError("pruning.budget=latency needs a latency table")
            return max(1, round(self.latency.unit_cost(s.name, block.index) * 1e9))  # ns; a unit never costs 0
        return s.unit_params(block) if self.unit == "params" else s.unit_flops(block, self.tokens)


@dataclass(frozen=True)
class _Candidate:
    density: float
    kind: int  # position of the structure in STRUCTURES (the tie-break order)
    block: int  # the owner's position (its block; 0 for a shared structure)
    index: int
    cost: int


def unit_scores(
    blocks: list[BlockUnits],
    weights: list[dict[str, torch.Tensor]],
    head_scores: list[torch.Tensor] | None,
    alpha: float,
) -> UnitScores:
    """Scores of every unit per structure: ``||group||``, times ``pi^alpha`` for heads when a ranking is given.

    A shared structure's group spans every block: its squared norms are summed over the blocks."""
    squares: dict[str, list[torch.Tensor]] = {name: [] for name in STRUCTURES}
    for block, w in zip(blocks, weights, strict=True):
        for name, sq in group_sq_norms(w, block).items():
            squares[name].append(sq.double())
    scores: UnitScores = {}
    for name, s in STRUCTURES.items():
        per_owner = [sum(squares[name])] if s.shared else squares[name]
        scores[name] = [sq.sqrt() for sq in per_owner]
    if head_scores is not None and alpha != 0:
        scores["heads"] = [
            t * p.double().clamp(min=0).pow(alpha) for t, p in zip(scores["heads"], head_scores, strict=True)
        ]
    return scores


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
    """``scores`` as float64, after checking that it holds one score per unit of every structure and block."""
    missing = [name for name in STRUCTURES if name not in scores]
    if missing:
        raise ValueError(f"unit scores have no {', '.join(missing)}; they need {', '.join(STRUCTURES)}")
    for name, s in STRUCTURES.items():
        owners = s.owners(blocks)
        if len(scores[name]) != len(owners):
            raise ValueError(f"unit scores cover {len(scores[name])} owners of {name}, the model has {len(owners)}")
        for b, score in zip(owners, scores[name], strict=True):
            if score.numel() != s.size(b):
                raise ValueError(
                    f"unit scores of block {b.index} have {score.numel()} {name}, the block has {s.size(b)}"
                )
    return {name: [t.double() for t in scores[name]] for name in STRUCTURES}


def min_kept(structure: Structure, block: BlockUnits, round_to: int = 1) -> int:
    """The fewest units of ``structure`` a block keeps: one, or ``round_to`` (or all) for aligned ones."""
    return min(round_to, structure.size(block)) if structure.aligned else 1


def max_removable(blocks: list[BlockUnits], budget: Budget, structures: Structures = "both", round_to: int = 1) -> int:
    """The most a plan can remove while every block keeps :func:`min_kept` units of every structure."""
    fewest = {
        name: [min_kept(STRUCTURES[name], b, round_to) for b in STRUCTURES[name].owners(blocks)]
        for name in structure_names(structures)
    }
    return removed_by_counts(blocks, budget, fewest)


def removed_by_counts(blocks: list[BlockUnits], budget: Budget, counts: Mapping[str, list[int]]) -> int:
    """Budget units removed when owner i keeps ``counts[name][i]`` units of each named structure.

    Per-unit costs add up unless a shared structure (residual channels) is cut too: then the costs
    interact, and the exact sum over every sliced tensor counts them (:mod:`.costs`)."""
    crossing = any(STRUCTURES[n].shared and k != [STRUCTURES[n].size(blocks[0])] for n, k in counts.items())
    if crossing and budget.unit != "latency":
        return removed_by_terms(cost_terms(blocks, budget.unit, budget.tokens), counts)
    return sum(
        (STRUCTURES[name].size(b) - k) * budget.cost(name, b)
        for name, kept in counts.items()
        for b, k in zip(STRUCTURES[name].owners(blocks), kept, strict=True)
        if k < STRUCTURES[name].size(b)
    )


def removed_cost(blocks: list[BlockUnits], plan: PrunePlan, budget: Budget) -> int:
    """How much of the budget unit ``plan`` removes from the unpruned ``blocks``."""
    return removed_by_counts(blocks, budget, {name: plan.counts(name) for name in plan.kept})


def check_feasible(
    blocks: list[BlockUnits], budget: Budget, structures: Structures = "both", round_to: int = 1
) -> None:
    """Raise a one-line ValueError if the budget cannot be met with :func:`min_kept` units per block."""
    if not 0.0 <= budget.sparsity < 1.0:
        raise ValueError(f"pruning.sparsity={budget.sparsity} is outside [0, 1)")
    limit = max_removable(blocks, budget, structures, round_to)
    if budget.target > limit:
        keep = " and ".join(
            f"{round_to} {s.name} (pruning.round_to={round_to})" if s.aligned and round_to > 1 else f"1 {s.unit}"
            for s in STRUCTURES.values()
        )
        raise ValueError(
            f"pruning.sparsity={budget.sparsity} asks to remove {budget.target} {budget.unit} but at most {limit} "
            f"(sparsity <= {limit / budget.total:.4f}) can go while keeping {keep} per block "
            f"with pruning.structures={structures_label(structures)}"
        )


def check_shared(names: Sequence[str], unit: str, allocation: str, round_to: int) -> None:
    """Raise a one-line ValueError for what a shared structure (residual channels) cannot compete under: their
    costs interact, so they take a params or FLOPs budget, global allocation and no neuron rounding, and they
    compete beside at least one per-block structure (a plan cuts whole blocks' units, never only the stream)."""
    shared = [n for n in names if STRUCTURES[n].shared]
    if not shared:
        return
    if len(shared) == len(names):
        per_block = ", ".join(n for n, s in STRUCTURES.items() if not s.shared)
        raise ValueError(
            f"pruning.structures={list(names)} names only shared structures; add at least one of {per_block}"
        )
    for key, value, allowed in (
        ("budget", unit, ("params", "flops")),
        ("allocation", allocation, ("global",)),
        ("round_to", round_to, (1,)),
    ):
        if value not in allowed:
            raise ValueError(
                f"pruning.{key}={value} cannot prune {shared[0]}: with them pruning.{key} must be "
                f"{' or '.join(map(str, allowed))}"
            )


def balance(blocks: list[BlockUnits], budget: Budget, scores: UnitScores, names: Sequence[str]) -> UnitScores:
    """Scale the scores of each named structure so that its mean ``score^2 / cost`` is 1.

    Heads and neurons differ in kind (an attention head vs one MLP channel), so their raw importance per
    parameter is not on one scale: on trained ViTs heads often outrank every neuron and the global budget
    would only ever take neurons. Balanced, each unit competes on how it ranks within its kind (the graph
    ranking then decides which heads go), while blocks still compete globally, so layers end up different.
    """
    out = dict(scores)
    for name in names:
        owners = STRUCTURES[name].owners(blocks)
        density = torch.cat([t.pow(2) / budget.cost(name, b) for b, t in zip(owners, scores[name], strict=True)])
        scale = density.mean().clamp(min=1e-300).rsqrt()
        out[name] = [t * scale for t in scores[name]]
    return out


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
    """The kept units of the projection of ``weights`` onto the sparse set (a plan naming every structure).

    ``structures`` names the structures that compete for the budget; the others are kept whole.
    ``compete="balanced"`` scales each competing structure's scores so that its mean importance per unit
    of cost is 1 before they compete (see :func:`balance`); ``"raw"`` compares them as they are.

    ``fixed_scores`` replaces the weight-based scores of every unit (a baseline whose order must not
    follow the weights, e.g. a random order drawn once); ``head_scores`` and ``alpha`` are then unused.

    With ``allocation="global"`` the removed amount lies in ``[target, target + smallest unit cost)``;
    with ``round_to > 1`` it lies within one ``round_to``-neuron chunk (or one head) above ``target``.
    With ``"uniform"`` every block keeps the same share of heads and of neurons (a baseline).

    A latency budget (``budget.latency``) orders units by their blocks' average time per unit, but a
    block's time is not linear in its units (small matmuls cost more per unit): the removed amount is
    then set, by bisection, so that the table's interpolated prediction removes ``sparsity`` of the
    dense latency (the smallest such plan).
    """
    options = dict(
        head_scores=head_scores,
        alpha=alpha,
        allocation=allocation,
        structures=structures,
        round_to=round_to,
        fixed_scores=fixed_scores,
        compete=compete,
    )
    if budget.unit == "latency" and budget.latency is not None and budget.sparsity > 0:
        return _latency_plan(blocks, weights, budget, options)
    return _project(blocks, weights, budget, **options)


def _latency_plan(
    blocks: list[BlockUnits], weights: list[dict[str, torch.Tensor]], budget: Budget, options: dict[str, Any]
) -> PrunePlan:
    """The smallest plan of the linear-cost projection whose predicted latency meets ``budget.sparsity``."""
    table = budget.latency
    want = budget.sparsity * table.dense
    # the linear share that removes every removable unit (below 1: a sparsity, also when the table's fixed
    # part is small or, from timing noise, negative)
    limit = min(max_removable(blocks, budget, options["structures"], options["round_to"]) / budget.total, 1.0)

    def plan_at(share: float) -> PrunePlan:
        return _project(blocks, weights, replace(budget, sparsity=share), **options)

    def removed(plan: PrunePlan) -> float:
        return table.dense - table.predict_plan(plan)

    best = plan_at(limit * (1 - 1e-9))
    if removed(best) < want:
        label = structures_label(options["structures"])
        raise ValueError(
            f"pruning.sparsity={budget.sparsity} asks to remove {budget.sparsity:.1%} of the predicted latency but "
            f"at most {removed(best) / table.dense:.1%} can go with pruning.structures={label}"
        )
    low, high = 0.0, limit * (1 - 1e-9)
    for _ in range(40):
        middle = (low + high) / 2
        plan = plan_at(middle)
        if removed(plan) >= want:
            best, high = plan, middle
        else:
            low = middle
    return best


def _project(
    blocks: list[BlockUnits],
    weights: list[dict[str, torch.Tensor]],
    budget: Budget,
    head_scores: list[torch.Tensor] | None,
    alpha: float,
    allocation: Allocation,
    structures: Structures,
    round_to: int,
    fixed_scores: UnitScores | None,
    compete: Compete,
) -> PrunePlan:
    if round_to < 1:
        raise ValueError(f"pruning.round_to={round_to} must be >= 1")
    names = structure_names(structures)
    check_shared(names, budget.unit, allocation, round_to)
    check_feasible(blocks, budget, structures, round_to)
    if fixed_scores is not None:
        scores = check_unit_scores(blocks, fixed_scores)
    else:
        scores = unit_scores(blocks, weights, head_scores, alpha)
        if compete not in ("balanced", "raw"):
            raise ValueError(f"pruning.compete must be 'balanced' or 'raw', got {compete!r}")
        if compete == "balanced" and len(names) > 1:
            scores = balance(blocks, budget, scores, names)
    if allocation == "uniform":
        return _uniform(blocks, budget, scores, names, round_to)
    if allocation != "global":
        raise ValueError(f"pruning.allocation must be 'global' or 'uniform', got {allocation!r}")
    order = list(STRUCTURES)
    candidates = []
    for name in names:
        for position, b in enumerate(STRUCTURES[name].owners(blocks)):
            cost = budget.cost(name, b)
            kind = order.index(name)
            candidates += [
                _Candidate(float(s) ** 2 / cost, kind, position, j, cost) for j, s in enumerate(scores[name][position])
            ]
    candidates.sort(key=lambda c: (c.density, c.kind, c.block, c.index))
    left = {
        (position, kind): STRUCTURES[name].size(b)
        for kind, name in enumerate(order)
        for position, b in enumerate(STRUCTURES[name].owners(blocks))
    }
    ledger = _Exact(blocks, budget, names) if any(STRUCTURES[n].shared for n in names) else _Sum()
    removed_units: set[tuple[int, int, int]] = set()
    target = budget.target

    def removable(c: _Candidate) -> bool:
        return (c.kind, c.block, c.index) not in removed_units and left[(c.block, c.kind)] > 1

    def remove(c: _Candidate) -> None:
        ledger.take(c)
        removed_units.add((c.kind, c.block, c.index))
        left[(c.block, c.kind)] -= 1

    for c in candidates:
        if ledger.removed >= target:
            break
        if removable(c) and ledger.after(c) <= target:
            remove(c)
    if ledger.removed < target:
        remove(min((c for c in candidates if removable(c)), key=lambda c: (ledger.after(c), c.density)))
    plan = _plan(blocks, removed_units)
    if round_to > 1 and any(STRUCTURES[name].aligned for name in names):
        return _align(blocks, budget, plan, scores, names, round_to)
    return plan


class _Sum:
    """The removed cost when unit costs add up (no shared structure competes)."""

    def __init__(self) -> None:
        self.removed = 0

    def after(self, c: _Candidate) -> int:
        return self.removed + c.cost

    def take(self, c: _Candidate) -> None:
        self.removed += c.cost


class _Exact:
    """The removed cost over every sliced tensor, for when a shared structure (channels) competes: a unit's
    cost then depends on what else has gone (:mod:`.costs`)."""

    def __init__(self, blocks: list[BlockUnits], budget: Budget, names: Sequence[str]) -> None:
        self._names = list(STRUCTURES)
        sizes = {name: [STRUCTURES[name].size(b) for b in STRUCTURES[name].owners(blocks)] for name in names}
        self._cost = RemovedCost(cost_terms(blocks, budget.unit, budget.tokens), sizes)

    @property
    def removed(self) -> int:
        return self._cost.removed

    def after(self, c: _Candidate) -> int:
        return self._cost.after(self._names[c.kind], c.block)

    def take(self, c: _Candidate) -> None:
        self._cost.take(self._names[c.kind], c.block)


def _plan(blocks: list[BlockUnits], removed_units: set[tuple[int, int, int]]) -> PrunePlan:
    """The plan that keeps every unit not in ``removed_units`` (structure position, owner position, index)."""
    return PrunePlan(
        **{
            name: tuple(
                tuple(j for j in range(s.size(b)) if (kind, position, j) not in removed_units)
                for position, b in enumerate(s.owners(blocks))
            )
            for kind, (name, s) in enumerate(STRUCTURES.items())
        }
    )


def _order(scores: torch.Tensor) -> list[int]:
    """Indices from best to worst score (ties: lower index first)."""
    return sorted(range(scores.numel()), key=lambda j: (-float(scores[j]), j))


def _top(scores: torch.Tensor, keep: int) -> tuple[int, ...]:
    return tuple(sorted(_order(scores)[:keep]))


def _align(
    blocks: list[BlockUnits],
    budget: Budget,
    plan: PrunePlan,
    scores: UnitScores,
    names: Sequence[str],
    round_to: int,
) -> PrunePlan:
    """Round every block's kept count of each aligned structure (MLP neurons) in the global ``plan`` to an
    allowed count, budget still met.

    Each count goes to the nearest allowed one; while the budget is short, the cheapest step (a chunk
    of a block's worst kept neurons, or the worst kept unit of another competing structure, e.g. a head)
    is removed; then chunks are given back, best first, while the budget stays met. Steps compare
    ``sum(score^2) / cost``, like the greedy order.
    """
    kind = {name: k for k, name in enumerate(STRUCTURES)}
    aligned = [n for n in names if STRUCTURES[n].aligned]
    single = [n for n in names if not STRUCTURES[n].aligned]
    allowed = {n: [neuron_counts(STRUCTURES[n].size(b), round_to) for b in blocks] for n in aligned}
    orders = {n: [_order(t) for t in scores[n]] for n in aligned}
    squares = {
        n: [[float(t[j]) ** 2 for j in order] for t, order in zip(scores[n], orders[n], strict=True)] for n in aligned
    }
    counts = {
        n: [nearest_count(STRUCTURES[n].size(b), round_to, len(k)) for b, k in zip(blocks, plan.kept[n], strict=True)]
        for n in aligned
    }
    # the kept units of the other competing structures, worst first
    kept = {
        n: [sorted(k, key=lambda j, t=t: (float(t[j]), -j)) for k, t in zip(plan.kept[n], scores[n], strict=True)]
        for n in single
    }

    def removed() -> int:
        return removed_by_counts(blocks, budget, {**{n: [len(k) for k in kept[n]] for n in single}, **counts})

    def chunk(name: str, b: BlockUnits, lo: int, hi: int) -> tuple[float, int]:
        cost = (hi - lo) * budget.cost(name, b)
        return sum(squares[name][b.index][lo:hi]) / cost, cost

    while removed() < budget.target:
        steps = []
        for b in blocks:
            for n in aligned:
                position = allowed[n][b.index].index(counts[n][b.index])
                if position > 0:
                    lower = allowed[n][b.index][position - 1]
                    steps.append((chunk(n, b, lower, counts[n][b.index])[0], kind[n], b.index, lower, n))
            for n in single:
                if len(kept[n][b.index]) > 1:
                    worst = kept[n][b.index][0]
                    density = float(scores[n][b.index][worst]) ** 2 / budget.cost(n, b)
                    steps.append((density, kind[n], b.index, worst, n))
        _, _, block, value, n = min(steps)
        if n in counts:
            counts[n][block] = value
        else:
            kept[n][block].remove(value)
    surplus = removed() - budget.target
    while True:
        steps = []
        for b in blocks:
            for n in aligned:
                position = allowed[n][b.index].index(counts[n][b.index])
                if position + 1 < len(allowed[n][b.index]):
                    upper = allowed[n][b.index][position + 1]
                    density, cost = chunk(n, b, counts[n][b.index], upper)
                    if cost <= surplus:
                        steps.append((-density, kind[n], b.index, upper, cost, n))
        if not steps:
            break
        _, _, block, upper, cost, n = min(steps)
        counts[n][block] = upper
        surplus -= cost
    out = dict(plan.kept)
    out |= {n: tuple(tuple(sorted(k)) for k in kept[n]) for n in single}
    out |= {n: tuple(tuple(sorted(o[:c])) for o, c in zip(orders[n], counts[n], strict=True)) for n in aligned}
    return PrunePlan(**out)


def _uniform(
    blocks: list[BlockUnits],
    budget: Budget,
    scores: UnitScores,
    names: Sequence[str],
    round_to: int = 1,
) -> PrunePlan:
    """Every block keeps the same share of its heads and the same share of its neurons (a baseline).

    Heads come in a few large units (4-12 per block), so one share for heads and neurons alike would
    overshoot the budget by a whole head per block (0.38 removed for a 0.3 target with 4 heads), and the
    baseline would be compared at a smaller model. Heads therefore keep the share nearest
    ``1 - sparsity`` that removes no more than the budget on its own, and the neuron share is the largest
    that then meets the budget: the removed amount exceeds the target by less than one neuron (one
    ``round_to`` chunk) per block. With only heads competing (or ``round_to`` >= the MLP width, which
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
        return removed_by_counts(blocks, budget, {"heads": kept_h, "neurons": kept_n})

    if "neurons" not in names:
        options = ((heads_at(step), all_neurons) for step in range(head_steps, 0, -1))
    else:
        kept_h = all_heads
        if "heads" in names:
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
                heads=tuple(_top(scores["heads"][b.index], k) for b, k in zip(blocks, kept_h, strict=True)),
                neurons=tuple(_top(scores["neurons"][b.index], k) for b, k in zip(blocks, kept_n, strict=True)),
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
        keep = plan.keep_masks(self.blocks)
        per_block = split_by_block(flat, len(self.blocks))
        self.last_plan = plan
        return {
            f"{b.index}.{name}": t
            for b in self.blocks
            for name, t in zero_pruned(per_block[b.index], plan.block_keep(keep, b.index), b).items()
        }
