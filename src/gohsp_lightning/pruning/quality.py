"""How informative is a head ranking? Ground truth by single-head ablation, and rank statistics against it.

The ground truth for "this head matters" is what switching it off (all other heads on) costs on images
the ranking did not see: the increase in cross-entropy and the drop in top-1. A ranking earns its place
by ordering the heads of each block like that damage (within-block Spearman), by adding something beyond
the weight norm (partial Spearman given the norm), and by giving the same order on two disjoint
calibration sets (test-retest). Heads are switched off with the same gates the pruning uses
(:class:`~.masks.StructuredMasks`), so "off" means exactly what the hard prune does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from .masks import StructuredMasks
from .units import BlockUnits

Batch = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def per_image_outcomes(model: nn.Module, batches: Sequence[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and correctness (top-1) of every image, in order, float64 ``[images]`` each."""
    losses, correct = [], []
    for x, y in batches:
        logits = model(x).float()
        losses.append(F.cross_entropy(logits, y, reduction="none").double())
        correct.append((logits.argmax(-1) == y).double())
    return torch.cat(losses), torch.cat(correct)


@dataclass
class Ablation:
    """Per-image outcomes of the intact model and of every single-head ablation (``[heads, images]`` per block)."""

    base_ce: torch.Tensor
    base_correct: torch.Tensor
    ce: list[torch.Tensor]
    correct: list[torch.Tensor]

    @property
    def images(self) -> int:
        return int(self.base_ce.numel())

    def delta_ce(self, weights: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Mean increase in cross-entropy per head; ``weights`` ``[images]`` (e.g. bootstrap counts) or uniform."""
        return [self._mean(ce - self.base_ce, weights) for ce in self.ce]

    def delta_top1(self) -> list[torch.Tensor]:
        """Drop in top-1 per head (positive = the head's removal costs accuracy)."""
        return [self._mean(self.base_correct - c, None) for c in self.correct]

    @staticmethod
    def _mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if weights is None:
            return values.mean(dim=-1)
        return values @ weights.double() / weights.sum()


@contextmanager
def head_gates(model: nn.Module, blocks: list[BlockUnits]) -> Iterator[StructuredMasks]:
    """The model in eval mode with the pruning's own gates attached (all open) until the block ends."""
    model.eval()
    masks = StructuredMasks(blocks).to(next(model.parameters()).device)
    masks.attach(blocks)
    try:
        yield masks
    finally:
        masks.detach()


@torch.no_grad()
def head_ablation(model: nn.Module, blocks: list[BlockUnits], batches: Sequence[Batch]) -> Ablation:
    """Switch off one head at a time (all others on) and record every image's loss and correctness."""
    with head_gates(model, blocks) as masks:
        base_ce, base_correct = per_image_outcomes(model, batches)
        ce, correct = [], []
        for b in blocks:
            block_ce, block_correct = [], []
            for h in range(b.num_heads):
                masks.gate("heads", b.index)[h] = 0.0
                loss, hit = per_image_outcomes(model, batches)
                masks.gate("heads", b.index)[h] = 1.0
                block_ce.append(loss)
                block_correct.append(hit)
            ce.append(torch.stack(block_ce))
            correct.append(torch.stack(block_correct))
    return Ablation(base_ce, base_correct, ce, correct)


@torch.no_grad()
def pruning_curve(
    model: nn.Module, blocks: list[BlockUnits], scores: list[torch.Tensor], batches: Sequence[Batch]
) -> list[float]:
    """Top-1 with the k lowest-scored heads of every block off (k = 1 .. heads - 1), no fine-tuning.

    Ties go to the lower head index first, as in the projection. A block with fewer heads than k keeps one.
    """
    orders = [sorted(range(s.numel()), key=lambda j, s=s: (float(s[j]), j)) for s in scores]
    top1 = []
    with head_gates(model, blocks) as masks:
        for k in range(1, max(b.num_heads for b in blocks)):
            for b, order in zip(blocks, orders, strict=True):
                gate = masks.gate("heads", b.index)
                gate.fill_(1.0)
                gate[order[: min(k, b.num_heads - 1)]] = 0.0
            top1.append(float(per_image_outcomes(model, batches)[1].mean()))
    return top1


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks along the last dimension (ties share their mean rank), float64."""
    return torch.from_numpy(rankdata(values.detach().cpu().double().numpy(), axis=-1)).double()


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last dimension; NaN where either side is constant."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    denom = (a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt()
    return torch.where(denom > 1e-12, (a * b).sum(-1) / denom.clamp(min=1e-300), torch.full_like(denom, float("nan")))


def block_spearman(scores: torch.Tensor, damage: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of one block's scores ``[heads]`` with its damage ``[..., heads]`` (batched over ...).

    A ranking that gives every head the same score cannot order them: its correlation is 0, not NaN.
    """
    rho = _pearson(_ranks(scores).expand_as(damage), _ranks(damage))
    return torch.nan_to_num(rho, nan=0.0)


def mean_spearman(scores: list[torch.Tensor], damage: list[torch.Tensor]) -> float:
    """Mean over blocks of the within-block Spearman correlation between scores and damage."""
    return float(torch.stack([block_spearman(s, d) for s, d in zip(scores, damage, strict=True)]).mean())


def bootstrap_spearman(
    scores: list[torch.Tensor], ablation: Ablation, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of :func:`mean_spearman` against delta-CE when the ablation images are resampled."""
    generator = torch.Generator().manual_seed(seed)
    n = ablation.images
    picks = torch.randint(0, n, (resamples, n), generator=generator)
    counts = torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(
        1, picks, torch.ones(resamples, n, dtype=torch.float64)
    )
    per_block = []
    for s, ce in zip(scores, ablation.ce, strict=True):
        damage = ((ce - ablation.base_ce) @ counts.T / n).T  # [resamples, heads]
        per_block.append(block_spearman(s, damage))
    means = torch.stack(per_block).mean(0)
    tail = (1 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return lo, hi


def partial_spearman(scores: list[torch.Tensor], damage: list[torch.Tensor], norms: list[torch.Tensor]) -> float | None:
    """Mean over blocks of the Spearman partial correlation of score and damage given the weight norm.

    Does the ranking predict the damage beyond what the norm already does? Blocks where the score is a
    monotone function of the norm (the partial correlation is undefined) are left out; ``None`` if all are.
    """
    values = []
    for s, d, w in zip(scores, damage, norms, strict=True):
        rs, rd, rw = _ranks(s), _ranks(d), _ranks(w)
        r_sd, r_sw, r_dw = (float(_pearson(a, b)) for a, b in ((rs, rd), (rs, rw), (rd, rw)))
        denom = (1 - r_sw**2) * (1 - r_dw**2)
        if any(r != r for r in (r_sd, r_sw, r_dw)) or denom <= 1e-12:
            continue
        values.append((r_sd - r_sw * r_dw) / denom**0.5)
    return sum(values) / len(values) if values else None


def retest_spearman(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    """Mean over blocks of the Spearman correlation between two scorings of the same heads.

    Two identical orderings give 1, also when a block's scores are all equal in both (a data-independent
    ranking is perfectly repeatable).
    """
    values = []
    for a, b in zip(first, second, strict=True):
        if torch.equal(_ranks(a), _ranks(b)):
            values.append(1.0)
        else:
            values.append(float(block_spearman(a, b)))
    return sum(values) / len(values)
