"""Ranking-quality harness: how well does each head ranking predict what removing a head costs?

    python -m gohsp_lightning.rank_quality --out DIR [run.py overrides, e.g. data.root=... data.val_split=test]

With no overrides it measures the shipped pretrained model (the default experiment's ``model``) on the
embedded CIFAR-10 slice: calibration images from ``data.train_split`` (two disjoint sets, for the
test-retest), ablation images from ``data.val_split``. Every ranker (``graph`` with the configured
formulation, ``magnitude``, ``taylor``, ``random``) and every formulation of the graph grid
(``graph:<similarity>/<chain>/<teleport>/T<temperature>/<combine>``) is scored against single-head
ablation (see :mod:`.pruning.quality`). Writes ``DIR/rank_quality.json``, ``DIR/rank_quality.md`` and
``DIR/rank_quality.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from .cli import USER_ERRORS, compose_run
from .config import RunConfig
from .data import ImageDataModule, resolve_data_config
from .errors import one_line
from .models import create_student
from .pruning import Budget, count_params, find_blocks
from .pruning.activations import HeadStatistics, head_statistics
from .pruning.files import atomic_write, atomic_write_json
from .pruning.projection import unit_scores
from .pruning.quality import (
    Ablation,
    bootstrap_spearman,
    head_ablation,
    mean_spearman,
    partial_spearman,
    pruning_curve,
    retest_spearman,
)
from .pruning.rankers import random_unit_scores, rank_heads
from .pruning.ranking import CHAINS, SIMILARITIES, TELEPORTS, GraphOptions, graph_head_factor
from .pruning.structures import block_weights
from .pruning.units import BlockUnits

BASE_RANKERS = ("graph", "magnitude", "taylor", "random")


def formulation_grid(base: GraphOptions) -> list[GraphOptions]:
    """Every similarity x chain x teleport x temperature (1, 0.25) x combination (pow, exp with beta -1, +1)."""
    combos = [("pow", base.beta), ("exp", -1.0), ("exp", 1.0)]
    return [
        dataclasses.replace(base, similarity=s, chain=c, teleport=t, temperature=temp, combine=comb, beta=beta)
        for s, c, t, temp, (comb, beta) in itertools.product(SIMILARITIES, CHAINS, TELEPORTS, (1.0, 0.25), combos)
    ]


def materialise(subset: Subset, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The images of ``subset`` decoded once, as fixed batches (the ablation runs over them many times)."""
    return list(DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0))


@dataclasses.dataclass
class Scoring:
    """One ranker's head priorities on the two calibration sets (``first`` is the one reported)."""

    first: list[torch.Tensor]
    second: list[torch.Tensor]
    stationary: list[torch.Tensor] | None = None


def _priority(blocks: list[BlockUnits], factor: list[torch.Tensor] | None, alpha: float) -> list[torch.Tensor]:
    """The head scores the projection ranks by: ``||group|| * factor^alpha`` (``projection.unit_scores``)."""
    return unit_scores(blocks, [block_weights(b) for b in blocks], factor, alpha)["heads"]


def score_all(
    cfg: RunConfig,
    model: torch.nn.Module,
    blocks: list[BlockUnits],
    calibration: tuple[list, list],
    stats: tuple[HeadStatistics, HeadStatistics],
    grid: bool,
) -> dict[str, Scoring]:
    """Head priorities of every ranker and formulation, on both calibration sets (``stats`` of each)."""
    alpha, options = cfg.pruning.alpha, cfg.ranking.graph_options()
    heads = [b.num_heads for b in blocks]
    norms = _priority(blocks, None, alpha)
    randoms = random_unit_scores(blocks, Budget(0.0, count_params(model)), cfg.seed)["heads"]
    taylor = [
        _priority(blocks, rank_heads("taylor", model, blocks, lambda c=c: iter(c), options), alpha) for c in calibration
    ]

    def graph(o: GraphOptions) -> Scoring:
        factors = [graph_head_factor(s.similarity(o.similarity), heads, o, s.energy) for s in stats]
        return Scoring(_priority(blocks, factors[0][0], alpha), _priority(blocks, factors[1][0], alpha), factors[0][1])

    scorings = {
        "graph": graph(options),
        "magnitude": Scoring(norms, norms),
        "taylor": Scoring(*taylor),
        "random": Scoring(randoms, randoms),
    }
    if grid:
        for o in formulation_grid(options):
            scorings[f"graph:{o.label}"] = graph(o)
    return scorings


