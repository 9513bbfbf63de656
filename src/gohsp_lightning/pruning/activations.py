"""Record attention maps on calibration images and reduce them to head-to-head similarities.

timm's fused attention never materialises softmax(QK^T/sqrt(d)), so the maps are rebuilt from the
``qkv`` output with the block's own ``q_norm``/``k_norm`` and ``scale``. Only two consecutive blocks'
maps are alive at a time, so memory stays at one block's maps for one batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .units import BlockUnits, block_weights


def attention_maps(block: BlockUnits, qkv_out: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T * scale) of every head, shape ``[batch, heads, tokens, tokens]``."""
    attn = block.attn
    batch, tokens, _ = qkv_out.shape
    qkv = qkv_out.reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return torch.softmax((q.float() @ k.float().transpose(-2, -1)) * attn.scale, dim=-1)


@contextmanager
def _qkv_hooks(blocks: list[BlockUnits], sink: list[tuple[int, torch.Tensor]]) -> Iterator[None]:
    handles = [
        b.attn.qkv.register_forward_hook(lambda _m, _i, out, i=b.index: sink.append((i, out.detach()))) for b in blocks
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def attention_similarity(
    model: nn.Module, blocks: list[BlockUnits], images: Iterable[torch.Tensor]
) -> list[torch.Tensor]:
    """Mean cosine similarity of attention maps between every head of block l and every head of block l+1.

    Returns:
        ``len(blocks) - 1`` float64 tensors; entry l has shape ``[heads_l, heads_{l+1}]`` and holds
        ``mean_x cos(A_{l,h}(x), A_{l+1,h'}(x))`` over all calibration images x.
    """
    was_training = model.training
    model.eval()
    sums = [
        torch.zeros(blocks[i].num_heads, blocks[i + 1].num_heads, dtype=torch.float64) for i in range(len(blocks) - 1)
    ]
    count = 0
    device = next(model.parameters()).device
    captured: list[tuple[int, torch.Tensor]] = []
    try:
        with _qkv_hooks(blocks, captured):
            for x in images:
                captured.clear()
                model(x.to(device))
                previous = None
                for index, qkv_out in captured:
                    maps = attention_maps(blocks[index], qkv_out).flatten(2)
                    maps = torch.nn.functional.normalize(maps, dim=-1)
                    if previous is not None:
                        sums[index - 1] += torch.einsum("bhx,bgx->hg", previous, maps).double().cpu()
                    previous = maps
                count += x.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("attention_similarity got no calibration images")
    return [s / count for s in sums]


def taylor_head_importance(
    model: nn.Module, blocks: list[BlockUnits], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> list[torch.Tensor]:
    """First-order Taylor importance of every head: ``|sum over the head's weights of grad * weight|``.

    Gradients of the cross-entropy on the calibration batches, summed over batches; the model's own
    gradients are left as they were.
    """
    was_training = model.training
    model.eval()
    saved = {p: (None if p.grad is None else p.grad.clone()) for p in model.parameters()}
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    try:
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device), reduction="sum")
            loss.backward()
        scores = []
        for b in blocks:
            weights = block_weights(b)
            products = {n: (w.grad * w).detach() for n, w in weights.items() if w.grad is not None}
            if len(products) != len(weights):
                raise ValueError(f"block {b.index} got no gradient on the calibration batches")
            scores.append(_group_sums(products, b.num_heads).abs().double().cpu())
    finally:
        for p, g in saved.items():
            p.grad = g
        model.train(was_training)
    return scores


def _group_sums(tensors: dict[str, torch.Tensor], num_heads: int) -> torch.Tensor:
    """Signed sum of ``tensors`` over each head group (q, k, v rows + biases + proj columns)."""
    qkv = tensors["qkv.weight"]
    dim = qkv.shape[1]
    heads = qkv.reshape(3, num_heads, -1, dim).sum(dim=(0, 2, 3))
    heads = heads + tensors["proj.weight"].reshape(dim, num_heads, -1).sum(dim=(0, 2))
    if "qkv.bias" in tensors:
        heads = heads + tensors["qkv.bias"].reshape(3, num_heads, -1).sum(dim=(0, 2))
    return heads
