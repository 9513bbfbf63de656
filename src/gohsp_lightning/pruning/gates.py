"""Learnable structured gates: one trainable gate per unit of every structure (head, MLP neuron, ...).

A gate is multiplied into the forward where its structure acts (:meth:`Structure.gate`) and trained with
the task loss plus :func:`budget_penalty`, a differentiable expected cost that pushes the gates of
cheap-to-lose units toward 0 until the budget is met in expectation. Two kinds:

* ``sigmoid``: ``sigmoid(logit / temperature)``, deterministic; its values may settle anywhere in (0, 1).
* ``hard_concrete`` (Louizos et al., 2018, "Learning sparse neural networks through L0 regularization"): in
  training a sample ``clamp(sigmoid((logit + logistic noise) / temperature) * 1.2 - 0.1, 0, 1)``, which is
  exactly 0 or 1 with positive probability; the expected cost counts a unit by its probability of being
  non-zero; in evaluation the deterministic ``clamp(sigmoid(logit) * 1.2 - 0.1, 0, 1)``. Gates end at 0 or 1,
  so the cut changes less of what was trained.

The cut (:func:`plan_from_gates`) then removes units in increasing keep probability, through the
same projection as every other method, so the budget is met exactly; :func:`fold_gates` multiplies the
kept units' gate values into the weights, so the pruned model computes what the gated model computed and
the export carries no gate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .plan import PrunePlan
from .projection import Allocation, Budget, Structures, UnitScores, project
from .structures import STRUCTURES, structure_names
from .units import BlockUnits

GATE_KINDS = ("sigmoid", "hard_concrete")
STRETCH = (-0.1, 1.1)  # hard-concrete's stretched interval (gamma, zeta): the tails beyond [0, 1] clamp


def check_gateable(names: Sequence[str]) -> None:
    """Raise a one-line ValueError when a named structure cannot take a learned gate: a shared structure's
    masked norms divide by the count of kept channels, which a soft 0..1 gate has not."""
    shared = [n for n in names if STRUCTURES[n].shared]
    if shared:
        raise ValueError(
            f"pruning.method=gates cannot gate {shared[0]} (their masked norms take 0/1 only); "
            "use pruning.method=gohsp or oneshot with them"
        )


class LearnableGates(nn.Module):
    """Gate logits ``<structure>_<block>`` as parameters (DDP keeps them equal on every rank like any weight),
    for the structures that compete for the budget only: the others are left as they are, like in every method."""

    def __init__(
        self,
        blocks: list[BlockUnits],
        init: float = 3.0,
        temperature: float = 1.0,
        structures: Structures = "both",
        kind: str = "sigmoid",
    ) -> None:
        """``init``: the starting logit (3.0: every sigmoid gate at 0.95, every hard-concrete gate at 1)."""
        super().__init__()
        if kind not in GATE_KINDS:
            raise ValueError(f"gates.kind={kind!r} is not one of {', '.join(GATE_KINDS)}")
        self.kind = kind
        self.num_blocks = len(blocks)
        self.names = structure_names(structures)
        check_gateable(self.names)
        self.logits = nn.ParameterDict(
            {
                f"{name}_{b.index}": nn.Parameter(torch.full((STRUCTURES[name].size(b),), float(init)))
                for b in blocks
                for name in self.names
            }
        )
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self._handles: list[RemovableHandle] = []

    def forward_gate(self, structure: str, block: int) -> torch.Tensor:
        """What the forward multiplies in: a hard-concrete sample in training, else :meth:`value`."""
        logit = self.logits[f"{structure}_{block}"]
        if self.kind == "sigmoid" or not self.training:
            return self.value(structure, block)
        u = torch.rand_like(logit).clamp(1e-6, 1 - 1e-6)
        return _stretch(torch.sigmoid((logit + u.log() - (-u).log1p()) / self.temperature))

    def value(self, structure: str, block: int) -> torch.Tensor:
        """The deterministic gates of ``structure`` (a gated one) in ``block``, in [0, 1]: the evaluation gates."""
        logit = self.logits[f"{structure}_{block}"]
        if self.kind == "sigmoid":
            return torch.sigmoid(logit / self.temperature)
        return _stretch(torch.sigmoid(logit))

    def keep_probability(self, structure: str, block: int) -> torch.Tensor:
        """The probability that a unit's gate is not 0 (sigmoid: the gate itself): the expected cost counts it,
        and the cut keeps units in decreasing order of it (no ties at the clamped ends)."""
        logit = self.logits[f"{structure}_{block}"]
        if self.kind == "sigmoid":
            return self.value(structure, block)
        low, high = STRETCH
        return torch.sigmoid(logit - self.temperature * math.log(-low / high))

    def values(self) -> dict[str, list[torch.Tensor]]:
        return {name: [self.value(name, i) for i in range(self.num_blocks)] for name in self.names}

    def seed(self, scores: UnitScores, spread: float = 1.0) -> None:
        """Start the logits from a ranking (e.g. the graph ranker's head scores): within each structure, a unit
        ``spread`` standard deviations above the mean log-score starts ``spread`` logits above ``init``."""
        with torch.no_grad():
            for name, per_block in scores.items():
                if name not in self.names:
                    continue
                logs = [s.double().clamp(min=1e-30).log() for s in per_block]
                flat = torch.cat(logs)
                z = [(t - flat.mean()) / flat.std().clamp(min=1e-12) for t in logs]
                for i, zi in enumerate(z):
                    logit = self.logits[f"{name}_{i}"]
                    logit.add_(spread * zi.to(logit))

    def attach(self, blocks: list[BlockUnits]) -> None:
        """Multiply the gates into the forward pass of ``blocks`` until :meth:`detach`."""
        self.detach()
        for b in blocks:
            for name in self.names:
                self._handles.append(STRUCTURES[name].gate(b, lambda name=name, i=b.index: self.forward_gate(name, i)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _stretch(s: torch.Tensor) -> torch.Tensor:
    low, high = STRETCH
    return (s * (high - low) + low).clamp(0.0, 1.0)


def expected_removed(gates: LearnableGates, blocks: list[BlockUnits], budget: Budget) -> torch.Tensor:
    """``sum cost * (1 - P(gate != 0))`` over the gated (competing) structures: what the gates remove in
    expectation."""
    total = torch.zeros(())
    for name in gates.names:
        for b in blocks:
            total = total + budget.cost(name, b) * (1 - gates.keep_probability(name, b.index)).sum()
    return total


def budget_penalty(gates: LearnableGates, blocks: list[BlockUnits], budget: Budget) -> torch.Tensor:
    """How far the expected removal falls short of the budget, as a fraction of the dense total (0 once met)."""
    shortfall = budget.target - expected_removed(gates, blocks, budget)
    return torch.relu(shortfall) / budget.total


def plan_from_gates(
    gates: LearnableGates,
    blocks: list[BlockUnits],
    budget: Budget,
    round_to: int = 1,
    allocation: Allocation = "global",
) -> PrunePlan:
    """The cut: units of the gated structures removed in increasing keep probability (the gate value, for sigmoid
    gates) until the budget is met exactly (the projection's guarantee), ignoring cost: scoring a unit
    ``sqrt(p * cost)`` makes its density ``p``.
    ``allocation="uniform"``: the same share in every block, the highest gates kept."""
    with torch.no_grad():
        scores = {
            name: [
                (
                    gates.keep_probability(name, b.index).double()
                    if name in gates.names
                    else torch.ones(s.size(b), dtype=torch.float64)
                )
                .mul(budget.cost(name, b))
                .sqrt()
                for b in s.owners(blocks)
            ]
            for name, s in STRUCTURES.items()
        }
    return project(
        blocks, [], budget, allocation=allocation, structures=gates.names, round_to=round_to, fixed_scores=scores
    )


def fold_gates(gates: LearnableGates, blocks: list[BlockUnits], plan: PrunePlan) -> None:
    """Multiply the gate value of every unit ``plan`` keeps into the weights it gates (in place), and detach
    the gates. After :func:`~.surgery.apply_plan` with ``plan``, the model computes without any hook what the
    gated model computed with the units the plan drops gated to exactly 0."""
    gates.detach()
    keep = plan.keep_masks(blocks)
    with torch.no_grad():
        for b in blocks:
            for name in gates.names:
                STRUCTURES[name].fold(b, gates.value(name, b.index) * keep[name][b.index].to(gates.temperature))
