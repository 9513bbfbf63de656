"""The structure seam: every registered structure obeys one contract (zero == gate == cut, costs measured).

The contract tests are parametrized over ``STRUCTURES``, so a structure added there is checked by them
without a new test.
"""

import pytest
import torch

from gohsp_lightning import load_pretrained
from gohsp_lightning.pruning import (
    STRUCTURES,
    Budget,
    PrunePlan,
    StructuredMasks,
    apply_plan,
    count_flops,
    count_params,
    find_blocks,
    num_tokens,
    project,
    structure_names,
)
from gohsp_lightning.pruning.projection import removed_cost
from gohsp_lightning.pruning.structures import block_weights, structures_label, zero_pruned

from ..conftest import masked_forward, tiny_vit

NAMES = list(STRUCTURES)


def _drop(blocks, name: str, block: int, units: list[int]) -> PrunePlan:
    """The dense plan without ``units`` of structure ``name`` in ``block`` (in every block, if shared)."""
    kept = PrunePlan.dense(blocks).to_dict()
    owner = 0 if STRUCTURES[name].shared else block
    kept[name][owner] = [j for j in kept[name][owner] if j not in units]
    return PrunePlan.from_dict(kept)


@pytest.mark.parametrize("name", NAMES)
def test_zeroing_gating_and_cutting_a_unit_compute_the_same(name):
    model = tiny_vit(seed=1)
    x = torch.randn(4, 3, 32, 32)
    blocks = find_blocks(model)
    plan = _drop(blocks, name, 1, [0, 2])

    gated = masked_forward(model, plan, x)

    zeroed_model = tiny_vit(seed=1)
    zeroed_blocks = find_blocks(zeroed_model)
    keep = plan.keep_masks(zeroed_blocks)
    with torch.no_grad():
        for b in zeroed_blocks:
            weights = block_weights(b)
            for key, tensor in zero_pruned(weights, plan.block_keep(keep, b.index), b).items():
                weights[key].copy_(tensor)
        zeroed = zeroed_model(x)
        cut = apply_plan(model, plan)(x)

    assert (cut - gated).abs().max() <= 1e-5
    if STRUCTURES[name].shared:
        # zeroing reaches the ADMM variables only; a channel also lives in norms, tokens and the patch
        # embedding, which the gate (masked norms) and the cut handle
        sq = sum(STRUCTURES[name].sq_norms(block_weights(b), b) for b in zeroed_blocks)
        assert sq[[0, 2]].sum() == 0 and sq[1] > 0
    else:
        assert (gated - zeroed).abs().max() <= 1e-5
    # the other structures' units are untouched by the cut
    for other, s in STRUCTURES.items():
        expected = [s.size(b) for b in blocks]
        if other == name:
            for i in range(len(blocks)) if s.shared else [1]:
                expected[i] -= 2
        assert [s.size(b) for b in find_blocks(model)] == expected


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("unit", ["params", "flops"])
def test_unit_cost_is_what_the_cut_saves(name, unit):
    model = tiny_vit()
    blocks = find_blocks(model)
    tokens = num_tokens(model)

    def measure() -> int:
        return count_params(model) if unit == "params" else count_flops(model, (3, 32, 32))

    budget = Budget(0.0, measure(), unit, tokens)
    expected = 3 * budget.cost(name, blocks[2])
    before = measure()
    apply_plan(model, _drop(blocks, name, 2, [0, 1, 3]))
    assert before - measure() == expected


@pytest.mark.parametrize("name", NAMES)
def test_group_norm_of_a_zeroed_unit_is_zero_and_others_unchanged(name):
    model = tiny_vit()
    blocks = find_blocks(model)
    s = STRUCTURES[name]
    b = blocks[0]
    weights = block_weights(b)
    keep = {n: torch.ones(t.size(b)) for n, t in STRUCTURES.items()}
    keep[name][1] = 0.0
    zeroed = zero_pruned(weights, keep, b)
    before, after = s.sq_norms(weights, b), s.sq_norms(zeroed, b)
    assert after[1] == 0 and before[1] > 0
    assert torch.equal(torch.cat([before[:1], before[2:]]), torch.cat([after[:1], after[2:]]))


def test_per_block_structures_own_disjoint_weights_and_channels_cross_them():
    b = find_blocks(tiny_vit())[0]
    owned = [set(s.weights(b)) for s in STRUCTURES.values() if not s.shared]
    assert sum(len(o) for o in owned) == len(set().union(*owned)) == len(block_weights(b))
    # a channel is a column of qkv and fc1 and a row of proj and fc2: the same ADMM variables, other axis
    channels = STRUCTURES["channels"].weights(b)
    assert set(channels) == {"qkv.weight", "proj.weight", "fc1.weight", "fc2.weight"}
    assert all(channels[k] is block_weights(b)[k] for k in channels)


