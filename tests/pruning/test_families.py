"""Every supported timm ViT family, as small random-init configs: the same guarantees as the plain ViT.

For each: masked == pruned outputs (fp32, <= 1e-5), export -> ``load_pruned`` round trip, head statistics
from the family's own attention probabilities, and unit costs equal to what the counters measure after
the cut. Families outside the list fail at once with one line that names them.
"""

import pytest
import timm
import torch

from gohsp_lightning.pruning import (
    Budget,
    PrunePlan,
    StructuredMasks,
    apply_plan,
    count_flops,
    count_params,
    find_blocks,
    load_pruned,
    num_tokens,
    save_pruned,
)
from gohsp_lightning.pruning.activations import head_statistics
from gohsp_lightning.pruning.projection import removed_cost
from gohsp_lightning.pruning.units import check_family

from .test_formulations import reference_maps

SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, num_classes=10)
FAMILIES = {
    "vit (qkv bias)": ("vit_tiny_patch16_224", {"qkv_bias": True}),
    "deit distilled (dist token + head)": ("deit_tiny_distilled_patch16_224", {}),
    "deit3 (LayerScale)": ("deit3_small_patch16_224", {"init_values": 0.5}),
    "registers, no class token, avg pool": (
        "vit_tiny_patch16_224",
        {"reg_tokens": 4, "class_token": False, "global_pool": "avg"},
    ),
    "dinov2 with registers": ("vit_small_patch14_reg4_dinov2", {"init_values": 0.5}),
    "clip (norm_pre)": ("vit_base_patch16_clip_224", {}),
    "qk-norm": ("vit_tiny_patch16_224", {"qk_norm": True}),
}
PLAN = PrunePlan(heads=((1, 3), (0,), (0, 1, 2, 3)), neurons=(tuple(range(0, 256, 3)), (5,), tuple(range(100, 256))))
DATA = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic", "crop_pct": 1.0}


def build(name: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **{**SMALL, **kwargs}).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that slicing them wrongly shows
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith("bias") or n.endswith(".gamma"):
                p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.fixture(params=list(FAMILIES), ids=list(FAMILIES))
def family(request):
    name, kwargs = FAMILIES[request.param]
    return name, {**SMALL, **kwargs}


def test_family_is_accepted_and_masked_equals_pruned_and_reloads(family, images, tmp_path):
    name, kwargs = family
    check_family(name)
    model = build(name, kwargs)
    blocks = find_blocks(model)
    assert [b.hidden for b in blocks] == [256, 256, 256]
    masks = StructuredMasks(blocks)
    masks.set_plan(PLAN)
    masks.attach(blocks)
    with torch.no_grad():
        masked = model(images)
    masks.detach()
    apply_plan(model, PLAN)
    with torch.no_grad():
        pruned = model(images)
    assert (masked - pruned).abs().max() <= 1e-5
    save_pruned(tmp_path / "pruned", model, PLAN, name, kwargs, DATA)
    with torch.no_grad():
        reloaded = load_pruned(tmp_path / "pruned")(images)
    assert torch.equal(reloaded, pruned)


def test_family_costs_are_what_the_counters_measure(family):
    name, kwargs = family
    model = build(name, kwargs)
    blocks = find_blocks(model)
    params, flops = count_params(model), count_flops(model, (3, 32, 32))
    by_params = removed_cost(blocks, PLAN, Budget(0.0, params, "params"))
    by_flops = removed_cost(blocks, PLAN, Budget(0.0, flops, "flops", num_tokens(model)))
    apply_plan(model, PLAN)
    assert params - count_params(model) == by_params
    assert flops - count_flops(model, (3, 32, 32)) == by_flops


def test_family_head_statistics_come_from_its_own_attention(family, images):
    name, kwargs = family
    model = build(name, kwargs)
    blocks = find_blocks(model)
    stats = head_statistics(model, blocks, [images])
    maps, _ = reference_maps(model, images)
    assert stats.tokens == maps[0].shape[-1] == num_tokens(model)
    for i in range(len(blocks)):
        a = maps[i].double()
        entropy = -(a * a.clamp(min=1e-30).log()).sum(-1).mean(-1).mean(0)
        torch.testing.assert_close(stats.entropy[i], entropy, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("swin_tiny_patch4_window7_224", "swin_transformer"),
        ("eva02_tiny_patch14_224", "eva"),
        ("beit_base_patch16_224", "beit"),
        ("levit_128", "levit"),
    ],
)
def test_other_families_are_refused_in_one_line(name, family):
    with pytest.raises(
        ValueError, match=rf"^model.name='{name}' is a timm {family} model.* supported: vision_transformer"
    ):
        check_family(name)


def test_a_gated_mlp_is_refused_not_miscounted():
    from timm.layers import GluMlp

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, mlp_layer=GluMlp, **SMALL)
    with pytest.raises(ValueError, match="block 0 of VisionTransformer has a gated MLP"):
        find_blocks(model)
