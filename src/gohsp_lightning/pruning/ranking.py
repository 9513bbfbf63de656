"""Graph-based head ranking: inter-block head graph -> Markov chain -> stationary distribution.

Nodes are heads ``(block, head)``; consecutive blocks are linked with weight ``max(similarity, 0)``
(forward from block l to l+1, backward, or both: :class:`GraphOptions.chain`). networkx's weighted PageRank
row-normalises the weights into transition probabilities and adds teleport (damping ``d``), which makes
the chain ergodic; a head's importance is its stationary probability. :func:`head_factor` turns it into
the multiplier of the head's weight norm that the projection uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import networkx as nx
import torch

Normalize = Literal["global", "block"]
Similarity = Literal["cosine", "centered", "cka"]
Chain = Literal["forward", "backward", "undirected"]
Teleport = Literal["uniform", "energy"]
Combine = Literal["pow", "exp"]

SIMILARITIES: tuple[str, ...] = ("cosine", "centered", "cka")
CHAINS: tuple[str, ...] = ("forward", "backward", "undirected")
TELEPORTS: tuple[str, ...] = ("uniform", "energy")
COMBINES: tuple[str, ...] = ("pow", "exp")
NORMALIZES: tuple[str, ...] = ("block", "global")


@dataclass(frozen=True)
class GraphOptions:
    """One formulation of the graph ranking (every field is a ``ranking.*`` knob).

    * ``similarity``: edge weights from the cosine of the heads' softmax maps, the cosine of the maps minus
      the uniform map ``1/N`` (``centered``: what all maps share is removed), or linear CKA of the heads'
      contributions ``A_h V_h W_o,h`` to the residual stream (``cka``);
    * ``chain``: which way the walk goes between consecutive blocks;
    * ``teleport``: uniform, or proportional to each head's output energy (personalised PageRank);
    * ``temperature``: transitions ``∝ w^(1/T)``; below 1 sharpens them toward the most similar heads;
    * ``combine``: ``pow``: factor ``pi_norm`` (the projection raises it to ``pruning.alpha``); ``exp``:
      factor ``exp(beta * z)``, z the per-block z-score of pi, so the ranking's weight does not depend on
      pi's raw spread and the sign of ``beta`` says whether heads resembling their neighbours matter more
      (``beta > 0``) or are redundant (``beta < 0``).

    The defaults are the formulation the ranking-quality harness chose on val for the shipped model (README,
    "Does the head ranking carry information?"); the run config reads them, and ``conf/ranking/markov.yaml``
    states the same values (a test keeps them equal).
    """

    similarity: Similarity = "cosine"
    chain: Chain = "backward"
    teleport: Teleport = "energy"
    temperature: float = 1.0
    combine: Combine = "pow"
    beta: float = 1.0
    damping: float = 0.85
    normalize: Normalize = "block"

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("similarity", self.similarity, SIMILARITIES),
            ("chain", self.chain, CHAINS),
            ("teleport", self.teleport, TELEPORTS),
            ("combine", self.combine, COMBINES),
            ("normalize", self.normalize, NORMALIZES),
        ):
            if value not in allowed:
                raise ValueError(f"ranking.{key}={value!r} is not allowed; choose one of {', '.join(allowed)}")
        if not 0.0 < self.damping < 1.0:
            raise ValueError(f"ranking.damping={self.damping} must be in (0, 1)")
        if not self.temperature > 0:
            raise ValueError(
                f"ranking.temperature={self.temperature} must be > 0 (1 = transitions as the similarities)"
            )

    @property
    def label(self) -> str:
        """A short name of this formulation, e.g. ``centered/undirected/uniform/T1/exp-1``."""
        combine = "pow" if self.combine == "pow" else f"exp{self.beta:+g}"
        return f"{self.similarity}/{self.chain}/{self.teleport}/T{self.temperature:g}/{combine}"


def head_graph(
    similarities: list[torch.Tensor],
    heads_per_block: list[int],
    chain: Chain = "forward",
    temperature: float = 1.0,
) -> nx.DiGraph:
    """Directed head graph; ``similarities[l]`` is ``[heads_l, heads_{l+1}]``; edge weights ``max(s, 0)^(1/T)``."""
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
        for h, row in enumerate(sim.double().clamp(min=0).pow(1.0 / temperature).tolist()):
            for g, weight in enumerate(row):
                if weight <= 0:
                    continue
                if chain in ("forward", "undirected"):
                    graph.add_edge((block, h), (block + 1, g), weight=weight)
                if chain in ("backward", "undirected"):
                    graph.add_edge((block + 1, g), (block, h), weight=weight)
    return graph


def stationary_scores(
    similarities: list[torch.Tensor],
    heads_per_block: list[int],
    damping: float = 0.85,
    normalize: Normalize = "global",
    chain: Chain = "forward",
    temperature: float = 1.0,
    teleport: list[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Importance of every head, one float64 tensor per block.

    Args:
        damping: probability of following an edge rather than teleporting (PageRank ``alpha``).
        normalize: ``"global"`` scales so the mean over all heads is 1 (blocks compete on their
            stationary mass); ``"block"`` scales each block to mean 1 (only the order inside a block counts).
        teleport: per-block non-negative teleport weights (personalised PageRank); ``None`` = uniform.
            Dangling heads (no outgoing edge) jump by the same distribution.
    """
    if not 0.0 < damping < 1.0:
        raise ValueError(f"ranking damping must be in (0, 1), got {damping}")
    graph = head_graph(similarities, heads_per_block, chain, temperature)
    personalization = None
    if teleport is not None:
        personalization = {(b, h): float(t[h]) for b, t in enumerate(teleport) for h in range(heads_per_block[b])}
        if sum(personalization.values()) <= 0 or min(personalization.values()) < 0:
            raise ValueError("teleport weights must be non-negative and not all zero")
    pi = nx.pagerank(graph, alpha=damping, weight="weight", personalization=personalization, tol=1e-12, max_iter=1000)
    scores = [torch.tensor([pi[(b, h)] for h in range(n)], dtype=torch.float64) for b, n in enumerate(heads_per_block)]
    if normalize == "global":
        total = sum(heads_per_block)
        return [s * total for s in scores]
    if normalize == "block":
        return [s / s.mean() for s in scores]
    raise ValueError(f"ranking.normalize must be 'global' or 'block', got {normalize!r}")


