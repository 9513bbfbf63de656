"""Dense vs GOHSP-pruned ViT, measured side by side in one run and printed as ratios.

What it measures (random weights: speed does not depend on the values):

* inference: latency and throughput of the dense and the pruned model at several batch sizes, on CPU
  and on the GPU when present, in fp32 and bf16. Calls alternate dense, pruned, dense, pruned, ...
  so both models see the same machine load; medians are reported. ``efficiency = speedup / FLOPs
  reduction`` says how much of the FLOPs cut turns into wall-clock speed (1.0 = all of it).
* training step: forward + backward + AdamW step of the dense model, plain vs with the ADMM penalty
  ``AdmmState.penalty`` added (the ADMM stage's W-step), plus the penalty's forward + backward alone.
* ranking: one graph ranking pass (``rank_heads("graph", ...)``) on N calibration images, compared with
  plain training steps over the same N images and over one epoch of ``--epoch-images`` images (both
  extrapolated from the measured plain step time).

The pruned model is the exported artifact: it is made by the real projection (``project`` with a
``Budget``), saved with ``save_pruned`` and reloaded with ``load_pruned``; or taken from ``--plan-from DIR``.

Example (2 CPU cores, about ten minutes; on a shared machine, passive OpenMP waiting keeps other
processes' load from adding a spin-wait cost to every op):
    OMP_WAIT_POLICY=PASSIVE python scripts/benchmark.py --threads 2 --batch-sizes 1,32 --repeats 5 --warmup 1
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_model_data_config
from timm.optim import create_optimizer_v2
from torch import nn

from gohsp_lightning.pruning import (
    AdmmState,
    Budget,
    PrunePlan,
    StructuredProjector,
    apply_plan,
    count_flops,
    count_params,
    find_blocks,
    load_pruned,
    num_tokens,
    project,
    prunable_weights,
    read_config,
    save_pruned,
)
from gohsp_lightning.pruning.files import atomic_write_json
from gohsp_lightning.pruning.flops import macs
from gohsp_lightning.pruning.latency import latency_budget, measure_latency_table, table_key
from gohsp_lightning.pruning.rankers import rank_heads
from gohsp_lightning.pruning.structures import block_weights

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("eager", "compiled")
PLAN_SOURCES = ("magnitude", "graph")
IMAGENET_TRAIN_IMAGES = 1_281_167


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _choice_list(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"got {text!r}; choose from {', '.join(allowed)}")
        return values

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="deit_small_patch16_224", help="timm model name (random weights)")
    parser.add_argument("--sparsity", type=float, default=0.35, help="fraction of the budget unit removed")
    parser.add_argument("--budget", choices=("params", "flops"), default="params", help="budget unit")
    parser.add_argument("--round-to", type=int, default=1, help="kept MLP neurons per block rounded to a multiple")
    parser.add_argument(
        "--plan-from",
        default="magnitude",
        help="magnitude: project() on weight norms; graph: rank_heads('graph') on calibration images, then "
        "project(); or an export directory (save_pruned output) to benchmark that model against its dense twin",
    )
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 32, 256], help="inference batch sizes")
    parser.add_argument("--devices", type=_choice_list(("cpu", "cuda")), default=None, help="default: cpu[,cuda]")
    parser.add_argument("--dtypes", type=_choice_list(tuple(DTYPES)), default=["fp32", "bf16"])
    parser.add_argument(
        "--modes", type=_choice_list(MODES), default=["eager"], help="eager and/or compiled (torch.compile) models"
    )
    parser.add_argument(
        "--latency-plan",
        action="store_true",
        help="also: a budget=latency plan at --sparsity (table measured on the first device/dtype at batch "
        "--latency-batch-size) vs a budget=flops plan of the same predicted latency, measured side by side",
    )
    parser.add_argument("--latency-batch-size", type=int, default=32, help="batch of the latency table")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=5, help="timed samples per model and setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per model before timing")
    parser.add_argument(
        "--min-sample-s", type=float, default=0.2, help="calls per sample grow until one sample lasts this"
    )
    parser.add_argument("--train-batch-size", type=int, default=32, help="batch of the plain/ADMM training step")
    parser.add_argument("--rho", type=float, default=1e-3, help="ADMM rho (the cost does not depend on it)")
    parser.add_argument("--calibration-images", type=int, default=64, help="N images of the ranking pass")
    parser.add_argument("--calibration-batch-size", type=int, default=64, help="batch of the ranking pass")
    parser.add_argument(
        "--epoch-images", type=int, default=IMAGENET_TRAIN_IMAGES, help="images per epoch (default: ImageNet-1k train)"
    )
    parser.add_argument("--skip-inference", action="store_true", help="skip the dense vs pruned inference timing")
    parser.add_argument("--skip-train", action="store_true", help="skip the training-step comparison")
    parser.add_argument("--skip-ranking", action="store_true", help="skip the ranking-pass comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    for key in ("repeats", "train_batch_size", "calibration_images", "calibration_batch_size", "epoch_images"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.round_to < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--warmup must be >= 0, --round-to and --threads >= 1")
    if args.plan_from not in PLAN_SOURCES and not Path(args.plan_from).is_dir():
        parser.error(f"--plan-from={args.plan_from!r} is neither {' nor '.join(PLAN_SOURCES)} nor an export directory")
    if args.devices is None:
        args.devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    if "cuda" in args.devices and not torch.cuda.is_available():
        parser.error("--devices includes cuda but no CUDA device is available")
    return args


# --------------------------------------------------------------------------- models
def calibration_batches(count: int, batch: int, input_size: tuple[int, ...], num_classes: int, seed: int):
    """Random ``(images, labels)`` batches: ``rank_heads``' calibration input (values do not change its cost)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [min(batch, count - start) for start in range(0, count, batch)]
    data = [
        (torch.randn(n, *input_size, generator=generator), torch.randint(num_classes, (n,), generator=generator))
        for n in sizes
    ]
    return lambda: iter(data)