def measure(
    scorings: dict[str, Scoring],
    ablation: Ablation,
    norms: list[torch.Tensor],
    resamples: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Spearman (with a bootstrap interval over the ablation images), partial Spearman given the weight norm,
    and test-retest of every scoring."""
    damage = ablation.delta_ce()
    out = {}
    for name, s in scorings.items():
        entry: dict[str, Any] = {
            "head_scores": [t.tolist() for t in s.first],
            "spearman": mean_spearman(s.first, damage),
            "spearman_ci": list(bootstrap_spearman(s.first, ablation, resamples, seed)),
            "spearman_top1": mean_spearman(s.first, ablation.delta_top1()),
            "partial_spearman": partial_spearman(s.first, damage, norms),
            "retest": retest_spearman(s.first, s.second),
        }
        if s.stationary is not None:
            entry["stationary"] = [t.tolist() for t in s.stationary]
        out[name] = entry
    return out


def table(result: dict[str, Any]) -> str:
    """The markdown report: one row per ranker, best Spearman first, base rankers marked."""
    ks = list(range(1, len(next(iter(result["curves"].values()), [])) + 1))
    lines = [
        f"# Ranking quality: {result['checkpoint']}",
        "",
        f"Ablation on {result['images']} images of `{result['split']}` (top-1 {result['base_top1']:.4f}, "
        f"CE {result['base_ce']:.4f}); calibration {result['calibration_images']} images x 2 disjoint sets of "
        f"`{result['calibration_split']}`; {result['resamples']} bootstrap resamples; {result['seconds']:.0f} s.",
        "",
        "Spearman: mean over blocks of the within-block rank correlation of the head score with the CE increase "
        "when the head alone is off; partial: given the head's weight norm; retest: between the two calibration sets.",
        "",
        "| ranker | Spearman | 95% CI | vs top-1 drop | partial | retest |" + "".join(f" top-1 k={k} |" for k in ks),
        "| --- | --- | --- | --- | --- | --- |" + " --- |" * len(ks),
    ]

    def fmt(v: float | None) -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.3f}"

    order = sorted(result["rankers"], key=lambda n: -result["rankers"][n]["spearman"])
    for name in order:
        r = result["rankers"][name]
        curve = result["curves"].get(name)
        cells = [f" {c:.4f} |" for c in curve] if curve else [" |"] * len(ks)
        label = f"**{name}**" if name in BASE_RANKERS else name
        lines.append(
            f"| {label} | {fmt(r['spearman'])} | [{r['spearman_ci'][0]:+.3f}, {r['spearman_ci'][1]:+.3f}] "
            f"| {fmt(r['spearman_top1'])} | {fmt(r['partial_spearman'])} | {fmt(r['retest'])} |" + "".join(cells)
        )
    entropy = ", ".join(f"{e:.2f}" for e in result["attention_entropy"])
    lines += ["", f"Mean attention entropy per block: {entropy} (uniform: ln(tokens) = {result['ln_tokens']:.2f})."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Spearman with its interval per ranker (best 12 and the base rankers), and the no-fine-tune curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rankers = result["rankers"]
    order = sorted(rankers, key=lambda n: -rankers[n]["spearman"])
    shown = [n for n in order if n in BASE_RANKERS or order.index(n) < 12]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.35 * len(shown) + 2.5))
    ys = range(len(shown))
    values = [rankers[n]["spearman"] for n in shown]
    # a percentile interval of a rank statistic need not contain the point estimate: bars stop at the point
    errors = [
        [max(v - rankers[n]["spearman_ci"][0], 0.0) for n, v in zip(shown, values, strict=True)],
        [max(rankers[n]["spearman_ci"][1] - v, 0.0) for n, v in zip(shown, values, strict=True)],
    ]
    colors = ["tab:red" if n in BASE_RANKERS else "tab:blue" for n in shown]
    left.barh(list(ys), values, xerr=errors, color=colors, alpha=0.8)
    left.set_yticks(list(ys), shown, fontsize=7)
    left.invert_yaxis()
    left.axvline(0, color="k", lw=0.5)
    left.set_xlabel("within-block Spearman with ablation damage (95% CI)")
    for name, curve in result["curves"].items():
        right.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    right.axhline(result["base_top1"], color="k", ls="--", lw=0.8, label="all heads")
    right.set_xlabel("heads removed per block (lowest-scored first), no fine-tuning")
    right.set_ylabel(f"top-1 on {result['images']} {result['split']} images")
    right.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def describe_weights(cfg: RunConfig) -> str:
    m = cfg.model
    if m.shipped is not None:
        from .pretrained import pretrained_card

        return f"shipped:{m.shipped} (sha256 {pretrained_card(m.shipped)['sha256'][:12]})"
    if m.checkpoint is not None:
        return str(m.checkpoint)
    return f"{m.name} hub weights" if m.pretrained else f"{m.name} random init (seed {cfg.seed})"


def run_harness(
    cfg: RunConfig,
    out: Path,
    images: int = 2000,
    calibration_images: int = 512,
    resamples: int = 1000,
    grid: bool = True,
    curves: int = 3,
) -> dict[str, Any]:
    """Measure every ranking of ``cfg``'s model and write the JSON, markdown and plot to ``out``."""
    start = time.time()
    torch.manual_seed(cfg.seed)
    model = create_student(cfg.model).eval()
    dm = ImageDataModule(cfg.data, resolve_data_config(cfg.data, model), cfg.model.num_classes)
    dm.setup()
    batch = cfg.data.eval_batch_size
    first = dm.fixed_subset(cfg.data.train_split, calibration_images)
    second = dm.fixed_subset(cfg.data.train_split, calibration_images, exclude=first.indices)
    calibration = (materialise(first, cfg.ranking.batch_size), materialise(second, cfg.ranking.batch_size))
    evaluation = materialise(dm.fixed_subset(cfg.data.val_split, images), batch)
    blocks = find_blocks(model)
    ablation = head_ablation(model, blocks, evaluation)
    stats = tuple(head_statistics(model, blocks, (x for x, _ in c)) for c in calibration)
    scorings = score_all(cfg, model, blocks, calibration, stats, grid)
    norms = scorings["magnitude"].first
    rankers = measure(scorings, ablation, norms, resamples, cfg.seed)
    best = [n for n in sorted(rankers, key=lambda n: -rankers[n]["spearman"]) if n not in BASE_RANKERS][:curves]
    curve_of = {n: pruning_curve(model, blocks, scorings[n].first, evaluation) for n in (*BASE_RANKERS, *best)}
    result = {
        "checkpoint": describe_weights(cfg),
        "model": cfg.model.name,
        "images": ablation.images,
        "split": cfg.data.val_split,
        "data_root": cfg.data.root,
        "calibration_images": len(first),
        "calibration_split": cfg.data.train_split,
        "resamples": resamples,
        "alpha": cfg.pruning.alpha,
        "graph_options": dataclasses.asdict(cfg.ranking.graph_options()),
        "base_top1": float(ablation.base_correct.mean()),
        "base_ce": float(ablation.base_ce.mean()),
        "ablation": {
            "delta_ce": [t.tolist() for t in ablation.delta_ce()],
            "delta_top1": [t.tolist() for t in ablation.delta_top1()],
        },
        "weight_norms": [t.tolist() for t in norms],
        "attention_entropy": [float(e.mean()) for e in stats[0].entropy],
        "ln_tokens": math.log(stats[0].tokens),
        "rankers": rankers,
        "curves": curve_of,
        "seconds": time.time() - start,
    }
    atomic_write_json(out / "rank_quality.json", result)
    atomic_write(out / "rank_quality.md", lambda tmp: tmp.write_text(table(result)))
    plot(result, out / "rank_quality.png")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gohsp_lightning.rank_quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for rank_quality.json/.md/.png")
    parser.add_argument("--images", type=int, default=2000, help="ablation images from data.val_split (>= 2000)")
    parser.add_argument("--calibration-images", type=int, default=512, help="images per calibration set")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the ablation images")
    parser.add_argument("--no-grid", action="store_true", help="only the four base rankers, no formulation grid")
    parser.add_argument("--curves", type=int, default=3, help="pruning curves for the best N formulations too")
    parser.add_argument("overrides", nargs="*", help="run.py overrides (model=..., data.root=..., ranking.*=...)")
    args = parser.parse_args(argv)
    try:
        cfg = compose_run(args.overrides, args.out)
        result = run_harness(
            cfg, args.out, args.images, args.calibration_images, args.resamples, not args.no_grid, args.curves
        )
    except USER_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
