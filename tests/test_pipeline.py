"""End to end on the embedded CIFAR-10 images: rank -> ADMM -> prune -> KD fine-tune -> export."""

from __future__ import annotations

import json

import pytest
import timm.data
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from gohsp_lightning import load_pruned
from gohsp_lightning.pipeline import run
from gohsp_lightning.pretrained import pretrained_card
from gohsp_lightning.pruning import count_params
from gohsp_lightning.pruning.latency import LatencyTable

from .conftest import FAST, SUBSET, compose_run


def exported_accuracy(export_dir) -> float:
    """Top-1 of the exported model on the val split, with the eval transform its config.json describes."""
    model = load_pruned(export_dir)
    data_config = json.loads((export_dir / "config.json").read_text())["data_config"]
    transform = timm.data.create_transform(
        **{k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct")}
    )
    loader = DataLoader(ImageFolder(str(SUBSET / "val"), transform=transform), batch_size=250)
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(-1) == y).sum())
            total += len(y)
    return correct / total


def test_pipeline_prunes_to_budget_and_beats_chance(tmp_path):
    cfg = compose_run(
        [*FAST, "pruning.dense_epochs=4", "pruning.admm_epochs=2", "pruning.finetune_epochs=2", "pruning.sparsity=0.4"],
        tmp_path,
    )
    summary = run(cfg)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert set(summary) >= {
        "experiment",
        "model",
        "dense",
        "pruned",
        "param_reduction",
        "flops_reduction",
        "export_dir",
    }
    assert summary["param_reduction"] >= 0.4
    assert summary["pruned"]["flops"] < summary["dense"]["flops"]
    assert summary["pruned"]["macs"] == summary["pruned"]["flops"] // 2 and summary["dense"]["macs"] > 0
    assert len(summary["pruned"]["heads_per_block"]) == 3
    # from random init there is no pretrained figure; the cut is measured before fine-tuning
    assert summary["pretrained"] is None
    assert 0.0 <= summary["pruned_before_finetune"]["val_top1"] <= 1.0
    assert summary["pruned_before_finetune"]["params"] == summary["pruned"]["params"]
    # real learning on real images: well above the 10% of chance
    assert summary["dense"]["val_top1"] > 0.2
    assert summary["pruned"]["val_top1"] > 0.2
    # the export reloads without pickle, has the summary's size, and scores what the run reported
    export_dir = tmp_path / "pruned"
    model = load_pruned(export_dir)
    assert count_params(model) == summary["pruned"]["params"]
    assert exported_accuracy(export_dir) == pytest.approx(summary["pruned"]["val_top1"], abs=1e-6)
    assert (tmp_path / "csv" / "metrics.csv").is_file()


def test_residual_channels_prune_end_to_end_and_the_export_reloads(tmp_path):
    """``pruning.structures=[heads,neurons,channels]`` under a FLOPs budget: ADMM, the cut, KD fine-tune and
    the export; the exported model is narrower, meets the budget as measured, and scores what the run said."""
    cfg = compose_run(
        [
            *FAST,
            "pruning.structures=[heads,neurons,channels]",
            "pruning.budget=flops",
            "pruning.dense_epochs=1",
            "pruning.admm_epochs=1",
            "pruning.finetune_epochs=1",
            "trainer.limit_train_batches=4",
        ],
        tmp_path,
    )
    summary = run(cfg)
    assert summary["structures"] == "heads+neurons+channels"
    assert summary["flops_reduction"] >= 0.4 - 1e-9
    assert summary["pruned"]["embed_dim"] < 64  # channels went, beside heads and neurons
    export_dir = tmp_path / "pruned"
    config = json.loads((export_dir / "config.json").read_text())
    assert config["format_version"] == 2 and len(config["plan"]["channels"][0]) == summary["pruned"]["embed_dim"]
    model = load_pruned(export_dir)
    assert model.embed_dim == summary["pruned"]["embed_dim"]
    assert count_params(model) == summary["pruned"]["params"]
    assert exported_accuracy(export_dir) == pytest.approx(summary["pruned"]["val_top1"], abs=1e-6)


