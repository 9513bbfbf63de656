import pytest
import torch

from gohsp_lightning.pruning import (
    Budget,
    PrunePlan,
    apply_plan,
    count_params,
    find_blocks,
    project,
)
from gohsp_lightning.pruning.projection import removed_cost
from gohsp_lightning.pruning.structures import block_weights

from ..conftest import masked_forward, tiny_vit

PLAN = PrunePlan(
    heads=((1, 3), (0,), (0, 1, 2, 3)),
    neurons=(tuple(range(0, 256, 3)), (5,), tuple(range(100, 256))),
)


@pytest.mark.parametrize("fused", [True, False])
def test_pruned_model_computes_what_the_masked_model_computes(images, fused):
    model = tiny_vit(seed=3)
    for block in model.blocks:
        block.attn.fused_attn = fused
    masked = masked_forward(model, PLAN, images)
    with torch.no_grad():
        dense = model(images)
    apply_plan(model, PLAN)
    with torch.no_grad():
        pruned = model(images)
    torch.testing.assert_close(pruned, masked, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(dense, masked, atol=1e-3)


def test_surgery_rewrites_timm_attributes_and_keeps_head_dim(model):
    scale = model.blocks[0].attn.scale
    apply_plan(model, PLAN)
    attn = model.blocks[0].attn
    assert attn.num_heads == 2 and attn.attn_dim == 32 and attn.head_dim == 16
    assert attn.scale == scale
    assert tuple(attn.qkv.weight.shape) == (3 * 32, 64)
    assert tuple(attn.proj.weight.shape) == (64, 32)
    assert tuple(model.blocks[1].mlp.fc1.weight.shape) == (1, 64)
    assert all(p.is_contiguous() for p in model.parameters())


def test_param_count_drops_by_the_planned_amount(model):
    blocks = find_blocks(model)
    budget = Budget(0.45, count_params(model))
    plan = project(blocks, [block_weights(b) for b in blocks], budget)
    before = count_params(model)
    expected = removed_cost(blocks, plan, budget)
    apply_plan(model, plan)
    assert before - count_params(model) == expected
    assert [b.num_heads for b in find_blocks(model)] == plan.heads_per_block


def test_plan_that_does_not_fit_is_rejected(model):
    bad = PrunePlan(heads=((0, 7), (0,), (0,)), neurons=((0,), (0,), (0,)))
    with pytest.raises(ValueError, match="head 7 of block 0"):
        apply_plan(model, bad)


def test_plan_round_trips_through_json():
    import json

    assert PrunePlan.from_dict(json.loads(json.dumps(PLAN.to_dict()))) == PLAN
    with pytest.raises(ValueError, match="keeps no heads in block 1"):
        PrunePlan(heads=((0,), ()), neurons=((0,), (0,)))
