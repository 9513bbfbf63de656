import pytest
import torch

from gohsp_lightning.pruning import (
    Budget,
    StructuredProjector,
    count_flops,
    count_params,
    find_blocks,
    num_tokens,
    project,
    prunable_weights,
)
from gohsp_lightning.pruning.projection import removed_cost
from gohsp_lightning.pruning.structures import STRUCTURES, block_weights

HEADS, NEURONS = STRUCTURES["heads"], STRUCTURES["neurons"]


def weights_of(model):
    return [block_weights(b) for b in find_blocks(model)]


@pytest.mark.parametrize("unit", ["params", "flops"])
@pytest.mark.parametrize("sparsity", [0.1, 0.35, 0.6])
def test_budget_met_exactly(model, unit, sparsity):
    blocks = find_blocks(model)
    total = count_params(model) if unit == "params" else count_flops(model, (3, 32, 32))
    budget = Budget(sparsity, total, unit, num_tokens(model))
    plan = project(blocks, weights_of(model), budget)
    removed = removed_cost(blocks, plan, budget)
    smallest = min(budget.cost("neurons", b) for b in blocks)
    assert budget.target <= removed < budget.target + smallest
    assert all(h >= 1 for h in plan.heads_per_block)
    assert all(n >= 1 for n in plan.mlp_hidden_per_block)


def test_extreme_budget_keeps_one_head_and_neuron_per_block(model):
    blocks = find_blocks(model)
    limit = sum(HEADS.unit_params(b) * (b.num_heads - 1) + NEURONS.unit_params(b) * (b.hidden - 1) for b in blocks)
    budget = Budget(limit / count_params(model) - 1e-6, count_params(model))
    plan = project(blocks, weights_of(model), budget)
    assert plan.heads_per_block == [1, 1, 1]
    assert plan.mlp_hidden_per_block == [1, 1, 1]


def test_infeasible_budget_names_the_key(model):
    with pytest.raises(ValueError, match=r"pruning.sparsity=0.95 .* at most"):
        project(find_blocks(model), weights_of(model), Budget(0.95, count_params(model)))


def test_allocation_is_heterogeneous(model):
    # make block 2 clearly more important: it should keep more than blocks 0 and 1
    with torch.no_grad():
        for name in ("qkv", "proj"):
            getattr(model.blocks[2].attn, name).weight.mul_(3)
        model.blocks[2].mlp.fc1.weight.mul_(3)
        model.blocks[2].mlp.fc2.weight.mul_(3)
    plan = project(find_blocks(model), weights_of(model), Budget(0.4, count_params(model)))
    assert plan.mlp_hidden_per_block[2] > max(plan.mlp_hidden_per_block[:2])
    assert len(set(plan.mlp_hidden_per_block)) > 1


def test_uniform_allocation_keeps_the_same_share(model):
    blocks = find_blocks(model)
    budget = Budget(0.4, count_params(model))
    plan = project(blocks, weights_of(model), budget, allocation="uniform")
    assert len(set(plan.heads_per_block)) == 1
    assert len(set(plan.mlp_hidden_per_block)) == 1
    assert removed_cost(blocks, plan, budget) >= budget.target


@pytest.mark.parametrize("unit", ["params", "flops"])
@pytest.mark.parametrize(
    ("sparsity", "heads"), [(0.1, 4), (0.2, 3), (0.3, 3), (0.4, 2), (0.5, 2), (0.6, 2)], ids=lambda v: str(v)
)
@pytest.mark.parametrize("round_to", [1, 8])
def test_uniform_allocation_meets_the_budget_within_one_neuron_step_per_block(model, unit, sparsity, heads, round_to):
    """A baseline compared at the same budget must remove the same amount, not a head per block more."""
    blocks = find_blocks(model)
    total = count_params(model) if unit == "params" else count_flops(model, (3, 32, 32))
    budget = Budget(sparsity, total, unit, num_tokens(model))
    plan = project(blocks, weights_of(model), budget, allocation="uniform", round_to=round_to)
    # heads keep the share nearest 1 - sparsity whose removal alone stays within the budget (4 heads a block)
    assert plan.heads_per_block == [heads] * 3
    assert (4 - heads) * sum(budget.cost("heads", b) for b in blocks) <= budget.target
    assert len(set(plan.mlp_hidden_per_block)) == 1
    removed = removed_cost(blocks, plan, budget)
    one_step = sum(round_to * budget.cost("neurons", b) for b in blocks)
    assert budget.target <= removed < budget.target + one_step


def test_uniform_heads_only_takes_the_largest_head_share_that_meets_the_budget(model):
    blocks = find_blocks(model)
    budget = Budget(0.05, count_params(model))  # one head per block removes 7.6% of the parameters
    plan = project(blocks, weights_of(model), budget, allocation="uniform", structures="heads")
    assert plan.heads_per_block == [3, 3, 3] and plan.mlp_hidden_per_block == [256, 256, 256]
    assert removed_cost(blocks, plan, budget) >= budget.target


