"""Rankers by name (``pruning.ranker``): what orders the heads and neurons the projection removes.

* ``graph`` (GOHSP): Markov-chain head scores from the similarity of heads in consecutive blocks guide
  the weight norms (``factor^alpha * ||group||``, the factor from :func:`~.ranking.head_factor`);
* ``taylor``: first-order ``|grad . weight|`` head scores from the calibration set, in the same role;
* ``magnitude``: weight norms only (no head scores, the same as alpha = 0);
* ``random``: no head scores and no weights at all: :func:`fixed_unit_scores` gives every head and
  neuron a random priority drawn once from the seed, so every Z update and the final plan remove the
  same random structures (a true random baseline).

Every other structure (MLP neurons) is scored by its weight norm, except under ``random``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .activations import head_statistics, taylor_head_importance
from .projection import Budget, UnitScores
from .ranking import GraphOptions, graph_head_factor
from .structures import STRUCTURES
from .units import BlockUnits

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
HeadRanker = Callable[[nn.Module, list[BlockUnits], Batches, GraphOptions], list[torch.Tensor] | None]


def _graph(model: nn.Module, blocks: list[BlockUnits], batches: Batches, options: GraphOptions) -> list[torch.Tensor]:
    stats = head_statistics(model, blocks, (x for x, _ in batches()))
    factor, _ = graph_head_factor(
        stats.similarity(options.similarity), [b.num_heads for b in blocks], options, stats.energy
    )
    return factor


def _taylor(model: nn.Module, blocks: list[BlockUnits], batches: Batches, options: GraphOptions) -> list[torch.Tensor]:
    raw = taylor_head_importance(model, blocks, batches())
    if options.normalize == "global":
        mean = torch.cat(raw).mean().clamp(min=1e-30)
        return [s / mean for s in raw]
    return [s / s.mean().clamp(min=1e-30) for s in raw]


def _no_head_scores(model: nn.Module, blocks: list[BlockUnits], batches: Batches, options: GraphOptions) -> None:
    return None


HEAD_RANKERS: dict[str, HeadRanker] = {
    "graph": _graph,
    "magnitude": _no_head_scores,
    "taylor": _taylor,
    "random": _no_head_scores,
}
RANKERS = tuple(HEAD_RANKERS)


def rank_heads(
    ranker: str,
    model: nn.Module,
    blocks: list[BlockUnits],
    batches: Batches,
    options: GraphOptions | None = None,
) -> list[torch.Tensor] | None:
    """Score every head of ``blocks`` with ``ranker``; ``batches()`` yields calibration ``(images, labels)``.

    Returns one float64 tensor per block: the factor by which the projection multiplies the head's
    weight norm (raised to ``pruning.alpha``), or ``None`` when the ranker gives the projection no head
    scores (``magnitude``, ``random``). ``options`` is the graph formulation (default: :class:`GraphOptions`);
    ``taylor`` reads its ``normalize`` only. Every ranker is deterministic given the model and batches; the
    random order is drawn once per run by :func:`fixed_unit_scores`.
    """
    if ranker not in HEAD_RANKERS:
        raise ValueError(f"pruning.ranker={ranker!r} is not allowed; choose one of {', '.join(RANKERS)}")
    return HEAD_RANKERS[ranker](model, blocks, batches, options or GraphOptions())


def random_unit_scores(blocks: list[BlockUnits], budget: Budget, seed: int) -> UnitScores:
    """A uniformly random removal order over every unit of every structure, drawn from ``seed`` alone.

    The projection removes units in increasing ``score^2 / cost``; scoring a unit ``sqrt(u * cost)``
    with ``u ~ U(0, 1)`` makes that density ``u`` itself, so heads (costly) and neurons (cheap) are
    equally likely to go next, whatever their weights and whatever the budget unit.
    """
    generator = torch.Generator().manual_seed(seed)
    scores: UnitScores = {name: [] for name in STRUCTURES}
    for b in blocks:
        for name, s in STRUCTURES.items():
            if not s.shared:
                u = torch.rand(s.size(b), generator=generator, dtype=torch.float64)
                scores[name].append((u * budget.cost(s, b)).sqrt())
    for name, s in STRUCTURES.items():  # drawn after the per-block ones: their order stays what it was
        if s.shared:
            owner = s.owners(blocks)[0]
            u = torch.rand(s.size(owner), generator=generator, dtype=torch.float64)
            scores[name].append((u * budget.cost(s, owner)).sqrt())
    return scores


def fixed_unit_scores(ranker: str, blocks: list[BlockUnits], budget: Budget, seed: int) -> UnitScores | None:
    """Weight-independent scores for the projection's ``fixed_scores``, or ``None`` to score by weights."""
    if ranker not in HEAD_RANKERS:
        raise ValueError(f"pruning.ranker={ranker!r} is not allowed; choose one of {', '.join(RANKERS)}")
    return random_unit_scores(blocks, budget, seed) if ranker == "random" else None