def build_models(args: argparse.Namespace, workdir: Path) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """``(dense, pruned, info)``; the pruned model always comes back through ``load_pruned``."""
    torch.manual_seed(args.seed)
    if args.plan_from not in PLAN_SOURCES:
        config = read_config(args.plan_from)
        dense = timm.create_model(config["model_name"], pretrained=False, **config["model_kwargs"]).eval()
        info = {
            "plan_from": str(args.plan_from),
            "model": config["model_name"],
            "input_size": list(config["data_config"]["input_size"]),
        }
        return dense, load_pruned(args.plan_from), info
    dense = timm.create_model(args.model, pretrained=False).eval()
    data_config = resolve_model_data_config(dense)
    input_size = tuple(data_config["input_size"])
    blocks = find_blocks(dense)
    total = count_params(dense) if args.budget == "params" else count_flops(dense, input_size)
    budget = Budget(args.sparsity, total, args.budget, num_tokens(dense))
    scores = None
    if args.plan_from == "graph":
        batches = calibration_batches(
            args.calibration_images, args.calibration_batch_size, input_size, dense.num_classes, args.seed
        )
        scores = rank_heads("graph", dense, blocks, batches)
    plan = project(blocks, [block_weights(b) for b in blocks], budget, scores, round_to=args.round_to)
    pruned = apply_plan(copy.deepcopy(dense), plan)
    directory = save_pruned(workdir / "pruned", pruned, plan, args.model, {}, data_config)
    info = {
        "plan_from": args.plan_from,
        "model": args.model,
        "budget": args.budget,
        "sparsity": args.sparsity,
        "round_to": args.round_to,
        "input_size": list(input_size),
        "heads_per_block": plan.heads_per_block,
        "mlp_hidden_per_block": plan.mlp_hidden_per_block,
    }
    return dense, load_pruned(directory), info


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