def test_a_plan_that_names_one_structure_keeps_the_others_whole():
    model = tiny_vit()
    blocks = find_blocks(model)
    plan = PrunePlan(heads=((0, 1), (0,), (1, 2, 3)))
    masks = StructuredMasks(blocks)
    masks.set_plan(plan)
    dense = PrunePlan.dense(blocks)
    assert masks.plan() == PrunePlan(heads=plan.heads, neurons=dense.neurons, channels=dense.kept["channels"])
    apply_plan(model, plan)
    assert [b.num_heads for b in find_blocks(model)] == [2, 1, 3]
    assert [b.hidden for b in find_blocks(model)] == [256, 256, 256]
    assert PrunePlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize(
    ("value", "names", "label"),
    [
        (["heads", "neurons"], ("heads", "neurons"), "both"),
        (["neurons", "heads"], ("heads", "neurons"), "both"),
        ("both", ("heads", "neurons"), "both"),
        ("heads", ("heads",), "heads"),
        (["neurons"], ("neurons",), "neurons"),
    ],
)
def test_structure_names_accept_lists_names_and_the_old_alias(value, names, label):
    assert structure_names(value) == names
    assert structures_label(value) == label


@pytest.mark.parametrize("value", ["channel", ["heads", "heads"], [], ["heads", "neuron"]])
def test_bad_structure_names_fail_in_one_line_naming_what_is_allowed(value):
    with pytest.raises(ValueError, match=r"pruning\.structures=.* heads, neurons") as err:
        structure_names(value)
    assert "\n" not in str(err.value)


def test_a_list_of_structures_plans_like_the_old_alias():
    model = tiny_vit()
    blocks = find_blocks(model)
    budget = Budget(0.4, count_params(model))
    weights = [block_weights(b) for b in blocks]
    as_list = project(blocks, weights, budget, structures=["neurons", "heads"])
    assert as_list == project(blocks, weights, budget, structures="both")
    heads_only = project(blocks, weights, Budget(0.15, budget.total), structures=["heads"])
    assert heads_only.mlp_hidden_per_block == [256, 256, 256]


@pytest.mark.parametrize("unit", ["params", "flops"])
def test_channels_compete_with_heads_and_neurons_at_their_exact_interacting_cost(unit):
    model = tiny_vit()
    blocks = find_blocks(model)

    def measure() -> int:
        return count_params(model) if unit == "params" else count_flops(model, (3, 32, 32))

    budget = Budget(0.4, measure(), unit, num_tokens(model))
    weights = [block_weights(b) for b in blocks]
    plan = project(blocks, weights, budget, structures=["heads", "neurons", "channels"])
    assert plan.counts("channels")[0] < blocks[0].dim  # channels went, alongside heads and neurons
    predicted = removed_cost(blocks, plan, budget)
    x = torch.randn(2, 3, 32, 32)
    masked = masked_forward(model, plan, x)
    before = measure()
    apply_plan(model, plan)
    with torch.no_grad():
        cut = model(x)
    assert before - measure() == predicted >= budget.target  # the product of kept shares, counted exactly
    assert (masked - cut).abs().max() <= 1e-5
    with pytest.raises(ValueError, match=r"pruning\.allocation=uniform cannot prune channels"):
        project(blocks, weights, budget, structures=["heads", "channels"], allocation="uniform")


@pytest.mark.parametrize("unit", ["params", "flops"])
def test_channels_are_priced_exactly_in_the_walk_so_untaken_channels_change_nothing(unit):
    model = load_pretrained("vit6x6_cifar10")
    blocks = find_blocks(model)
    weights = [block_weights(b) for b in blocks]
    total = count_params(model) if unit == "params" else count_flops(model, (3, 32, 32))
    neuron = max(Budget(0.0, total, unit, num_tokens(model)).cost("neurons", b) for b in blocks)
    for sparsity in (0.2, 0.4):
        budget = Budget(sparsity, total, unit, num_tokens(model))
        without = project(blocks, weights, budget, structures=["heads", "neurons"])
        crossing = project(blocks, weights, budget, structures=["heads", "neurons", "channels"])
        if sparsity == 0.2:  # on the trained model channels compete and lose: the plan without them, exactly
            assert crossing.counts("channels") == [blocks[0].dim]
            assert crossing == without
        else:
            assert crossing.counts("channels")[0] < blocks[0].dim
        assert 0 <= removed_cost(blocks, crossing, budget) - budget.target <= neuron  # one cheap step past it
