"""Head rankers by name: ``graph`` (GOHSP), ``magnitude``, ``taylor`` and ``random``.

Each returns one score per head (per block, mean 1 within the normalisation chosen), or ``None``
for ``magnitude``, whose projection uses weight norms only (alpha = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .activations import attention_similarity, taylor_head_importance
from .ranking import Normalize, stationary_scores
from .units import BlockUnits

RANKERS = ("graph", "magnitude", "taylor", "random")


def rank_heads(
    ranker: str,
    model: nn.Module,
    blocks: list[BlockUnits],
    batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    damping: float = 0.85,
    normalize: Normalize = "block",
    seed: int = 0,
) -> list[torch.Tensor] | None:
    """Score every head of ``blocks`` with ``ranker``; ``batches()`` yields calibration ``(images, labels)``."""
    heads = [b.num_heads for b in blocks]
    if ranker == "graph":
        sims = attention_similarity(model, blocks, (x for x, _ in batches()))
        return stationary_scores(sims, heads, damping=damping, normalize=normalize)
    if ranker == "magnitude":
        return None
    if ranker == "taylor":
        raw = taylor_head_importance(model, blocks, batches())
        return [s / s.mean().clamp(min=1e-30) for s in raw]
    if ranker == "random":
        generator = torch.Generator().manual_seed(seed)
        return [torch.rand(n, generator=generator, dtype=torch.float64) * 2 for n in heads]
    raise ValueError(f"pruning.ranker={ranker!r} is not allowed; choose one of {', '.join(RANKERS)}")