# --------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int, min_sample_s: float
) -> dict[str, float]:
    """Median seconds per call of every function, timed in turns (a, b, a, b, ...) after ``warmup`` calls each.

    Each sample repeats a call until it lasts about ``min_sample_s`` (fast GPU/batch-1 calls), the same
    count for every function so the turns stay balanced.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    first = []
    for fn in fns.values():
        start = time.perf_counter()
        fn()
        _sync(device)
        first.append(time.perf_counter() - start)
    number = max(1, math.ceil(min_sample_s / max(min(first), 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(number):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(values) for name, values in samples.items()}


def _out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def bench_inference(
    args: argparse.Namespace, dense: nn.Module, pruned: nn.Module, input_size: tuple[int, ...], flops_ratio: float
) -> list[dict]:
    rows = []
    for device_name in args.devices:
        device = torch.device(device_name)
        for dtype_name, mode in [(d, m) for d in args.dtypes for m in args.modes]:
            dtype = DTYPES[dtype_name]
            models = {
                "dense": copy.deepcopy(dense).to(device, dtype).eval(),
                "pruned": copy.deepcopy(pruned).to(device, dtype).eval(),
            }
            if mode == "compiled":
                models = {name: torch.compile(m) for name, m in models.items()}
            for batch in args.batch_sizes:
                row = {"device": device_name, "dtype": dtype_name, "mode": mode, "batch": batch}
                try:
                    x = torch.randn(batch, *input_size, device=device, dtype=dtype)
                    with torch.inference_mode():
                        fns = {name: (lambda m=m: m(x)) for name, m in models.items()}
                        t = interleaved(fns, device, args.repeats, args.warmup, args.min_sample_s)
                except (RuntimeError, torch.OutOfMemoryError) as err:
                    if not _out_of_memory(err):
                        raise
                    rows.append({**row, "skipped": "out of memory"})
                    print(_format_inference([rows[-1]], header=len(rows) == 1), flush=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                speedup = t["dense"] / t["pruned"]
                rows.append(
                    {
                        **row,
                        "dense_ms": 1e3 * t["dense"],
                        "pruned_ms": 1e3 * t["pruned"],
                        "dense_img_s": batch / t["dense"],
                        "pruned_img_s": batch / t["pruned"],
                        "speedup": speedup,
                        "flops_reduction": flops_ratio,
                        "efficiency": speedup / flops_ratio,
                    }
                )
                print(_format_inference([rows[-1]], header=len(rows) == 1), flush=True)
            del models
    return rows


def bench_latency_plan(args: argparse.Namespace, dense: nn.Module, input_size: tuple[int, ...]) -> dict[str, Any]:
    """A ``budget=latency`` plan vs a ``budget=flops`` plan of the same predicted latency (magnitude scores),
    both exported, measured side by side with the dense model: the table's prediction error, and which is faster."""
    device, dtype_name = torch.device(args.devices[0]), args.dtypes[0]
    dtype, batch = DTYPES[dtype_name], args.latency_batch_size
    blocks, weights = find_blocks(dense), [block_weights(b) for b in find_blocks(dense)]
    key = table_key(args.model, device, dtype_name, batch, input_size)
    table = measure_latency_table(dense, key, device, dtype, batch, input_size, args.round_to)
    by_latency = project(
        blocks, weights, latency_budget(args.sparsity, table, num_tokens(dense)), round_to=args.round_to
    )
    target = table.predict_plan(by_latency)
    flops_total = count_flops(dense, input_size)

    def flops_plan(share: float) -> PrunePlan:
        return project(blocks, weights, Budget(share, flops_total, "flops", num_tokens(dense)), round_to=args.round_to)

    low, high = 0.0, 0.95
    for _ in range(30):  # the smallest FLOPs cut whose predicted latency is no higher than the latency plan's
        middle = (low + high) / 2
        low, high = (low, middle) if table.predict_plan(flops_plan(middle)) <= target else (middle, high)
    by_flops = flops_plan(high)
    models = {"dense": copy.deepcopy(dense)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, plan in (("latency_plan", by_latency), ("flops_plan", by_flops)):
            pruned = apply_plan(copy.deepcopy(dense), plan)
            directory = save_pruned(Path(tmp) / name, pruned, plan, args.model, {}, resolve_model_data_config(dense))
            models[name] = load_pruned(directory)
    models = {name: m.to(device, dtype).eval() for name, m in models.items()}
    x = torch.randn(batch, *input_size, device=device, dtype=dtype)
    with torch.inference_mode():
        t = interleaved({n: (lambda m=m: m(x)) for n, m in models.items()}, device, args.repeats, args.warmup, 0.5)
    return {
        "device": key["device"],
        "dtype": dtype_name,
        "batch": batch,
        "sparsity": args.sparsity,
        "predicted_dense_s": table.dense,
        "predicted_latency_plan_s": target,
        "predicted_flops_plan_s": table.predict_plan(by_flops),
        "measured_s": t,
        "prediction_error": target / t["latency_plan"] - 1,
        "latency_plan_speedup": t["dense"] / t["latency_plan"],
        "flops_plan_speedup": t["dense"] / t["flops_plan"],
        "latency_plan_over_flops_plan": t["flops_plan"] / t["latency_plan"],
        "macs": {name: macs(count_flops(m.float().cpu(), input_size)) for name, m in models.items()},
        "latency_plan": {"heads": by_latency.heads_per_block, "mlp": by_latency.mlp_hidden_per_block},
        "flops_plan": {"heads": by_flops.heads_per_block, "mlp": by_flops.mlp_hidden_per_block},
    }


def bench_training(args: argparse.Namespace, dense: nn.Module, input_size: tuple[int, ...]) -> dict[str, Any]:
    """Plain step vs ADMM step (same weights, data and optimizer), fp32, on the GPU when benchmarked, else CPU."""
    device = torch.device(args.devices[-1])
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.train_batch_size, *input_size, generator=generator).to(device)
    y = torch.randint(dense.num_classes, (args.train_batch_size,), generator=generator).to(device)

    plain_model = copy.deepcopy(dense).to(device).train()
    admm_model = copy.deepcopy(dense).to(device).train()
    blocks = find_blocks(admm_model)
    budget = Budget(args.sparsity, count_params(admm_model))
    projector = StructuredProjector(blocks, budget, round_to=args.round_to)
    admm = AdmmState(prunable_weights(blocks), args.rho).to(device)
    admm.reset(prunable_weights(blocks), projector)
    admm.update(prunable_weights(blocks), projector)  # U != 0, as mid-stage
    optimizers = {
        name: create_optimizer_v2(m, opt="adamw", lr=1e-6, weight_decay=0.05)
        for name, m in (("plain", plain_model), ("admm", admm_model))
    }

    def step(name: str, model: nn.Module) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if name == "admm":
            loss = loss + admm.penalty(prunable_weights(blocks))
        loss.backward()
        optimizers[name].step()

    def penalty_only() -> None:
        admm_model.zero_grad(set_to_none=True)
        admm.penalty(prunable_weights(blocks)).backward()

    t = interleaved(
        {"plain": lambda: step("plain", plain_model), "admm": lambda: step("admm", admm_model)},
        device,
        args.repeats,
        args.warmup,
        0.0,
    )
    penalty = interleaved({"penalty": penalty_only}, device, args.repeats, args.warmup, args.min_sample_s)["penalty"]
    return {
        "device": device.type,
        "batch": args.train_batch_size,
        "prunable_weights": sum(w.numel() for w in prunable_weights(blocks).values()),
        "plain_step_s": t["plain"],
        "admm_step_s": t["admm"],
        "admm_over_plain": t["admm"] / t["plain"],
        "penalty_fwd_bwd_s": penalty,
        "penalty_over_plain": penalty / t["plain"],
    }


