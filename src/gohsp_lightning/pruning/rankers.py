"""Rankers by name (``pruning.ranker``): what orders the heads and neurons the projection removes.

* ``graph`` (GOHSP): Markov-chain head scores from attention-map similarity guide the weight norms
  (``pi^alpha * ||group||``);
* ``taylor``: first-order ``|grad . weight|`` head scores from the calibration set, in the same role;
* ``magnitude``: weight norms only (no head scores, the same as alpha = 0);
* ``random``: no head scores and no weights at all: :func:`fixed_unit_scores` gives every head and
  neuron a random priority drawn once from the seed, so every Z update and the final plan remove the
  same random structures (a true random baseline).

Neurons are always scored by their weight norm, except under ``random``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .activations import attention_similarity, taylor_head_importance
from .projection import Budget, UnitScores
from .ranking import Normalize, stationary_scores
from .units import BlockUnits

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
HeadRanker = Callable[[nn.Module, list[BlockUnits], Batches, float, Normalize], list[torch.Tensor] | None]


def _graph(
    model: nn.Module, blocks: list[BlockUnits], batches: Batches, damping: float, normalize: Normalize
) -> list[torch.Tensor]:
    sims = attention_similarity(model, blocks, (x for x, _ in batches()))
    return stationary_scores(sims, [b.num_heads for b in blocks], damping=damping, normalize=normalize)


def _taylor(
    model: nn.Module, blocks: list[BlockUnits], batches: Batches, damping: float, normalize: Normalize
) -> list[torch.Tensor]:
    raw = taylor_head_importance(model, blocks, batches())
    if normalize == "global":
        mean = torch.cat(raw).mean().clamp(min=1e-30)
        return [s / mean for s in raw]
    return [s / s.mean().clamp(min=1e-30) for s in raw]


def _no_head_scores(
    model: nn.Module, blocks: list[BlockUnits], batches: Batches, damping: float, normalize: Normalize
) -> None:
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
    damping: float = 0.85,
    normalize: Normalize = "block",
) -> list[torch.Tensor] | None:
    """Score every head of ``blocks`` with ``ranker``; ``batches()`` yields calibration ``(images, labels)``.

    Returns one float64 tensor per block (mean 1 within the ``normalize`` scope), or ``None`` when the
    ranker gives the projection no head scores (``magnitude``, ``random``). Every ranker is deterministic
    given the model and batches; the random order is drawn once per run by :func:`fixed_unit_scores`.
    """
    if ranker not in HEAD_RANKERS:
        raise ValueError(f"pruning.ranker={ranker!r} is not allowed; choose one of {', '.join(RANKERS)}")
    return HEAD_RANKERS[ranker](model, blocks, batches, damping, normalize)


def random_unit_scores(blocks: list[BlockUnits], budget: Budget, seed: int) -> UnitScores:
    """A uniformly random removal order over every head and neuron, drawn from ``seed`` alone.

    The projection removes units in increasing ``score^2 / cost``; scoring a unit ``sqrt(u * cost)``
    with ``u ~ U(0, 1)`` makes that density ``u`` itself, so heads (costly) and neurons (cheap) are
    equally likely to go next, whatever their weights and whatever the budget unit.
    """
    generator = torch.Generator().manual_seed(seed)
    heads, neurons = [], []
    for b in blocks:
        head_u = torch.rand(b.num_heads, generator=generator, dtype=torch.float64)
        neuron_u = torch.rand(b.hidden, generator=generator, dtype=torch.float64)
        heads.append((head_u * budget.head_cost(b)).sqrt())
        neurons.append((neuron_u * budget.neuron_cost(b)).sqrt())
    return heads, neurons


def fixed_unit_scores(ranker: str, blocks: list[BlockUnits], budget: Budget, seed: int) -> UnitScores | None:
    """Weight-independent scores for the projection's ``fixed_scores``, or ``None`` to score by weights."""
    if ranker not in HEAD_RANKERS:
        raise ValueError(f"pruning.ranker={ranker!r} is not allowed; choose one of {', '.join(RANKERS)}")
    return random_unit_scores(blocks, budget, seed) if ranker == "random" else None
