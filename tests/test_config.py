"""Every config group option composes and validates; bad values fail with one line naming the key."""

from __future__ import annotations

import pytest

from gohsp_lightning.config import ConfigError
from gohsp_lightning.pruning.ranking import GraphOptions

from .conftest import CONF, compose_run

GROUP_OPTIONS = [
    f"{group.name}={option.stem}"
    for group in sorted(CONF.iterdir())
    if group.is_dir() and group.name not in ("hydra", "experiment")
    for option in sorted(group.glob("*.yaml"))
]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("override", GROUP_OPTIONS)
def test_every_group_option_composes_and_validates(override, tmp_path):
    overrides = [override]
    if override.startswith("data=") and override not in ("data=cifar10_subset",):
        overrides.append("data.root=/some/where")
    cfg = compose_run(overrides, tmp_path)
    assert cfg.output_dir == str(tmp_path)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_run([f"experiment={experiment}", "data.root=/data/x"], tmp_path)
    assert cfg.name == experiment
    assert 0 < cfg.pruning.sparsity < 1


def test_the_default_graph_formulation_is_the_cores(tmp_path):
    """conf/ranking/markov.yaml states the formulation a run uses; the core's GraphOptions() (what rank_heads
    and the benchmark use when given none) must be the same one."""
    assert compose_run([], tmp_path).ranking.graph_options() == GraphOptions()


def test_paper_experiments_carry_the_paper_budgets(tmp_path):
    small = compose_run(["experiment=deit_small_imagenet", "data.root=/x"], tmp_path)
    assert small.model.name == "deit_small_patch16_224" and small.pruning.sparsity == 0.35
    assert small.pruning.admm_epochs == 400 and small.pruning.finetune_epochs == 200
    tiny = compose_run(["experiment=deit_tiny_imagenet", "data.root=/x"], tmp_path)
    assert tiny.model.name == "deit_tiny_patch16_224" and tiny.pruning.sparsity == 0.3
    cifar = compose_run(["experiment=vit_small_cifar10", "data.root=/x"], tmp_path)
    assert cifar.model.name == "vit_small_patch16_224" and cifar.pruning.sparsity == 0.4


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("pruning.sparsity=1.2", r"^pruning.sparsity=1.2 is outside \[0, 1\)"),
        ("pruning.sparsity=-0.1", r"^pruning.sparsity=-0.1 is outside"),
        ("pruning.ranker=pagerankish", r"^pruning.ranker='pagerankish' is not allowed; choose one of graph, magnitude"),
        ("model.name=deit_gigantic", r"^model.name='deit_gigantic' is not a timm model"),
        ("pruning.allocation=local", r"^pruning.allocation='local' is not allowed"),
        ("ranking.damping=1.5", r"^ranking.damping=1.5 must be in \(0, 1\)"),
        ("pruning.sparsity=abc", r"pruning.sparsity"),
        ("model.name=swin_tiny_patch4_window7_224", r"^model.name='swin_tiny_patch4_window7_224' is a timm swin_trans"),
        ("gates.lr=0", r"^gates.lr=0.0 must be > 0"),
        ("gates.kind=concrete", r"^gates.kind='concrete' is not allowed; choose one of sigmoid, hard_concrete"),
        ("pruning.method=gates pruning.admm_epochs=0", r"^pruning.admm_epochs=0 with pruning.method=gates"),
        ("pruning.structures=[heads,channelz]", r"^pruning.structures=\['heads', 'channelz'\] is not allowed; choose"),
        (
            "pruning.structures=everything",
            r"^pruning.structures='everything' is not allowed; choose from heads, neurons",
        ),
        ("pruning.structures=[channels]", r"^pruning.structures=\['channels'\] names only shared structures; add"),
        (
            "pruning.structures=[heads,channels] pruning.budget=latency",
            r"^pruning.budget=latency cannot prune channels: with them pruning.budget must be params or flops",
        ),
        (
            "pruning.structures=[heads,channels] pruning.allocation=uniform",
            r"^pruning.allocation=uniform cannot prune channels",
        ),
        ("pruning.structures=[neurons,channels] pruning.round_to=8", r"^pruning.round_to=8 cannot prune channels"),
        (
            "pruning.structures=[heads,neurons,channels] pruning.method=gates",
            r"^pruning.method=gates cannot gate channels .*; use pruning.method=gohsp or oneshot",
        ),
    ],
)
def test_bad_values_fail_with_one_line(override, pattern, tmp_path):
    with pytest.raises(ConfigError, match=pattern) as err:
        compose_run(override.split(" "), tmp_path)
    assert "\n" not in str(err.value)


def test_unknown_key_fails_at_compose(tmp_path):
    with pytest.raises(ConfigError, match=r"^overrides: Could not override 'pruning.sparsty'"):
        compose_run(["pruning.sparsty=0.3"], tmp_path)


@pytest.mark.parametrize(
    ("override", "label"),
    [
        ("pruning.structures=[heads,neurons]", "both"),
        ("pruning.structures=both", "both"),
        ("pruning.structures=[neurons]", "neurons"),
        ("pruning.structures=heads", "heads"),
        ("pruning.structures=[channels,heads,neurons]", "heads+neurons+channels"),
    ],
)
def test_structures_take_a_list_or_the_old_values(override, label, tmp_path):
    cfg = compose_run([override], tmp_path)
    assert cfg.pruning.structures_label == label
