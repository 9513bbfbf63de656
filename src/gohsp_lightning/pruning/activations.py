"""Record attention maps on calibration images and reduce them to head-to-head similarities.

Fused attention never materialises softmax(QK^T/sqrt(d)), so while the statistics are gathered every
block runs its unfused path, and the maps are read where the family itself computed them: the input of
``attn_drop`` (RoPE, relative position bias and q/k norms included, exactly as the family applies them),
with each head's output read at the input of ``proj``. Only two consecutive blocks' maps are alive at a
time, so memory stays at one block's maps for one batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .structures import STRUCTURES
from .units import BlockUnits


@contextmanager
def recorded_attention(blocks: list[BlockUnits], sink: list[tuple[int, torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """While inside, every forward appends ``(block, maps, head_outputs)`` to ``sink``: the softmax maps
    ``[batch, heads, tokens, tokens]`` and the per-head outputs fed to ``proj`` ``[batch, tokens, heads, head_dim]``."""
    fused = [getattr(b.attn, "fused_attn", False) for b in blocks]
    maps: dict[int, torch.Tensor] = {}

    def keep_maps(index: int, args: tuple[torch.Tensor, ...]) -> None:
        maps[index] = args[0].detach()

    def keep_outputs(block: BlockUnits, args: tuple[torch.Tensor, ...]) -> None:
        batch, tokens, _ = args[0].shape
        outputs = args[0].detach().reshape(batch, tokens, block.num_heads, block.head_dim)
        sink.append((block.index, maps.pop(block.index), outputs))

    handles = []
    for b in blocks:
        b.attn.fused_attn = False
        handles.append(b.attn.attn_drop.register_forward_pre_hook(lambda _m, args, i=b.index: keep_maps(i, args)))
        handles.append(b.attn.proj.register_forward_pre_hook(lambda _m, args, b=b: keep_outputs(b, args)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for b, was_fused in zip(blocks, fused, strict=True):
            b.attn.fused_attn = was_fused


@dataclass
class HeadStatistics:
    """What every head does on the calibration images, reduced to what the graph formulations need.

    Similarities are between every head of block l and every head of block l+1 (``[heads_l, heads_l+1]``):

    * ``cosine``: mean over images of cos(A_lh, A_l+1,h') of the softmax maps;
    * ``centered``: the same for ``A - 1/N``, which removes what every map shares (the uniform part);
    * ``cka``: linear CKA, over all calibration tokens, of the heads' contributions ``A_h V_h W_o,h^T``
      to the residual stream.

    Per head: ``energy`` (mean squared norm of its contribution per token) and ``entropy`` (mean entropy
    of its attention rows, in nats; ``ln(tokens)`` for uniform attention).
    """

    cosine: list[torch.Tensor]
    centered: list[torch.Tensor]
    cka: list[torch.Tensor]
    energy: list[torch.Tensor]
    entropy: list[torch.Tensor]
    images: int
    tokens: int

    def similarity(self, kind: str) -> list[torch.Tensor]:
        if kind not in ("cosine", "centered", "cka"):
            raise ValueError(f"ranking.similarity={kind!r} is not allowed; choose one of cosine, centered, cka")
        return getattr(self, kind)


class _Moments:
    """Running sums over calibration tokens of one block's per-head outputs ``o = A_h V_h`` (float64)."""

    def __init__(self, heads: int, head_dim: int) -> None:
        self.sum = torch.zeros(heads, head_dim, dtype=torch.float64)
        self.second = torch.zeros(heads, head_dim, head_dim, dtype=torch.float64)

    def add(self, outputs: torch.Tensor) -> None:
        self.sum += outputs.sum(dim=0).double().cpu()
        self.second += torch.einsum("nhd,nhe->hde", outputs, outputs).double().cpu()


def _cka(
    cross: torch.Tensor, first: _Moments, second: _Moments, gram_a: torch.Tensor, gram_b: torch.Tensor, n: int
) -> torch.Tensor:
    """Linear CKA of X_h = O_h W_h^T and Y_g = O_g W_g^T from moments of O, never forming the tokens x dim X.

    With K the centred cross-moment of O_h and O_g and G = W^T W, ``||X~^T Y~||_F^2 = tr(K^T G_h K G_g)``.
    """
    mean_a, mean_b = first.sum / n, second.sum / n
    k_ab = cross - n * torch.einsum("hd,ge->hgde", mean_a, mean_b)
    k_aa = first.second - n * torch.einsum("hd,he->hde", mean_a, mean_a)
    k_bb = second.second - n * torch.einsum("hd,he->hde", mean_b, mean_b)
    num = torch.einsum("hgde,hdf,hgfk,gke->hg", k_ab, gram_a, k_ab, gram_b)
    self_a = torch.einsum("hde,hdf,hfk,hke->h", k_aa, gram_a, k_aa, gram_a)
    self_b = torch.einsum("hde,hdf,hfk,hke->h", k_bb, gram_b, k_bb, gram_b)
    return num / (self_a[:, None] * self_b[None, :]).clamp(min=1e-300).sqrt()


def _proj_grams(block: BlockUnits) -> torch.Tensor:
    """``W_h^T W_h`` of every head's slice of ``proj`` (``[heads, head_dim, head_dim]``, float64)."""
    w = block.attn.proj.weight.detach().double().cpu().reshape(block.dim, block.num_heads, block.head_dim)
    return torch.einsum("ehd,ehf->hdf", w, w)


@torch.no_grad()
def head_statistics(model: nn.Module, blocks: list[BlockUnits], images: Iterable[torch.Tensor]) -> HeadStatistics:
    """One pass over ``images`` (eval mode): similarities between consecutive blocks, energy and entropy per head."""
    was_training = model.training
    model.eval()
    pairs = [(blocks[i].num_heads, blocks[i + 1].num_heads) for i in range(len(blocks) - 1)]
    cosine = [torch.zeros(a, b, dtype=torch.float64) for a, b in pairs]
    centered = [torch.zeros(a, b, dtype=torch.float64) for a, b in pairs]
    cross = [
        torch.zeros(a, b, blocks[i].head_dim, blocks[i + 1].head_dim, dtype=torch.float64)
        for i, (a, b) in enumerate(pairs)
    ]
    entropy = [torch.zeros(b.num_heads, dtype=torch.float64) for b in blocks]
    moments = [_Moments(b.num_heads, b.head_dim) for b in blocks]
    count, tokens = 0, 0
    device = next(model.parameters()).device
    captured: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    try:
        with recorded_attention(blocks, captured):
            for x in images:
                captured.clear()
                model(x.to(device))
                previous = None
                for index, maps, head_outputs in captured:
                    maps = maps.float()
                    tokens = maps.shape[-1]
                    entropy[index] += -(maps * maps.clamp(min=1e-30).log()).sum(-1).mean(-1).sum(0).double().cpu()
                    outputs = head_outputs.float().flatten(0, 1)  # [batch * tokens, heads, head_dim]
                    moments[index].add(outputs)
                    flat = maps.flatten(2)
                    current = (
                        torch.nn.functional.normalize(flat, dim=-1),
                        torch.nn.functional.normalize(flat - 1.0 / tokens, dim=-1),
                        outputs,
                    )
                    if previous is not None:
                        cosine[index - 1] += torch.einsum("bhx,bgx->hg", previous[0], current[0]).double().cpu()
                        centered[index - 1] += torch.einsum("bhx,bgx->hg", previous[1], current[1]).double().cpu()
                        cross[index - 1] += torch.einsum("nhd,nge->hgde", previous[2], current[2]).double().cpu()
                    previous = current
                count += x.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("head_statistics got no calibration images")
    n = count * tokens
    grams = [_proj_grams(b) for b in blocks]
    cka = [_cka(cross[i], moments[i], moments[i + 1], grams[i], grams[i + 1], n) for i in range(len(pairs))]
    energy = [torch.einsum("hde,hed->h", grams[i], moments[i].second) / n for i in range(len(blocks))]
    return HeadStatistics(
        cosine=[s / count for s in cosine],
        centered=[s / count for s in centered],
        cka=cka,
        energy=energy,
        entropy=[e / count for e in entropy],
        images=count,
        tokens=tokens,
    )


def attention_similarity(
    model: nn.Module, blocks: list[BlockUnits], images: Iterable[torch.Tensor]
) -> list[torch.Tensor]:
    """Mean cosine similarity of attention maps between every head of block l and every head of block l+1.

    Returns:
        ``len(blocks) - 1`` float64 tensors; entry l has shape ``[heads_l, heads_{l+1}]`` and holds
        ``mean_x cos(A_{l,h}(x), A_{l+1,h'}(x))`` over all calibration images x.
    """
    return head_statistics(model, blocks, images).cosine


def taylor_head_importance(
    model: nn.Module, blocks: list[BlockUnits], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> list[torch.Tensor]:
    """First-order Taylor importance of every head: the mean over batches of ``|sum_group grad * weight|``.

    The absolute value is taken per batch (the estimated loss change of removing the head on that batch),
    then averaged: summing signed products over batches first would let batches cancel one another and
    rate a head whose removal hurts every batch, in different directions, as unimportant. Gradients of the
    mean cross-entropy of each batch; the model's own gradients are left as they were.
    """
    was_training = model.training
    model.eval()
    saved = {p: (None if p.grad is None else p.grad.clone()) for p in model.parameters()}
    device = next(model.parameters()).device
    heads = STRUCTURES["heads"]
    totals = [torch.zeros(b.num_heads, dtype=torch.float64) for b in blocks]
    count = 0
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
            for b, total in zip(blocks, totals, strict=True):
                weights = heads.weights(b)
                products = {n: (w.grad * w).detach() for n, w in weights.items() if w.grad is not None}
                if len(products) != len(weights):
                    raise ValueError(f"block {b.index} got no gradient on the calibration batches")
                total += heads.group_sums(products, b).abs().double().cpu()
            count += 1
    finally:
        for p, g in saved.items():
            p.grad = g
        model.train(was_training)
    if count == 0:
        raise ValueError("taylor_head_importance got no calibration batches")
    return [t / count for t in totals]