def bench_ranking(
    args: argparse.Namespace, dense: nn.Module, input_size: tuple[int, ...], plain_step_s: float | None
) -> dict[str, Any]:
    """One graph ranking pass on N images vs plain training over N images and over one epoch."""
    device = torch.device(args.devices[-1])
    model = copy.deepcopy(dense).to(device).eval()
    blocks = find_blocks(model)
    n, bs = args.calibration_images, args.calibration_batch_size
    batches = calibration_batches(n, bs, input_size, dense.num_classes, args.seed)
    warm = calibration_batches(min(n, bs), bs, input_size, dense.num_classes, args.seed)
    for _ in range(min(args.warmup, 1)):
        rank_heads("graph", model, blocks, warm)
    _sync(device)
    times = []
    for _ in range(max(1, args.repeats // 2)):
        start = time.perf_counter()
        rank_heads("graph", model, blocks, batches)
        _sync(device)
        times.append(time.perf_counter() - start)
    ranking_s = statistics.median(times)
    out: dict[str, Any] = {"device": device.type, "calibration_images": n, "ranking_pass_s": ranking_s}
    if plain_step_s is not None:
        per_image = plain_step_s / args.train_batch_size
        out |= {
            "train_same_images_s": per_image * n,
            "ranking_over_train_same_images": ranking_s / (per_image * n),
            "epoch_images": args.epoch_images,
            "train_epoch_s": per_image * args.epoch_images,
            "ranking_over_epoch": ranking_s / (per_image * args.epoch_images),
        }
    return out


# --------------------------------------------------------------------------- output
def table(headers: list[str], rows: list[list[str]], header: bool = True) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = []
    if header:
        lines += ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
        lines += ["  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


INFERENCE_HEADERS = ["device", "dtype", "mode", "batch", "dense ms", "pruned ms", "dense img/s", "pruned img/s"]
INFERENCE_HEADERS += ["speedup", "MACs red.", "efficiency"]


def _format_inference(rows: list[dict], header: bool = True) -> str:
    cells = []
    for r in rows:
        head = [r["device"], r["dtype"], r["mode"], str(r["batch"])]
        if "skipped" in r:
            cells.append(head + [r["skipped"]] + [""] * 6)
            continue
        cells.append(
            head
            + [f"{r['dense_ms']:.1f}", f"{r['pruned_ms']:.1f}", f"{r['dense_img_s']:.1f}", f"{r['pruned_img_s']:.1f}"]
            + [f"{r['speedup']:.3f}x", f"{r['flops_reduction']:.3f}x", f"{r['efficiency']:.3f}"]
        )
    # fixed widths so rows printed one at a time line up
    widths = [6, 5, 8, 5, 10, 10, 11, 12, 8, 10, 10]
    lines = []
    if header:
        lines.append("  ".join(h.rjust(w) for h, w in zip(INFERENCE_HEADERS, widths, strict=True)))
        lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
    if "cuda" in args.devices:
        env["gpu"] = torch.cuda.get_device_name()
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on the GPU too
    with tempfile.TemporaryDirectory() as tmp:
        dense, pruned, info = build_models(args, Path(tmp))
    input_size = tuple(info["input_size"])
    dense_params, pruned_params = count_params(dense), count_params(pruned)
    dense_flops, pruned_flops = count_flops(dense, input_size), count_flops(pruned, input_size)
    checks = model_checks(pruned)
    results: dict[str, Any] = {
        "environment": environment(args),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": info,
        "params": {"dense": dense_params, "pruned": pruned_params, "removed": 1 - pruned_params / dense_params},
        "flops": {"dense": dense_flops, "pruned": pruned_flops, "reduction": dense_flops / pruned_flops},
        "macs": {"dense": macs(dense_flops), "pruned": macs(pruned_flops), "reduction": dense_flops / pruned_flops},
        "pruned_checks": checks,
    }
    env = results["environment"]
    if env["load_average_1min"] > env["cpu_cores"] and env["omp_wait_policy"] == "default":
        print(
            f"warning: load average {env['load_average_1min']:.1f} on {env['cpu_cores']} cores; spinning OpenMP "
            "threads then add a fixed cost to every op (both models alike), so efficiency reads low: "
            "consider OMP_WAIT_POLICY=PASSIVE",
            file=sys.stderr,
        )
    gpu = f", {env['gpu']}" if "gpu" in env else ""
    print(
        f"torch {env['torch']}, timm {env['timm']}, {env['threads']} CPU threads of {env['cpu_cores']} cores{gpu}, "
        f"load average {env['load_average_1min']:.1f}, OMP_WAIT_POLICY={env['omp_wait_policy']}"
    )
    print(
        f"{info['model']}: params {dense_params / 1e6:.2f}M -> {pruned_params / 1e6:.2f}M "
        f"({results['params']['removed']:.1%} removed), GMACs/img {macs(dense_flops) / 1e9:.3f} -> "
        f"{macs(pruned_flops) / 1e9:.3f} (GFLOPs, a multiply-add = 2: {dense_flops / 1e9:.3f} -> "
        f"{pruned_flops / 1e9:.3f}; {dense_flops / pruned_flops:.3f}x fewer); plan from {info['plan_from']}"
    )
    if "heads_per_block" in info:
        print(f"heads per block {info['heads_per_block']}, MLP hidden per block {info['mlp_hidden_per_block']}")
    fused = f"{checks['fused_attention_blocks']}/{checks['attention_blocks']}"
    print(
        f"pruned model (reloaded with load_pruned): {checks['hooks']} hooks, {checks['non_contiguous_params']} "
        f"non-contiguous params, fused attention in {fused} blocks"
    )
    if not args.skip_inference:
        print(
            f"\nInference (median of {args.repeats}, dense/pruned interleaved; efficiency = speedup / MACs reduction)"
        )
        results["inference"] = bench_inference(args, dense, pruned, input_size, dense_flops / pruned_flops)
    if args.latency_plan:
        lat = bench_latency_plan(args, dense, input_size)
        results["latency_plan"] = lat
        m = lat["measured_s"]
        print(
            f"\nLatency budget at {lat['sparsity']:.0%} vs a FLOPs budget of the same predicted latency "
            f"({lat['device']}, {lat['dtype']}, batch {lat['batch']}; median of {args.repeats}, interleaved)"
        )
        print(
            table(
                ["model", "predicted ms", "measured ms", "speedup", "GMACs", "heads per block", "MLP per block"],
                [
                    [
                        name,
                        f"{1e3 * pred:.1f}",
                        f"{1e3 * m[name]:.1f}",
                        f"{m['dense'] / m[name]:.3f}x",
                        f"{lat['macs'][name] / 1e9:.3f}",
                        str(lat.get(name, {}).get("heads", "")),
                        str(lat.get(name, {}).get("mlp", "")),
                    ]
                    for name, pred in (
                        ("dense", lat["predicted_dense_s"]),
                        ("latency_plan", lat["predicted_latency_plan_s"]),
                        ("flops_plan", lat["predicted_flops_plan_s"]),
                    )
                ],
            )
        )
        print(
            f"prediction error of the latency plan: {lat['prediction_error']:+.1%}; latency plan vs FLOPs plan: "
            f"{lat['latency_plan_over_flops_plan']:.3f}x"
        )
    plain_step_s = None
    if not args.skip_train:
        train = bench_training(args, dense, input_size)
        results["training"] = train
        plain_step_s = train["plain_step_s"]
        print(f"\nTraining step on {train['device']}, fp32, batch {train['batch']} (forward + backward + AdamW step)")
        print(
            table(
                ["plain step s", "ADMM step s", "ADMM / plain", "penalty fwd+bwd s", "penalty / plain"],
                [
                    [
                        f"{train['plain_step_s']:.3f}",
                        f"{train['admm_step_s']:.3f}",
                        f"{train['admm_over_plain']:.3f}x",
                        f"{train['penalty_fwd_bwd_s']:.4f}",
                        f"{train['penalty_over_plain']:.2%}",
                    ]
                ],
            )
        )
    if not args.skip_ranking:
        rank = bench_ranking(args, dense, input_size, plain_step_s)
        results["ranking"] = rank
        print(
            f"\nGraph ranking pass on {rank['device']} (rank_heads('graph'): forward over N calibration images, "
            "attention-map similarities, PageRank) vs plain training steps over the same N images and over one "
            "epoch, both extrapolated from the plain step above"
        )
        headers, row = (
            ["N images", "ranking pass s"],
            [str(rank["calibration_images"]), f"{rank['ranking_pass_s']:.2f}"],
        )
        if "train_same_images_s" in rank:
            headers += ["train on N s", "ranking / train on N", "epoch images", "train epoch s", "ranking / epoch"]
            row += [
                f"{rank['train_same_images_s']:.2f}",
                f"{rank['ranking_over_train_same_images']:.3f}x",
                str(rank["epoch_images"]),
                f"{rank['train_epoch_s']:.0f}",
                f"{rank['ranking_over_epoch']:.2e}",
            ]
        print(table(headers, [row]))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, results)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
