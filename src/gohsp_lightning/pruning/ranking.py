"""Graph-based head ranking: inter-block head graph -> Markov chain -> stationary distribution.

Nodes are heads ``(block, head)``; every head of block l points to every head of block l+1 with
weight ``max(similarity, 0)``. networkx's weighted PageRank row-normalises the weights into transition
probabilities and adds uniform teleport (damping ``d``), which makes the chain ergodic; a head's
importance is its stationary probability.
"""

from __future__ import annotations

from typing import Literal

import networkx as nx
import torch

Normalize = Literal["global", "block"]


def head_graph(similarities: list[torch.Tensor], heads_per_block: list[int]) -> nx.DiGraph:
    """Directed head graph; ``similarities[l]`` is ``[heads_l, heads_{l+1}]``."""
    if len(similarities) != len(heads_per_block) - 1:
        raise ValueError(f"{len(heads_per_block)} blocks need {len(heads_per_block) - 1} similarity matrices")
    graph = nx.DiGraph()
    for block, heads in enumerate(heads_per_block):
        graph.add_nodes_from((block, h) for h in range(heads))
    for block, sim in enumerate(similarities):
        if tuple(sim.shape) != (heads_per_block[block], heads_per_block[block + 1]):
            raise ValueError(
                f"similarity {block} has shape {tuple(sim.shape)}, expected heads of blocks {block}, {block + 1}"
            )
        for h, row in enumerate(sim.clamp(min=0).tolist()):
            for g, weight in enumerate(row):
                if weight > 0:
                    graph.add_edge((block, h), (block + 1, g), weight=weight)
    return graph


def stationary_scores(
    similarities: list[torch.Tensor],
    heads_per_block: list[int],
    damping: float = 0.85,
    normalize: Normalize = "global",
) -> list[torch.Tensor]:
    """Importance of every head, one float64 tensor per block.

    Args:
        damping: probability of following an edge rather than teleporting (PageRank ``alpha``).
        normalize: ``"global"`` scales so the mean over all heads is 1 (blocks compete on their
            stationary mass); ``"block"`` scales each block to mean 1 (only the order inside a block counts).
    """
    if not 0.0 < damping < 1.0:
        raise ValueError(f"ranking damping must be in (0, 1), got {damping}")
    graph = head_graph(similarities, heads_per_block)
    pi = nx.pagerank(graph, alpha=damping, weight="weight", tol=1e-12, max_iter=1000)
    scores = [torch.tensor([pi[(b, h)] for h in range(n)], dtype=torch.float64) for b, n in enumerate(heads_per_block)]
    if normalize == "global":
        total = sum(heads_per_block)
        return [s * total for s in scores]
    if normalize == "block":
        return [s / s.mean() for s in scores]
    raise ValueError(f"ranking.normalize must be 'global' or 'block', got {normalize!r}")
