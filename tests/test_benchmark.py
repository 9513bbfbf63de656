"""The benchmark's pieces on a tiny real ViT: what they measure and how the figures relate, never how fast.

Speed claims come from ``scripts/benchmark.py``'s printed ratios, measured side by side; here only the
mechanics: balanced interleaving, the exported pruned twin, the checks, and every comparison's fields.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from gohsp_lightning.benchmark import (
    BenchmarkOptions,
    bench_inference,
    bench_latency_plan,
    bench_ranking,
    bench_training,
    build_models,
    interleaved,
    model_checks,
)
from gohsp_lightning.benchmark.output import format_inference
from gohsp_lightning.pruning import StructuredMasks, count_flops, count_params, find_blocks
from gohsp_lightning.pruning.latency import measure_latency_table, table_key

from .conftest import ROOT

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 4, "num_classes": 10}
INPUT = (3, 32, 32)


def options(**overrides) -> BenchmarkOptions:
    base = dict(
        model="vit_tiny_patch16_224",
        model_kwargs=TINY,
        sparsity=0.4,
        batch_sizes=[1, 4],
        dtypes=["fp32"],
        repeats=2,
        warmup=1,
        min_sample_s=0.0,
        train_batch_size=4,
        calibration_images=8,
        calibration_batch_size=4,
        latency_batch_size=2,
    )
    return BenchmarkOptions(**{**base, **overrides})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(options(), tmp_path_factory.mktemp("bench"))


def test_interleaved_times_every_function_equally_often_in_turns():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    times = interleaved(fns, torch.device("cpu"), repeats=3, warmup=2, min_sample_s=0.0)
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())
    # 2 warm-up turns, 1 probe each, then 3 samples of one call each, always a before b
    assert calls == ["a", "b"] * (2 + 1 + 3)


def test_unbalanced_interleaving_gives_each_function_its_own_repeat_count():
    calls = {"slow": 0, "fast": 0}

    def slow() -> None:
        calls["slow"] += 1
        time.sleep(0.005)

    def fast() -> None:
        calls["fast"] += 1
        time.sleep(0.001)

    interleaved({"slow": slow, "fast": fast}, torch.device("cpu"), repeats=2, warmup=0, min_sample_s=0.02)
    assert calls["slow"] == calls["fast"]  # balanced: both repeat the fastest one's count (about 20)
    calls.update(slow=0, fast=0)
    interleaved(
        {"slow": slow, "fast": fast}, torch.device("cpu"), repeats=2, warmup=0, min_sample_s=0.02, balanced=False
    )
    # each its own: about 4 calls of 5 ms and 20 of 1 ms per 20 ms sample, plus one probe each
    assert calls["slow"] <= 1 + 2 * 4 and 2 * calls["slow"] < calls["fast"]


def test_the_pruned_twin_is_the_reloaded_export_at_the_budget(models):
    dense, pruned, info = models
    assert info["input_size"] == list(INPUT) and info["plan_from"] == "magnitude"
    assert count_params(pruned) <= 0.6 * count_params(dense) + 1
    assert [b.num_heads for b in find_blocks(pruned)] == info["heads_per_block"]
    assert model_checks(pruned) == {
        "hooks": 0,
        "non_contiguous_params": 0,
        "fused_attention_blocks": 3,
        "attention_blocks": 3,
    }
    masks = StructuredMasks(find_blocks(dense))
    masks.attach(find_blocks(dense))
    assert model_checks(dense)["hooks"] == 6  # a masked model would pay a multiply per head and per neuron
    masks.detach()


def test_inference_rows_relate_speedup_and_efficiency(models):
    dense, pruned, _ = models
    ratio = count_flops(dense, INPUT) / count_flops(pruned, INPUT)
    shown = []
    rows = bench_inference(options(), dense, pruned, INPUT, ratio, shown.append)
    assert rows == shown and [(r["device"], r["dtype"], r["mode"], r["batch"]) for r in rows] == [
        ("cpu", "fp32", "eager", 1),
        ("cpu", "fp32", "eager", 4),
    ]
    for r in rows:
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["pruned_ms"])
        assert r["efficiency"] == pytest.approx(r["speedup"] / ratio)
        assert r["pruned_img_s"] == pytest.approx(1e3 * r["batch"] / r["pruned_ms"])
    text = format_inference(rows)
    assert text.splitlines()[0].split()[:4] == ["device", "dtype", "mode", "batch"] and len(text.splitlines()) == 4
    assert "out of memory" in format_inference([{**rows[0], "skipped": "out of memory"}])


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_training_and_ranking_comparisons_report_consistent_ratios(models, precision):
    dense, pruned, _ = models
    train = bench_training(options(train_precision=precision), dense, INPUT, pruned)
    assert train["precision"] == precision
    assert train["admm_over_plain"] == pytest.approx(train["admm_step_s"] / train["plain_step_s"])
    assert train["finetune_over_plain"] == pytest.approx(train["finetune_step_s"] / train["plain_step_s"])
    assert train["prunable_weights"] == sum(
        w.numel() for b in find_blocks(dense) for w in (b.attn.qkv.weight, b.attn.qkv.bias, b.attn.proj.weight)
    ) + sum(w.numel() for b in find_blocks(dense) for w in (b.mlp.fc1.weight, b.mlp.fc1.bias, b.mlp.fc2.weight))
    rank = bench_ranking(options(train_precision=precision), dense, INPUT, train["plain_step_s"])
    assert rank["precision"] == precision  # ranked under the training steps' precision, as the pipeline does
    assert rank["calibration_images"] == 8 and rank["ranking_pass_s"] > 0
    assert rank["train_same_images_s"] == pytest.approx(train["plain_step_s"] / 4 * 8)
    assert "train_epoch_s" not in bench_ranking(options(), dense, INPUT, None)
    with pytest.raises(ValueError, match=r"train_precision='bf16': choose one of fp32, bf16-mixed"):
        bench_training(options(train_precision="bf16"), dense, INPUT)


def test_latency_plan_against_the_flops_plan_of_the_same_predicted_latency(models):
    dense, _, _ = models
    key = table_key("tiny", torch.device("cpu"), "fp32", 2, INPUT)
    table = measure_latency_table(dense, key, torch.device("cpu"), torch.float32, 2, INPUT, samples=4)
    # on a tiny model much of the time is fixed overhead: ask for half of what this machine's table allows
    sparsity = 0.5 * (1 - table.fewest / table.dense)
    result = bench_latency_plan(options(sparsity=sparsity), dense, INPUT, table)
    assert result["predicted_dense_s"] == table.dense
    measured = result["measured_s"]
    assert set(measured) == {"dense", "latency_plan", "flops_plan"}
    assert result["prediction_error"] == pytest.approx(
        result["predicted_latency_plan_s"] / measured["latency_plan"] - 1
    )
    # the speedup's error compares shares of the dense time, each side with its own dense time
    predicted_speedup = result["predicted_dense_s"] / result["predicted_latency_plan_s"]
    assert result["predicted_latency_plan_speedup"] == pytest.approx(predicted_speedup)
    assert result["speedup_prediction_error"] == pytest.approx(
        predicted_speedup / (measured["dense"] / measured["latency_plan"]) - 1
    )
    # the FLOPs plan is the smallest FLOPs cut predicted no slower than the latency plan
    assert result["predicted_flops_plan_s"] <= result["predicted_latency_plan_s"] * (1 + 1e-9)
    assert result["macs"]["latency_plan"] < result["macs"]["dense"]
    assert len(result["latency_plan"]["heads"]) == 3


def test_the_script_keeps_its_command_line_and_writes_its_json(tmp_path):
    """scripts/benchmark.py end to end on vit_tiny at 224 (a few seconds of timing), as gpu_check.sh calls it."""
    out = tmp_path / "bench.json"
    command = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--model", "vit_tiny_patch16_224"]
    command += ["--batch-sizes", "1", "--dtypes", "fp32", "--devices", "cpu", "--repeats", "1", "--warmup", "0"]
    command += ["--min-sample-s", "0", "--train-batch-size", "2", "--calibration-images", "2", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert {"environment", "model", "params", "macs", "pruned_checks", "inference", "training", "ranking"} <= set(
        figures
    )
    assert figures["pruned_checks"]["hooks"] == 0 and figures["params"]["removed"] >= 0.35
    assert "Inference (median of 1" in result.stdout and "efficiency" in result.stdout
    bad = subprocess.run([*command[:2], "--plan-from", "nowhere"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--plan-from='nowhere' is neither magnitude nor graph" in bad.stderr
