"""Dense vs GOHSP-pruned ViT, measured side by side in one run and printed as ratios.

What it measures (random weights: speed does not depend on the values):

* inference: latency and throughput of the dense and the pruned model at several batch sizes, on CPU
  and on the GPU when present, in fp32 and bf16. Calls alternate dense, pruned, dense, pruned, ...
  so both models see the same machine load; medians are reported. ``efficiency = speedup / FLOPs
  reduction`` says how much of the FLOPs cut turns into wall-clock speed (1.0 = all of it).
* training step of each stage: forward + backward + AdamW step of the dense model (plain), with the ADMM
  penalty ``AdmmState.penalty`` added (the ADMM stage's W-step), and of the pruned student with the frozen
  dense teacher's forward and the KD loss (the fine-tune stage), timed in turns, in fp32 or under bf16
  autocast (``--train-precision bf16-mixed``); plus the penalty's forward + backward alone.
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
import sys
import tempfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from gohsp_lightning.benchmark import (
    BenchmarkOptions,
    bench_inference,
    bench_latency_plan,
    bench_ranking,
    bench_training,
    build_models,
    model_checks,
)
from gohsp_lightning.benchmark.measure import IMAGENET_TRAIN_IMAGES, MODES, TRAIN_PRECISIONS
from gohsp_lightning.benchmark.models import PLAN_SOURCES
from gohsp_lightning.benchmark.output import environment, format_inference, table
from gohsp_lightning.pruning import count_flops, count_params
from gohsp_lightning.pruning.files import atomic_write_json
from gohsp_lightning.pruning.flops import macs
from gohsp_lightning.pruning.latency import DTYPES


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
    parser.add_argument("--train-batch-size", type=int, default=32, help="batch of the training-step comparison")
    parser.add_argument(
        "--train-precision",
        choices=TRAIN_PRECISIONS,
        default="fp32",
        help="training steps in fp32 or under bf16 autocast (as trainer.precision=bf16-mixed)",
    )
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


def options(args: argparse.Namespace) -> BenchmarkOptions:
    """The measurement settings among the parsed flags (the rest choose what to run and where to write)."""
    return BenchmarkOptions(
        **{f.name: getattr(args, f.name) for f in fields(BenchmarkOptions) if hasattr(args, f.name)}
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on the GPU too
    opts = options(args)
    with tempfile.TemporaryDirectory() as tmp:
        dense, pruned, info = build_models(opts, Path(tmp))
    input_size = tuple(info["input_size"])
    dense_params, pruned_params = count_params(dense), count_params(pruned)
    dense_flops, pruned_flops = count_flops(dense, input_size), count_flops(pruned, input_size)
    checks = model_checks(pruned)
    results: dict[str, Any] = {
        "environment": environment(args.devices),
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
        printed: list[dict[str, Any]] = []

        def show(row: dict[str, Any]) -> None:
            print(format_inference([row], header=not printed), flush=True)
            printed.append(row)

        results["inference"] = bench_inference(opts, dense, pruned, input_size, dense_flops / pruned_flops, show)
    if args.latency_plan:
        lat = bench_latency_plan(opts, dense, input_size)
        results["latency_plan"] = lat
        m = lat["measured_s"]
        print(
            f"\nLatency budget at {lat['sparsity']:.0%} vs a FLOPs budget of the same predicted latency "
            f"({lat['device']}, {lat['dtype']}, batch {lat['batch']}; median of {args.repeats}, interleaved; "
            f"table: fixed {1e3 * lat['table_fixed_s']:.1f} ms, parts x{lat['table_scale']:.3f} in the model)"
        )
        print(
            table(
                ["model", "predicted ms", "measured ms", "predicted speedup", "speedup", "GMACs", "heads", "MLP"],
                [
                    [
                        name,
                        f"{1e3 * pred:.1f}",
                        f"{1e3 * m[name]:.1f}",
                        f"{lat['predicted_dense_s'] / pred:.3f}x",
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
            f"prediction error of the latency plan: {lat['prediction_error']:+.1%} in ms (dense "
            f"{lat['dense_prediction_error']:+.1%}: the machine's drift since the table), "
            f"{lat['speedup_prediction_error']:+.1%} in speedup; latency plan vs FLOPs plan: "
            f"{lat['latency_plan_over_flops_plan']:.3f}x"
        )
    plain_step_s = None
    if not args.skip_train:
        train = bench_training(opts, dense, input_size, pruned)
        results["training"] = train
        plain_step_s = train["plain_step_s"]
        print(
            f"\nTraining step per stage on {train['device']}, {train['precision']}, batch {train['batch']} "
            "(forward + backward + AdamW step; fine-tune: the pruned student + the dense teacher's forward + KD)"
        )
        print(
            table(
                [
                    "dense step s",
                    "ADMM step s",
                    "ADMM / dense",
                    "fine-tune step s",
                    "fine-tune / dense",
                    "penalty / dense",
                ],
                [
                    [
                        f"{train['plain_step_s']:.3f}",
                        f"{train['admm_step_s']:.3f}",
                        f"{train['admm_over_plain']:.3f}x",
                        f"{train['finetune_step_s']:.3f}",
                        f"{train['finetune_over_plain']:.3f}x",
                        f"{train['penalty_over_plain']:.2%}",
                    ]
                ],
            )
        )
    if not args.skip_ranking:
        rank = bench_ranking(opts, dense, input_size, plain_step_s)
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
