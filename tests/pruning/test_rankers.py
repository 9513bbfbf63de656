"""Every ranker yields a valid plan at the budget; random is a true, seed-fixed random baseline."""

from __future__ import annotations

import pytest
import torch
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from gohsp_lightning.pruning import Budget, StructuredProjector, count_params, find_blocks, project, prunable_weights
from gohsp_lightning.pruning.activations import taylor_head_importance
from gohsp_lightning.pruning.projection import removed_cost
from gohsp_lightning.pruning.rankers import RANKERS, fixed_unit_scores, random_unit_scores, rank_heads
from gohsp_lightning.pruning.structures import block_weights

from ..conftest import SUBSET, tiny_vit


@pytest.fixture(scope="module")
def calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches of real CIFAR-10 val images (all ten classes) with their labels."""
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)])
    dataset = ImageFolder(str(SUBSET / "val"), transform=transform)
    samples = [dataset[i * 122] for i in range(16)]
    x = torch.stack([s[0] for s in samples])
    y = torch.tensor([s[1] for s in samples])
    return [(x[:8], y[:8]), (x[8:], y[8:])]


def plan_for(model, ranker, calibration, sparsity=0.4, seed=0, **kwargs):
    blocks = find_blocks(model)
    budget = Budget(sparsity, count_params(model))
    scores = rank_heads(ranker, model, blocks, lambda: iter(calibration))
    fixed = fixed_unit_scores(ranker, blocks, budget, seed)
    weights = [block_weights(b) for b in blocks]
    return project(blocks, weights, budget, scores, fixed_scores=fixed, **kwargs), blocks, budget


@pytest.mark.parametrize("allocation", ["global", "uniform"])
@pytest.mark.parametrize("ranker", RANKERS)
def test_every_ranker_gives_a_valid_plan_at_the_budget(ranker, allocation, calibration):
    model = tiny_vit()
    plan, blocks, budget = plan_for(model, ranker, calibration, allocation=allocation)
    plan.check(blocks)
    removed = removed_cost(blocks, plan, budget)
    assert removed >= budget.target
    if allocation == "global":
        assert removed < budget.target + min(budget.cost("neurons", b) for b in blocks)
    assert all(h >= 1 for h in plan.heads_per_block) and all(n >= 1 for n in plan.mlp_hidden_per_block)


@pytest.mark.parametrize("ranker", RANKERS)
def test_uniform_allocation_keeps_equal_ratios(ranker, calibration):
    plan, blocks, _ = plan_for(tiny_vit(), ranker, calibration, allocation="uniform")
    heads = {kept / b.num_heads for kept, b in zip(plan.heads_per_block, blocks, strict=True)}
    neurons = {kept / b.hidden for kept, b in zip(plan.mlp_hidden_per_block, blocks, strict=True)}
    assert len(heads) == 1 and len(neurons) == 1
    assert neurons.pop() < 1


def test_random_ranker_is_fixed_by_the_seed_not_by_the_weights(calibration):
    # two differently initialised models (different weights, same shapes): the seed alone decides
    first, _, _ = plan_for(tiny_vit(seed=0), "random", calibration, seed=7)
    again, _, _ = plan_for(tiny_vit(seed=1), "random", calibration, seed=7)
    other, _, _ = plan_for(tiny_vit(seed=0), "random", calibration, seed=8)
    assert first == again
    assert first != other


def test_random_ranker_picks_the_same_structures_at_every_z_update():
    model = tiny_vit()
    blocks = find_blocks(model)
    budget = Budget(0.4, count_params(model))
    projector = StructuredProjector(blocks, budget, fixed_scores=fixed_unit_scores("random", blocks, budget, seed=3))
    plans = []
    for step in range(3):  # the weights move between Z updates, as they do in ADMM
        with torch.no_grad():
            for w in prunable_weights(blocks).values():
                w.add_(torch.randn_like(w) * (step + 1))
        projector(prunable_weights(blocks))
        plans.append(projector.last_plan)
    assert plans[0] == plans[1] == plans[2]
    magnitude = StructuredProjector(blocks, budget)
    assert magnitude.plan(prunable_weights(blocks)) != plans[0]


def test_random_order_does_not_favour_heads_or_neurons():
    # the projection removes the lowest score^2/cost first; random scores make that a uniform order,
    # so over seeds heads and neurons lose about the same share (not all heads first, as raw scores would)
    model = tiny_vit()
    blocks = find_blocks(model)
    budget = Budget(0.4, count_params(model))
    weights = [block_weights(b) for b in blocks]
    head_share, neuron_share = [], []
    for seed in range(20):
        plan = project(blocks, weights, budget, fixed_scores=random_unit_scores(blocks, budget, seed))
        head_share.append(1 - sum(plan.heads_per_block) / sum(b.num_heads for b in blocks))
        neuron_share.append(1 - sum(plan.mlp_hidden_per_block) / sum(b.hidden for b in blocks))
    mean_heads, mean_neurons = sum(head_share) / 20, sum(neuron_share) / 20
    assert 0.2 < mean_heads < 0.6
    assert 0.2 < mean_neurons < 0.6


@pytest.mark.parametrize(
    ("structures", "untouched"), [("heads", "mlp_hidden_per_block"), ("neurons", "heads_per_block")]
)
def test_random_ranker_respects_structures(structures, untouched, calibration):
    model = tiny_vit()
    plan, blocks, budget = plan_for(model, "random", calibration, sparsity=0.2, structures=structures)
    dense = [b.hidden for b in blocks] if untouched == "mlp_hidden_per_block" else [b.num_heads for b in blocks]
    assert getattr(plan, untouched) == dense
    assert removed_cost(blocks, plan, budget) >= budget.target


def test_magnitude_is_graph_with_alpha_zero(calibration):
    model = tiny_vit()
    magnitude, _, _ = plan_for(model, "magnitude", calibration)
    graph_alpha0, _, _ = plan_for(model, "graph", calibration, alpha=0.0)
    assert magnitude == graph_alpha0


def test_taylor_gives_a_zeroed_head_the_lowest_score(calibration):
    model = tiny_vit()
    block = find_blocks(model)[0]
    with torch.no_grad():  # head 1 of block 0 contributes nothing: grad * weight is 0 on all of its weights
        qkv = block.attn.qkv
        rows = torch.arange(3 * block.num_heads * block.head_dim).reshape(3, block.num_heads, -1)[:, 1].flatten()
        qkv.weight[rows] = 0
        qkv.bias[rows] = 0
        block.attn.proj.weight[:, block.head_dim : 2 * block.head_dim] = 0
    scores = rank_heads("taylor", model, find_blocks(model), lambda: iter(calibration))
    assert scores[0][1] == 0
    assert int(scores[0].argmin()) == 1
    assert all(float(s.mean()) == pytest.approx(1.0) for s in scores)


def test_unknown_ranker_fails_with_one_line(model):
    with pytest.raises(ValueError, match=r"^pruning.ranker='pagerank' is not allowed; choose one of graph"):
        rank_heads("pagerank", model, find_blocks(model), lambda: iter([]))


def test_fixed_scores_must_cover_every_unit(model):
    blocks = find_blocks(model)
    budget = Budget(0.4, count_params(model))
    scores = random_unit_scores(blocks, budget, 0)
    heads = scores["heads"]
    with pytest.raises(ValueError, match="unit scores of block 1 have 3 heads, the block has 4"):
        project(
            blocks,
            [block_weights(b) for b in blocks],
            budget,
            fixed_scores={**scores, "heads": heads[:1] + [heads[1][:3]] + heads[2:]},
        )
    with pytest.raises(ValueError, match="unit scores have no neurons"):
        project(blocks, [block_weights(b) for b in blocks], budget, fixed_scores={"heads": heads})


def test_config_offers_exactly_the_registered_rankers():
    from gohsp_lightning import config

    assert config.RANKERS == RANKERS


def test_taylor_takes_the_absolute_value_per_batch(calibration):
    """Taylor importance is the mean over batches of |sum over the head's weights of grad * weight|."""
    model = tiny_vit(seed=4)
    blocks = find_blocks(model)
    got = taylor_head_importance(model, blocks, calibration)
    per_batch, signed = [], []
    for x, y in calibration:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        sums = []
        for b in blocks:
            w = block_weights(b)
            prod = {n: t.grad * t for n, t in w.items()}
            dim = w["qkv.weight"].shape[1]
            s = prod["qkv.weight"].reshape(3, b.num_heads, -1, dim).sum(dim=(0, 2, 3))
            s = s + prod["proj.weight"].reshape(dim, b.num_heads, -1).sum(dim=(0, 2))
            s = s + prod["qkv.bias"].reshape(3, b.num_heads, -1).sum(dim=(0, 2))
            sums.append(s.detach().double())
        per_batch.append([s.abs() for s in sums])
        signed.append(sums)
    model.zero_grad(set_to_none=True)
    for i, g in enumerate(got):
        torch.testing.assert_close(g, (per_batch[0][i] + per_batch[1][i]) / 2, rtol=1e-4, atol=1e-9)
    # where the two batches disagree in sign, the old |sum of signed sums| was smaller: it let them cancel
    cancels = [
        (i, h)
        for i in range(len(blocks))
        for h in range(blocks[i].num_heads)
        if float(signed[0][i][h]) * float(signed[1][i][h]) < 0
    ]
    assert cancels, "the real batches should disagree in sign on some head"
    for i, h in cancels:
        assert float(got[i][h]) > float((signed[0][i][h] + signed[1][i][h]).abs()) / 2