@pytest.mark.parametrize("method", ["oneshot", "dense"])
def test_baseline_methods_run(tmp_path, method):
    cfg = compose_run(
        [
            *FAST,
            f"pruning={method}",
            "pruning.dense_epochs=1",
            "pruning.admm_epochs=0",
            "pruning.finetune_epochs=1",
            "trainer.limit_train_batches=5",
        ],
        tmp_path,
    )
    summary = run(cfg)
    if method == "dense":
        assert summary["param_reduction"] == 0
    else:
        assert summary["param_reduction"] >= 0.4


def test_infeasible_budget_fails_before_training(tmp_path):
    cfg = compose_run([*FAST, "pruning.sparsity=0.99"], tmp_path)
    with pytest.raises(ValueError, match=r"pruning.sparsity=0.99 asks to remove"):
        run(cfg)
    assert not (tmp_path / "summary.json").exists()


def test_budget_that_rounding_makes_infeasible_fails_before_training(tmp_path):
    # 3 blocks of 256 neurons rounded to 128 can keep no fewer than 128 each: 0.6 of the params is too much
    cfg = compose_run([*FAST, "pruning.sparsity=0.6", "pruning.round_to=128", "pruning.structures=neurons"], tmp_path)
    with pytest.raises(ValueError, match=r"pruning.round_to=128"):
        run(cfg)
    assert not (tmp_path / "summary.json").exists()
    assert not (tmp_path / "stages" / "dense.json").exists(), "the dense stage must not have trained"


def test_rankers_differ_only_in_their_scores(tmp_path):
    """Fair baselines: with alpha = 0 the graph scores have no say, so graph must train exactly like magnitude.

    The graph ranker reads calibration batches and magnitude reads none; any difference in the runs would be
    a different random stream (batch order, augmentation), not the ranking.
    """
    short = [*FAST, "pruning.dense_epochs=1", "pruning.admm_epochs=2", "pruning.finetune_epochs=1"]
    short += ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2"]
    runs = {}
    for ranker in ("graph", "magnitude"):
        out = tmp_path / ranker
        runs[ranker] = run(compose_run([*short, f"pruning.ranker={ranker}", "pruning.alpha=0"], out))
        runs[ranker]["weights"] = load_file(out / "pruned" / "model.safetensors")
    graph, magnitude = runs["graph"], runs["magnitude"]
    assert graph["pruned"] == magnitude["pruned"]
    assert graph["weights"].keys() == magnitude["weights"].keys()
    assert all(torch.equal(graph["weights"][k], magnitude["weights"][k]) for k in graph["weights"])


def test_default_experiment_prunes_the_shipped_model_without_warm_up(tmp_path):
    """The default run starts from the shipped weights: pretrained, before and after fine-tune top-1 in the summary."""
    short = ["logger=csv", "callbacks=none", "trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false"]
    limits = [
        "data.num_workers=0",
        "trainer.limit_train_batches=4",
        "pruning.admm_epochs=1",
        "pruning.finetune_epochs=1",
    ]
    summary = run(compose_run([*short, *limits, "ranking.calibration_images=64"], tmp_path))
    card = pretrained_card("vit6x6_cifar10")
    # no dense epochs: the dense model is the shipped one, scored on the embedded val images (the card's val set)
    assert summary["pretrained"]["val_top1"] == summary["dense"]["val_top1"]
    assert summary["pretrained"]["val_top1"] == pytest.approx(card["metrics"]["val_top1"], abs=1e-3)
    assert summary["pretrained"]["params"] == card["params"]
    assert summary["param_reduction"] >= 0.4
    assert summary["pruned_before_finetune"]["val_top1"] < summary["pretrained"]["val_top1"]
    assert summary["total_epochs"] == 2


