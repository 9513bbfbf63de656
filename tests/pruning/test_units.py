import pytest
import torch

from gohsp_lightning.pruning import PrunePlan, apply_plan, count_flops, count_params, find_blocks, num_tokens
from gohsp_lightning.pruning.structures import STRUCTURES

HEADS, NEURONS = STRUCTURES["heads"], STRUCTURES["neurons"]


def test_blocks_and_costs_add_up_to_the_model(model):
    blocks = find_blocks(model)
    assert [b.num_heads for b in blocks] == [4, 4, 4]
    assert [b.hidden for b in blocks] == [256, 256, 256]
    prunable = sum(b.num_heads * HEADS.unit_params(b) + b.hidden * NEURONS.unit_params(b) for b in blocks)
    # what is not prunable: proj/fc2 biases, norms, patch embed, tokens, classifier
    fixed = count_params(model) - prunable
    assert 0 < fixed < count_params(model) / 2
    assert num_tokens(model) == 16 + 1


def test_unit_costs_match_measured_params_and_flops(model):
    blocks = find_blocks(model)
    params, flops = count_params(model), count_flops(model, (3, 32, 32))
    plan = PrunePlan(
        heads=((0, 1, 2), (0, 1, 2, 3), (0, 1, 2, 3)), neurons=(tuple(range(255)), tuple(range(256)), tuple(range(256)))
    )
    b = blocks[0]
    expected_params = HEADS.unit_params(b) + NEURONS.unit_params(b)
    expected_flops = HEADS.unit_flops(b, num_tokens(model)) + NEURONS.unit_flops(b, num_tokens(model))
    apply_plan(model, plan)
    assert params - count_params(model) == expected_params
    assert flops - count_flops(model, (3, 32, 32)) == expected_flops


def test_find_blocks_rejects_non_vit():
    with pytest.raises(ValueError, match="no 'blocks'"):
        find_blocks(torch.nn.Linear(2, 2))


def test_macs_are_the_figure_published_vit_tables_give():
    import timm

    from gohsp_lightning.pruning.flops import macs

    flops = count_flops(timm.create_model("deit_small_patch16_224"), (3, 224, 224))
    assert round(macs(flops) / 1e9, 1) == 4.6  # DeiT paper, Table 1: DeiT-S 4.6 G
    assert round(flops / 1e9, 1) == 9.2