def test_head_scores_steer_which_heads_go(model):
    blocks = find_blocks(model)
    budget = Budget(0.08, count_params(model))
    low_first = [torch.tensor([0.01, 1.0, 1.0, 1.0], dtype=torch.float64)] * 3
    plan = project(blocks, weights_of(model), budget, head_scores=low_first, alpha=1.0, structures="heads")
    assert all(0 not in kept for kept in plan.heads)
    high_first = [torch.tensor([100.0, 1.0, 1.0, 1.0], dtype=torch.float64)] * 3
    plan = project(blocks, weights_of(model), budget, head_scores=high_first, alpha=1.0, structures="heads")
    assert all(0 in kept for kept in plan.heads)


def test_structures_restrict_what_is_pruned(model):
    blocks = find_blocks(model)
    budget = Budget(0.2, count_params(model))
    heads_only = project(blocks, weights_of(model), budget, structures="heads")
    assert heads_only.mlp_hidden_per_block == [256, 256, 256]
    neurons_only = project(blocks, weights_of(model), budget, structures="neurons")
    assert neurons_only.heads_per_block == [4, 4, 4]


@pytest.mark.parametrize("unit", ["params", "flops"])
@pytest.mark.parametrize("allocation", ["global", "uniform"])
@pytest.mark.parametrize("round_to", [8, 32])
def test_round_to_aligns_kept_neurons_and_keeps_the_budget(model, unit, allocation, round_to):
    blocks = find_blocks(model)
    total = count_params(model) if unit == "params" else count_flops(model, (3, 32, 32))
    budget = Budget(0.35, total, unit, num_tokens(model))
    plan = project(blocks, weights_of(model), budget, allocation=allocation, round_to=round_to)
    assert all(n % round_to == 0 or n == 256 for n in plan.mlp_hidden_per_block)
    assert all(n >= round_to for n in plan.mlp_hidden_per_block)
    assert all(h >= 1 for h in plan.heads_per_block)
    assert removed_cost(blocks, plan, budget) >= budget.target


def test_round_to_stays_close_to_the_target_and_keeps_the_best_neurons(model):
    blocks = find_blocks(model)
    budget = Budget(0.35, count_params(model))
    exact = project(blocks, weights_of(model), budget)
    aligned = project(blocks, weights_of(model), budget, round_to=16)
    chunk = 16 * NEURONS.unit_params(blocks[0])
    one_step = max(chunk, HEADS.unit_params(blocks[0]))
    assert budget.target <= removed_cost(blocks, aligned, budget) < budget.target + one_step
    assert aligned != exact
    assert aligned.mlp_hidden_per_block != exact.mlp_hidden_per_block
    for block, kept in zip(blocks, aligned.neurons, strict=True):
        norms = block.mlp.fc1.weight.detach().pow(2).sum(1) + block.mlp.fc1.bias.detach().pow(2)
        norms = norms + block.mlp.fc2.weight.detach().pow(2).sum(0)
        dropped = sorted(set(range(block.hidden)) - set(kept))
        assert float(norms[list(kept)].min()) >= float(norms[dropped].max())


def test_round_to_one_is_the_unrounded_projection(model):
    blocks = find_blocks(model)
    budget = Budget(0.35, count_params(model))
    assert project(blocks, weights_of(model), budget, round_to=1) == project(blocks, weights_of(model), budget)


def test_round_to_counts_in_feasibility_and_must_be_positive(model):
    blocks = find_blocks(model)
    budget = Budget(0.8, count_params(model))
    project(blocks, weights_of(model), budget)
    with pytest.raises(ValueError, match=r"keeping 1 head and 128 neurons \(pruning.round_to=128\)"):
        project(blocks, weights_of(model), budget, round_to=128)
    with pytest.raises(ValueError, match=r"pruning.round_to=0 must be >= 1"):
        project(blocks, weights_of(model), budget, round_to=0)


def test_projector_passes_round_to(model):
    blocks = find_blocks(model)
    projector = StructuredProjector(blocks, Budget(0.35, count_params(model)), round_to=64)
    projected = projector(prunable_weights(blocks))
    kept = projector.last_plan.mlp_hidden_per_block
    assert all(n % 64 == 0 for n in kept)
    for b, n in zip(blocks, kept, strict=True):
        rows = projected[f"{b.index}.fc1.weight"].abs().sum(1)
        assert int((rows > 0).sum()) == n


def test_balanced_competition_prunes_heads_and_neurons(model):
    # make every head far more important per parameter than any neuron (as on trained ViTs)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.mul_(20)
            block.attn.proj.weight.mul_(20)
    blocks = find_blocks(model)
    budget = Budget(0.4, count_params(model))
    raw = project(blocks, weights_of(model), budget, compete="raw")
    assert raw.heads_per_block == [4, 4, 4], "raw scores: heads outrank every neuron, none is removed"
    balanced = project(blocks, weights_of(model), budget, compete="balanced")
    assert sum(balanced.heads_per_block) < 12
    assert sum(balanced.mlp_hidden_per_block) < 3 * 256
    removed = removed_cost(blocks, balanced, budget)
    assert budget.target <= removed < budget.target + min(budget.cost("neurons", b) for b in blocks)
