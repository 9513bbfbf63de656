"""The ranking-quality statistics on a real tiny ViT and real CIFAR-10 images."""

from __future__ import annotations

import pytest
import torch
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from gohsp_lightning.pruning import PrunePlan, apply_plan, find_blocks
from gohsp_lightning.pruning.quality import (
    Ablation,
    bootstrap_spearman,
    head_ablation,
    mean_spearman,
    partial_spearman,
    per_image_outcomes,
    pruning_curve,
    retest_spearman,
)

from ..conftest import SUBSET, tiny_vit


@pytest.fixture(scope="module")
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """160 real val images of all ten classes, in two batches."""
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)])
    data = ImageFolder(str(SUBSET / "val"), transform=transform)
    picks = [data[i] for i in range(0, len(data), len(data) // 160)][:160]
    x, y = torch.stack([p[0] for p in picks]), torch.tensor([p[1] for p in picks])
    return [(x[:80], y[:80]), (x[80:], y[80:])]


def silence_head(model, block: int, head: int) -> None:
    """Zero every weight of one head (its q, k, v rows and biases and its proj columns)."""
    b = find_blocks(model)[block]
    rows = torch.arange(3 * b.num_heads * b.head_dim).reshape(3, b.num_heads, -1)[:, head].flatten()
    with torch.no_grad():
        b.attn.qkv.weight[rows] = 0
        b.attn.qkv.bias[rows] = 0
        b.attn.proj.weight[:, head * b.head_dim : (head + 1) * b.head_dim] = 0


def test_ablating_a_zeroed_head_does_no_damage(batches):
    model = tiny_vit(seed=1)
    silence_head(model, block=1, head=2)
    ablation = head_ablation(model, find_blocks(model), batches)
    assert ablation.images == 160
    assert [tuple(c.shape) for c in ablation.ce] == [(4, 160)] * 3
    assert float(ablation.delta_ce()[1][2]) == 0.0
    assert float(ablation.delta_top1()[1][2]) == 0.0
    # the other heads do something: switching them off changes the loss
    assert float(ablation.delta_ce()[1].abs().sum()) > 0
    # and the intact model's outcomes are those of a plain forward
    base_ce, base_correct = per_image_outcomes(model, batches)
    assert torch.equal(ablation.base_ce, base_ce) and torch.equal(ablation.base_correct, base_correct)


def test_a_ranker_that_returns_the_damage_gets_spearman_one(batches):
    model = tiny_vit(seed=2)
    ablation = head_ablation(model, find_blocks(model), batches)
    damage = ablation.delta_ce()
    assert mean_spearman(damage, damage) == pytest.approx(1.0)
    assert mean_spearman([-d for d in damage], damage) == pytest.approx(-1.0)
    lo, hi = bootstrap_spearman(damage, ablation, resamples=200)
    assert -1.0 <= lo <= hi <= 1.0
    assert hi == pytest.approx(1.0)
    # a tie carries no information: constant scores correlate 0, not NaN
    assert mean_spearman([torch.ones_like(d) for d in damage], damage) == 0.0


def test_bootstrap_interval_covers_the_point_estimate_and_narrows_with_agreement():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(400, generator=gen, dtype=torch.float64)
    effect = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    noisy = [base + effect[:, None] + 0.5 * torch.randn(4, 400, generator=gen, dtype=torch.float64)]
    ablation = Ablation(base, torch.ones(400, dtype=torch.float64), noisy, [torch.ones(4, 400, dtype=torch.float64)])
    scores = [effect]
    point = mean_spearman(scores, ablation.delta_ce())
    lo, hi = bootstrap_spearman(scores, ablation, resamples=500)
    assert lo <= point <= hi
    assert hi - lo > 0


def test_partial_spearman_given_the_norm():
    norms = [torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])]
    damage = [torch.tensor([1.0, 3.0, 2.0, 5.0, 4.0])]
    # a score that is a monotone function of the norm adds nothing: undefined, so None
    assert partial_spearman([norms[0] * 2], damage, norms) is None
    # by hand: the values are ranks already, so Spearman is Pearson of the values
    score = [torch.tensor([5.0, 3.0, 4.0, 1.0, 2.0])]
    r_sw = float(torch.corrcoef(torch.stack([score[0], norms[0]]))[0, 1])
    r_sd = float(torch.corrcoef(torch.stack([score[0], damage[0]]))[0, 1])
    r_dw = float(torch.corrcoef(torch.stack([damage[0], norms[0]]))[0, 1])
    expected = (r_sd - r_sw * r_dw) / ((1 - r_sw**2) * (1 - r_dw**2)) ** 0.5
    assert partial_spearman(score, damage, norms) == pytest.approx(expected)


def test_retest_of_identical_and_reversed_orders():
    a = [torch.tensor([0.1, 0.5, 0.3]), torch.tensor([2.0, 2.0])]
    assert retest_spearman(a, [t * 3 for t in a]) == 1.0
    assert retest_spearman(a, [-a[0], a[1]]) == pytest.approx(0.0)  # (-1 + 1) / 2


def test_pruning_curve_switches_off_what_the_hard_prune_cuts(batches):
    model = tiny_vit(seed=3)
    blocks = find_blocks(model)
    scores = [torch.tensor([0.4, 0.1, 0.3, 0.2]), torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([4.0, 3, 2, 1])]
    curve = pruning_curve(model, blocks, scores, batches)
    assert len(curve) == 3
    # k = 2: drop the two lowest-scored heads of every block, physically, and compare
    plan = PrunePlan(heads=((0, 2), (2, 3), (0, 1)), neurons=tuple(tuple(range(b.hidden)) for b in blocks))
    apply_plan(model, plan)
    assert per_image_outcomes(model, batches)[1].mean().item() == pytest.approx(curve[1])
