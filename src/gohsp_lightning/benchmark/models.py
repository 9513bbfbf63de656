"""The benchmark's two models: a dense timm model (random weights: speed does not depend on the values) and
its pruned twin, always the exported artifact (``save_pruned`` -> ``load_pruned``), as a user ships it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch
from timm.data import resolve_model_data_config
from torch import nn

from ..pruning import (
    Budget,
    PrunePlan,
    apply_plan,
    count_flops,
    count_params,
    find_blocks,
    load_pruned,
    num_tokens,
    project,
    read_config,
    save_pruned,
)
from ..pruning.rankers import rank_heads
from ..pruning.structures import block_weights
from ..pruning.units import model_input_size

if TYPE_CHECKING:
    from .measure import BenchmarkOptions

PLAN_SOURCES = ("magnitude", "graph")
Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def calibration_batches(count: int, batch: int, input_size: tuple[int, ...], num_classes: int, seed: int) -> Batches:
    """Random ``(images, labels)`` batches: ``rank_heads``' calibration input (values do not change its cost)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [min(batch, count - start) for start in range(0, count, batch)]
    data = [
        (torch.randn(n, *input_size, generator=generator), torch.randint(num_classes, (n,), generator=generator))
        for n in sizes
    ]
    return lambda: iter(data)


def exported_twin(dense: nn.Module, plan: PrunePlan, opts: BenchmarkOptions, directory: Path) -> nn.Module:
    """``dense`` cut by ``plan``, saved with ``save_pruned`` into ``directory`` and reloaded with ``load_pruned``:
    the artifact a user ships, with the data config of the size the model was built for."""
    data_config = {**resolve_model_data_config(dense), "input_size": model_input_size(dense)}
    pruned = apply_plan(copy.deepcopy(dense), plan)
    return load_pruned(save_pruned(directory, pruned, plan, opts.model, opts.model_kwargs, data_config))


def build_models(opts: BenchmarkOptions, workdir: Path) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """``(dense, pruned, info)``. ``opts.plan_from``: ``magnitude`` (the projection on weight norms), ``graph``
    (``rank_heads('graph')`` on random calibration images, then the projection), or an export directory
    (its dense twin is rebuilt from its config)."""
    torch.manual_seed(opts.seed)
    if opts.plan_from not in PLAN_SOURCES:
        config = read_config(opts.plan_from)
        dense = timm.create_model(config["model_name"], pretrained=False, **config["model_kwargs"]).eval()
        info = {
            "plan_from": str(opts.plan_from),
            "model": config["model_name"],
            "input_size": list(config["data_config"]["input_size"]),
        }
        return dense, load_pruned(opts.plan_from), info
    dense = timm.create_model(opts.model, pretrained=False, **opts.model_kwargs).eval()
    input_size = model_input_size(dense)  # timm's data config gives the hub weights' size, not model_kwargs'
    blocks = find_blocks(dense)
    total = count_params(dense) if opts.budget == "params" else count_flops(dense, input_size)
    budget = Budget(opts.sparsity, total, opts.budget, num_tokens(dense))
    scores = None
    if opts.plan_from == "graph":
        batches = calibration_batches(
            opts.calibration_images, opts.calibration_batch_size, input_size, dense.num_classes, opts.seed
        )
        scores = rank_heads("graph", dense, blocks, batches)
    plan = project(blocks, [block_weights(b) for b in blocks], budget, scores, round_to=opts.round_to)
    info = {
        "plan_from": opts.plan_from,
        "model": opts.model,
        "budget": opts.budget,
        "sparsity": opts.sparsity,
        "round_to": opts.round_to,
        "input_size": list(input_size),
        "heads_per_block": plan.heads_per_block,
        "mlp_hidden_per_block": plan.mlp_hidden_per_block,
    }
    return dense, exported_twin(dense, plan, opts, workdir / "pruned"), info


def model_checks(model: nn.Module) -> dict[str, int]:
    """What makes a pruned model slow if present: hooks (per-call mask multiplies), non-contiguous weights,
    attention blocks that fell back from the fused kernel."""
    attention = [m for m in model.modules() if hasattr(m, "fused_attn")]
    return {
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
        "non_contiguous_params": sum(not p.is_contiguous() for p in model.parameters()),
        "fused_attention_blocks": sum(bool(m.fused_attn) for m in attention),
        "attention_blocks": len(attention),
    }