def test_a_missing_data_root_is_reported_before_any_model_is_fetched(tmp_path):
    # pretrained=true would go to the hub (no network here): the data root must be named first
    overrides = ["model.name=deit_small_patch16_224", "model.kwargs={}", "model.pretrained=true"]
    cfg = compose_run([*FAST, *overrides, f"data.root={tmp_path / 'nowhere'}"], tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^data.root='.*nowhere' does not exist \(ImageFolder layout"):
        run(cfg)


@pytest.mark.parametrize("kind", ["sigmoid", "hard_concrete"])
def test_learnable_gates_method_trains_gates_cuts_at_the_budget_and_exports(kind, tmp_path):
    cfg = compose_run(
        [
            *FAST,
            "pruning.method=gates",
            f"gates.kind={kind}",
            "pruning.dense_epochs=1",
            "pruning.admm_epochs=2",
            "pruning.finetune_epochs=1",
            "gates.seed_spread=1.0",
        ],
        tmp_path,
    )
    summary = run(cfg)
    dense = summary["dense"]["params"]
    blocks_cost = 2 * 64 + 1  # one MLP neuron of the 64-wide tiny model: the finest step of the budget
    assert 0.4 * dense <= dense - summary["pruned"]["params"] < 0.4 * dense + blocks_cost
    assert json.loads((tmp_path / "stages" / "gates.json").read_text())["plan"]["heads"]
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    column = header.index("gates/expected_sparsity_epoch")
    expected = [float(r.split(",")[column]) for r in rows[1:] if r.split(",")[column]]
    assert expected[-1] > expected[0]  # the gates moved toward the budget
    model = load_pruned(tmp_path / "pruned")
    assert count_params(model) == summary["pruned"]["params"]
    assert not any(m._forward_pre_hooks for m in model.modules())  # no gate left in the export
    assert summary["pruned"]["val_top1"] > 0.2


def test_latency_budget_measures_a_table_caches_it_and_reports_latency(tmp_path):
    cache = tmp_path / "cache"
    overrides = [
        *FAST,
        "pruning.budget=latency",
        "pruning.latency_batch_size=4",
        f"pruning.latency_cache_dir={cache}",
        "pruning.dense_epochs=0",
        "pruning.admm_epochs=1",
        "pruning.finetune_epochs=1",
        "trainer.limit_train_batches=2",
    ]
    # the tiny model's time is mostly fixed overhead (patch embedding, small matmuls) whose share depends on the
    # machine, so the first run asks for little and the later ones for half of what the measured table allows
    summary = run(compose_run([*overrides, "pruning.sparsity=0.03"], tmp_path / "run"))
    (table_file,) = cache.glob("*.json")
    table = LatencyTable.load(table_file)
    assert table.key["batch_size"] == 4 and table.key["dtype"] == "fp32"
    latency = summary["latency"]
    assert set(latency) >= {"device", "dense_s", "pruned_s", "speedup", "predicted_pruned_s", "prediction_error"}
    assert latency["predicted_speedup"] == pytest.approx(latency["predicted_dense_s"] / latency["predicted_pruned_s"])
    assert latency["speedup_prediction_error"] == pytest.approx(latency["predicted_speedup"] / latency["speedup"] - 1)
    # the plan removes 3% of the table's predicted latency (one unit at most above it)
    assert latency["predicted_pruned_s"] / latency["predicted_dense_s"] == pytest.approx(0.97, abs=0.02)

    sparsity = round(min(0.15, 0.5 * (1 - table.fewest / table.dense)), 3)
    # a later run reuses the cached table (nothing re-measured), and a given table is used as it is
    for name, extra in [("cached", []), ("given", [f"pruning.latency_table={table_file}"])]:
        again = run(compose_run([*overrides, *extra, f"pruning.sparsity={sparsity}"], tmp_path / name))
        assert len(list(cache.glob("*.json"))) == 1
        assert again["latency"]["predicted_dense_s"] == pytest.approx(latency["predicted_dense_s"])
        ratio = again["latency"]["predicted_pruned_s"] / again["latency"]["predicted_dense_s"]
        assert ratio == pytest.approx(1 - sparsity, abs=0.02)