def block_zscores(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-block z-scores (population std); a block whose scores are all equal gets zeros."""
    out = []
    for s in scores:
        s = s.double()
        std = s.std(unbiased=False) if s.numel() > 1 else torch.tensor(0.0, dtype=torch.float64)
        out.append(
            torch.zeros_like(s) if float(std) <= 1e-12 * max(float(s.abs().max()), 1e-300) else (s - s.mean()) / std
        )
    return out


def head_factor(pi: list[torch.Tensor], combine: Combine = "pow", beta: float = 1.0) -> list[torch.Tensor]:
    """The multiplier of each head's weight norm: ``pi`` itself (``pow``) or ``exp(beta * z_block(pi))``."""
    if combine == "pow":
        return [p.double() for p in pi]
    if combine == "exp":
        return [torch.exp(beta * z) for z in block_zscores(pi)]
    raise ValueError(f"ranking.combine must be one of {', '.join(COMBINES)}, got {combine!r}")


def graph_head_factor(
    similarities: list[torch.Tensor],
    heads_per_block: list[int],
    options: GraphOptions,
    energy: list[torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(factor, pi)`` of every head under ``options``; ``energy`` is needed for ``teleport="energy"``."""
    if options.teleport == "energy" and energy is None:
        raise ValueError("ranking.teleport=energy needs the heads' output energy")
    pi = stationary_scores(
        similarities,
        heads_per_block,
        damping=options.damping,
        normalize=options.normalize,
        chain=options.chain,
        temperature=options.temperature,
        teleport=energy if options.teleport == "energy" else None,
    )
    return head_factor(pi, options.combine, options.beta), pi
