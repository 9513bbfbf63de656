"""The comparisons, each measured side by side in one call: inference (dense vs pruned), a latency-budget plan
vs a FLOPs-budget plan, the training step of each stage (dense, ADMM, fine-tune), and a graph-ranking pass vs
training."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from torch import nn

from ..config import DistillConfig
from ..pruning import (
    AdmmState,
    Budget,
    PrunePlan,
    StructuredProjector,
    count_flops,
    count_params,
    find_blocks,
    num_tokens,
    project,
    prunable_weights,
)
from ..pruning.distill import distillation_loss
from ..pruning.flops import macs
from ..pruning.latency import (
    DTYPES,
    LatencyTable,
    latency_budget,
    measure_latency_table,
    measure_models,
    table_key,
)
from ..pruning.projection import max_removable
from ..pruning.rankers import rank_heads
from ..pruning.structures import block_weights
from ..pruning.timing import interleaved, sync
from .models import calibration_batches, exported_twin

MODES = ("eager", "compiled")
IMAGENET_TRAIN_IMAGES = 1_281_167


@dataclass
class BenchmarkOptions:
    """What to measure and how (the command line of ``scripts/benchmark.py``, one field per flag)."""

    model: str = "deit_small_patch16_224"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    sparsity: float = 0.35
    budget: str = "params"
    round_to: int = 1
    plan_from: str = "magnitude"
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32, 256])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    dtypes: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    modes: list[str] = field(default_factory=lambda: ["eager"])
    latency_batch_size: int = 32
    repeats: int = 5
    warmup: int = 2
    min_sample_s: float = 0.2
    train_batch_size: int = 32
    train_precision: str = "fp32"  # or "bf16-mixed" (autocast, as Lightning's precision plugin)
    rho: float = 1e-3
    calibration_images: int = 64
    calibration_batch_size: int = 64
    epoch_images: int = IMAGENET_TRAIN_IMAGES
    seed: int = 0


TRAIN_PRECISIONS = ("fp32", "bf16-mixed")


def _autocast(opts: BenchmarkOptions, device: torch.device) -> torch.autocast:
    """bf16 autocast for ``train_precision=bf16-mixed`` (as Lightning's precision plugin), else a no-op."""
    if opts.train_precision not in TRAIN_PRECISIONS:
        raise ValueError(f"train_precision={opts.train_precision!r}: choose one of {', '.join(TRAIN_PRECISIONS)}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.train_precision == "bf16-mixed")


def out_of_memory(err: BaseException) -> bool:
    """True for a device out-of-memory error (a batch size to skip, not a bug)."""
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def bench_inference(
    opts: BenchmarkOptions,
    dense: nn.Module,
    pruned: nn.Module,
    input_size: tuple[int, ...],
    flops_ratio: float,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Dense vs pruned per device, dtype, mode and batch: ms per call, images/s, speedup and efficiency
    (= speedup / FLOPs reduction). A batch that runs out of memory becomes a ``skipped`` row. ``on_row``
    sees each row as soon as it is measured (the script prints it)."""
    rows: list[dict[str, Any]] = []
    for device_name in opts.devices:
        device = torch.device(device_name)
        for dtype_name, mode in [(d, m) for d in opts.dtypes for m in opts.modes]:
            dtype = DTYPES[dtype_name]
            models = {
                "dense": copy.deepcopy(dense).to(device, dtype).eval(),
                "pruned": copy.deepcopy(pruned).to(device, dtype).eval(),
            }
            if mode == "compiled":
                models = {name: torch.compile(m) for name, m in models.items()}
            for batch in opts.batch_sizes:
                row: dict[str, Any] = {"device": device_name, "dtype": dtype_name, "mode": mode, "batch": batch}
                try:
                    x = torch.randn(batch, *input_size, device=device, dtype=dtype)
                    with torch.inference_mode():
                        fns = {name: (lambda m=m: m(x)) for name, m in models.items()}
                        t = interleaved(fns, device, opts.repeats, opts.warmup, opts.min_sample_s)
                except (RuntimeError, torch.OutOfMemoryError) as err:
                    if not out_of_memory(err):
                        raise
                    row["skipped"] = "out of memory"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                else:
                    speedup = t["dense"] / t["pruned"]
                    row |= {
                        "dense_ms": 1e3 * t["dense"],
                        "pruned_ms": 1e3 * t["pruned"],
                        "dense_img_s": batch / t["dense"],
                        "pruned_img_s": batch / t["pruned"],
                        "speedup": speedup,
                        "flops_reduction": flops_ratio,
                        "efficiency": speedup / flops_ratio,
                    }
                rows.append(row)
                if on_row is not None:
                    on_row(row)
            del models
    return rows


def bench_latency_plan(
    opts: BenchmarkOptions, dense: nn.Module, input_size: tuple[int, ...], table: LatencyTable | None = None
) -> dict[str, Any]:
    """A ``budget=latency`` plan vs a ``budget=flops`` plan of the same predicted latency (magnitude scores),
    both exported, measured side by side with the dense model: the table's prediction error, and which is faster.
    The table (unless given: one measured earlier on the same device) is measured on the first device and
    dtype at ``latency_batch_size``."""
    device, dtype_name = torch.device(opts.devices[0]), opts.dtypes[0]
    dtype, batch = DTYPES[dtype_name], opts.latency_batch_size
    blocks = find_blocks(dense)
    weights = [block_weights(b) for b in blocks]
    key = table_key(opts.model, device, dtype_name, batch, input_size)
    if table is None:
        table = measure_latency_table(dense, key, device, dtype, batch, input_size, opts.round_to)
    table.check(blocks)
    tokens = num_tokens(dense)
    by_latency = project(blocks, weights, latency_budget(opts.sparsity, table, tokens), round_to=opts.round_to)
    target = table.predict_plan(by_latency)
    flops_total = count_flops(dense, input_size)

    def flops_plan(share: float) -> PrunePlan:
        return project(blocks, weights, Budget(share, flops_total, "flops", tokens), round_to=opts.round_to)

    # the smallest FLOPs cut whose predicted latency is no higher than the latency plan's, at most the most a
    # FLOPs plan can remove (a table that is steep at few units can predict less than any FLOPs plan reaches)
    most = max_removable(blocks, Budget(0.0, flops_total, "flops", tokens), round_to=opts.round_to)
    low, high = 0.0, (most - 0.5) / flops_total  # the share whose ceil'd target is exactly ``most``
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (low, middle) if table.predict_plan(flops_plan(middle)) <= target else (middle, high)
    by_flops = flops_plan(high)
    models = {"dense": dense}
    with tempfile.TemporaryDirectory() as tmp:
        for name, plan in (("latency_plan", by_latency), ("flops_plan", by_flops)):
            models[name] = exported_twin(dense, plan, opts, Path(tmp) / name)
    t = measure_models(models, device, dtype, batch, input_size, opts.repeats, 0.5, opts.warmup)
    return {
        "device": key["device"],
        "dtype": dtype_name,
        "batch": batch,
        "sparsity": opts.sparsity,
        "predicted_dense_s": table.dense,
        "table_fixed_s": table.fixed,
        "table_scale": table.scale,
        "predicted_latency_plan_s": target,
        "predicted_flops_plan_s": table.predict_plan(by_flops),
        "measured_s": t,
        "prediction_error": target / t["latency_plan"] - 1,
        "dense_prediction_error": table.dense / t["dense"] - 1,
        # the share of the dense latency the plan removes, as predicted vs as measured in the same turns:
        # unlike seconds, it does not drift with the machine's speed between the table and the timing
        "predicted_latency_plan_speedup": table.dense / target,
        "speedup_prediction_error": (table.dense / target) / (t["dense"] / t["latency_plan"]) - 1,
        "latency_plan_speedup": t["dense"] / t["latency_plan"],
        "flops_plan_speedup": t["dense"] / t["flops_plan"],
        "latency_plan_over_flops_plan": t["flops_plan"] / t["latency_plan"],
        "macs": {name: macs(count_flops(m, input_size)) for name, m in models.items()},
        "latency_plan": {"heads": by_latency.heads_per_block, "mlp": by_latency.mlp_hidden_per_block},
        "flops_plan": {"heads": by_flops.heads_per_block, "mlp": by_flops.mlp_hidden_per_block},
    }


def bench_training(
    opts: BenchmarkOptions, dense: nn.Module, input_size: tuple[int, ...], pruned: nn.Module | None = None
) -> dict[str, Any]:
    """The training step of each stage, timed in turns on the last benchmarked device (same data, AdamW;
    forward + backward + step) at ``opts.train_precision``: the dense model (plain), the ADMM stage (+ the
    penalty) and, given the ``pruned`` model, the fine-tune stage (the pruned student + the frozen dense
    teacher's forward + the distillation loss); plus the ADMM penalty's own forward + backward."""
    device = torch.device(opts.devices[-1])
    generator = torch.Generator().manual_seed(opts.seed)
    x = torch.randn(opts.train_batch_size, *input_size, generator=generator).to(device)
    y = torch.randint(dense.num_classes, (opts.train_batch_size,), generator=generator).to(device)
    # as Lightning's bf16-mixed: the forward and the losses under autocast, the weights and AdamW in fp32
    autocast = _autocast(opts, device)

    models = {name: copy.deepcopy(dense).to(device).train() for name in ("plain", "admm")}
    if pruned is not None:
        models["finetune"] = copy.deepcopy(pruned).to(device).train()
    teacher = None if pruned is None else copy.deepcopy(dense).to(device).eval().requires_grad_(False)
    kd = DistillConfig()  # the fine-tune stage's default distillation
    blocks = find_blocks(models["admm"])
    budget = Budget(opts.sparsity, count_params(models["admm"]))
    projector = StructuredProjector(blocks, budget, round_to=opts.round_to)
    admm = AdmmState(prunable_weights(blocks), opts.rho).to(device)
    admm.reset(prunable_weights(blocks), projector)
    admm.update(prunable_weights(blocks), projector)  # U != 0, as mid-stage
    optimizers = {name: create_optimizer_v2(m, opt="adamw", lr=1e-6, weight_decay=0.05) for name, m in models.items()}

    def step(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        with autocast:
            logits = models[name](x)
            loss = F.cross_entropy(logits, y)
            if name == "admm":
                loss = loss + admm.penalty(prunable_weights(blocks))
            if teacher is not None and name == "finetune":
                with torch.no_grad():
                    teacher_logits = teacher(x)
                distill = distillation_loss(logits, teacher_logits, kd.kind, kd.temperature)
                loss = (1 - kd.weight) * loss + kd.weight * distill
        loss.backward()
        optimizers[name].step()

    def penalty_only() -> None:
        models["admm"].zero_grad(set_to_none=True)
        admm.penalty(prunable_weights(blocks)).backward()

    t = interleaved({name: (lambda name=name: step(name)) for name in models}, device, opts.repeats, opts.warmup, 0.0)
    penalty = interleaved({"penalty": penalty_only}, device, opts.repeats, opts.warmup, opts.min_sample_s)["penalty"]
    finetune = (
        {} if pruned is None else {"finetune_step_s": t["finetune"], "finetune_over_plain": t["finetune"] / t["plain"]}
    )
    return {
        "device": device.type,
        "batch": opts.train_batch_size,
        "prunable_weights": sum(w.numel() for w in prunable_weights(blocks).values()),
        "plain_step_s": t["plain"],
        "admm_step_s": t["admm"],
        "admm_over_plain": t["admm"] / t["plain"],
        "penalty_fwd_bwd_s": penalty,
        "penalty_over_plain": penalty / t["plain"],
        "precision": opts.train_precision,
        **finetune,
    }


def bench_ranking(
    opts: BenchmarkOptions, dense: nn.Module, input_size: tuple[int, ...], plain_step_s: float | None
) -> dict[str, Any]:
    """One graph ranking pass on N images vs plain training over N images and over one epoch (both
    extrapolated from ``plain_step_s``, the plain step of :func:`bench_training`, when given)."""
    device = torch.device(opts.devices[-1])
    model = copy.deepcopy(dense).to(device).eval()
    blocks = find_blocks(model)
    n, bs = opts.calibration_images, opts.calibration_batch_size
    batches = calibration_batches(n, bs, input_size, dense.num_classes, opts.seed)
    warm = calibration_batches(min(n, bs), bs, input_size, dense.num_classes, opts.seed)
    autocast = _autocast(opts, device)  # the pipeline ranks under the stage's precision
    for _ in range(min(opts.warmup, 1)):
        with autocast:
            rank_heads("graph", model, blocks, warm)
    sync(device)
    times = []
    for _ in range(max(1, opts.repeats // 2)):
        start = time.perf_counter()
        with autocast:
            rank_heads("graph", model, blocks, batches)
        sync(device)
        times.append(time.perf_counter() - start)
    ranking_s = statistics.median(times)
    out: dict[str, Any] = {
        "device": device.type,
        "precision": opts.train_precision,
        "calibration_images": n,
        "ranking_pass_s": ranking_s,
    }
    if plain_step_s is not None:
        per_image = plain_step_s / opts.train_batch_size
        out |= {
            "train_same_images_s": per_image * n,
            "ranking_over_train_same_images": ranking_s / (per_image * n),
            "epoch_images": opts.epoch_images,
            "train_epoch_s": per_image * opts.epoch_images,
            "ranking_over_epoch": ranking_s / (per_image * opts.epoch_images),
        }
    return out
