"""Parameter and FLOP counts, measured with ``torch.utils.flop_counter`` on a real forward pass."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (every parameter, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """FLOPs of one image's forward pass at ``input_size`` (C, H, W); a multiply-add counts 2.

    The counter has no formula for the CPU fused-attention kernel, so timm's attention runs its
    explicit ``q @ k^T`` / ``attn @ v`` path while counting (same math, counted on every device).
    """
    param = next(model.parameters())
    x = torch.zeros(1, *input_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    fused = {m: m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")}
    model.eval()
    try:
        for m in fused:
            m.fused_attn = False
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for m, value in fused.items():
            m.fused_attn = value
        model.train(was_training)
    return int(counter.get_total_flops())


def macs(flops: int) -> int:
    """Multiply-accumulates for a :func:`count_flops` figure: what ViT papers and timm's configs call FLOPs.

    Every op ``torch.utils.flop_counter`` counts (matmuls, convolutions, attention) is a multiply-add
    counted as 2, so the MACs are exactly half (DeiT-Small: 4.6 G, the figure published tables give,
    where :func:`count_flops` reads 9.2 G).
    """
    return flops // 2
