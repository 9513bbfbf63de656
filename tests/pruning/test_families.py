"""Every supported timm ViT family, as small random-init configs: the same guarantees as the plain ViT.

For each: masked == pruned outputs (fp32, <= 1e-5), export -> ``load_pruned`` round trip, head statistics
from the family's own attention probabilities, and unit costs equal to what the counters measure after
the cut. Families outside the list fail at once with one line that names them.
"""

import pytest
import timm
import torch
from timm.layers import apply_rot_embed_cat

from gohsp_lightning.pruning import (
    Budget,
    PrunePlan,
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

from ..conftest import masked_forward
from .test_formulations import reference_maps

EVA = {"ref_feat_shape": (4, 4)}  # RoPE on the 4x4 patch grid of a 32x32 image in 8x8 patches
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
    "dinov2 giant (SwiGLUPacked: fc1 in two halves)": ("vit_giant_patch14_dinov2", {"mlp_ratio": 8.0}),
    "aimv2 (SwiGLU, RmsNorm, no biases)": ("aimv2_large_patch14_224", {"mlp_ratio": 4.0}),
    "eva02 (RoPE, GluMlp, fused qkv, q/v biases)": ("eva02_tiny_patch14_224", {"mlp_ratio": 4.0, **EVA}),
    "eva02 (separate q/k/v, SwiGLU)": (
        "eva02_tiny_patch14_224",
        {"mlp_ratio": 4.0, "qkv_fused": False, "swiglu_align_to": 8, **EVA},
    ),
    "eva02 base (SwiGLU with its norm over the hidden units)": ("eva02_base_patch14_224", {"mlp_ratio": 4.0, **EVA}),
    "beit (relative position bias, q/v biases, LayerScale)": ("beit_base_patch16_224", {}),
}
# a norm over the pruned units has different statistics once units go: masked is close to, not equal to, pruned
NORM_OVER_UNITS = {"eva02 base (SwiGLU with its norm over the hidden units)"}
PLAN = PrunePlan(heads=((1, 3), (0,), (0, 1, 2, 3)), neurons=(tuple(range(0, 256, 3)), (5,), tuple(range(100, 256))))
# the same cut with 40 of the 64 residual channels kept: through embeddings, tokens, every norm and the classifier
WITH_CHANNELS = PrunePlan(**PLAN.kept, channels=(tuple(sorted({*range(0, 64, 2), *range(1, 64, 8)})),))
PLANS = pytest.mark.parametrize("plan", [PLAN, WITH_CHANNELS], ids=["heads+neurons", "heads+neurons+channels"])
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
    return name, {**SMALL, **kwargs}, request.param in NORM_OVER_UNITS


@PLANS
def test_family_is_accepted_and_masked_equals_pruned_and_reloads(family, plan, images, tmp_path):
    name, kwargs, norm_over_units = family
    check_family(name)
    model = build(name, kwargs)
    blocks = find_blocks(model)
    assert [b.hidden for b in blocks] == [256, 256, 256]
    masked = masked_forward(model, plan, images)
    apply_plan(model, plan)
    with torch.no_grad():
        pruned = model(images)
    if norm_over_units:
        assert (masked - pruned).abs().max() <= 0.1 * pruned.abs().max()
    else:
        assert (masked - pruned).abs().max() <= 1e-5
    save_pruned(tmp_path / "pruned", model, plan, name, kwargs, DATA)
    with torch.no_grad():
        reloaded = load_pruned(tmp_path / "pruned")(images)
    assert torch.equal(reloaded, pruned)


@PLANS
def test_family_costs_are_what_the_counters_measure(family, plan):
    name, kwargs, _ = family
    model = build(name, kwargs)
    blocks = find_blocks(model)
    params, flops = count_params(model), count_flops(model, (3, 32, 32))
    by_params = removed_cost(blocks, plan, Budget(0.0, params, "params"))
    by_flops = removed_cost(blocks, plan, Budget(0.0, flops, "flops", num_tokens(model)))
    apply_plan(model, plan)
    assert params - count_params(model) == by_params
    assert flops - count_flops(model, (3, 32, 32)) == by_flops


def test_family_head_statistics_come_from_its_own_attention(family, images):
    name, kwargs, _ = family
    model = build(name, kwargs)
    blocks = find_blocks(model)
    stats = head_statistics(model, blocks, [images])
    maps, _ = reference_maps(model, images)
    assert stats.tokens == maps[0].shape[-1] == num_tokens(model)
    for i in range(len(blocks)):
        a = maps[i].double()
        entropy = -(a * a.clamp(min=1e-30).log()).sum(-1).mean(-1).mean(0)
        torch.testing.assert_close(stats.entropy[i], entropy, atol=1e-5, rtol=1e-5)


def hand_made_maps(model, images):
    """softmax(q k^T * scale + bias) of every EVA or BEiT block, computed here from the qkv output with the
    model's RoPE (EVA) or relative position bias table (BEiT): an independent check of what the statistics read."""
    inputs = []
    handles = [b.attn.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for b in model.blocks]
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    maps = []
    for block, x in zip(model.blocks, inputs, strict=True):
        attn = block.attn
        bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        n, t, _ = x.shape
        q, k, _ = (x @ attn.qkv.weight.T + bias).reshape(n, t, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        scores = None
        if getattr(model, "rope", None) is not None:
            rope, npt = model.rope.get_embed(), model.num_prefix_tokens
            q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope)], dim=2)
            k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope)], dim=2)
        else:
            table, index = attn.relative_position_bias_table, attn.relative_position_index
            scores = table[index.view(-1)].view(t, t, -1).permute(2, 0, 1)[None]
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        maps.append(torch.softmax(logits if scores is None else logits + scores, dim=-1))
    return maps


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "beit_base_patch16_224"])
def test_rope_and_relative_position_bias_are_in_the_maps(name, images):
    kwargs = {**SMALL, **(EVA if name.startswith("eva") else {})}
    model = build(name, kwargs)
    blocks = find_blocks(model)
    stats = head_statistics(model, blocks, [images])
    for i, a in enumerate(hand_made_maps(model, images)):
        a = a.double()
        entropy = -(a * a.clamp(min=1e-30).log()).sum(-1).mean(-1).mean(0)
        torch.testing.assert_close(stats.entropy[i], entropy, atol=1e-5, rtol=1e-5)


def test_eva_pruned_forward_is_timms_on_the_dense_model(images):
    """The pruned attention's own forward, swapped in before any cut, computes what timm's does."""
    from gohsp_lightning.pruning.layouts import PRUNED_FORWARDS

    for name in ("eva02_tiny_patch14_224", "beit_base_patch16_224"):
        for fused in (True, False):
            model = build(name, {**SMALL, **(EVA if name.startswith("eva") else {})})
            for block in model.blocks:
                block.attn.fused_attn = fused
            with torch.no_grad():
                reference = model(images)
                for block in model.blocks:
                    block.attn.__class__ = PRUNED_FORWARDS[type(block.attn)]
                torch.testing.assert_close(model(images), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("swin_tiny_patch4_window7_224", "swin_transformer"),
        ("levit_128", "levit"),
        ("pit_ti_224", "pit"),
        ("mvitv2_tiny", "mvitv2"),
    ],
)
def test_other_families_are_refused_in_one_line(name, family):
    with pytest.raises(
        ValueError, match=rf"^model.name='{name}' is a timm {family} model.* supported: vision_transformer"
    ):
        check_family(name)


def test_an_attention_without_a_layout_is_refused_in_one_line():
    """EVA models built with timm's AttentionRope (another qkv layout) are in a supported module but not known."""
    model = timm.create_model("eva02_tiny_patch14_224", pretrained=False, attn_type="rope", **SMALL, **EVA)
    with pytest.raises(ValueError, match=r"^block 0 of Eva: attention .*AttentionRope has no layout here; supported"):
        find_blocks(model)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("beit_base_patch16_224", {"use_shared_rel_pos_bias": True}, "shares one relative position bias across"),
        ("eva02_tiny_patch14_224", {"rope_type": "mixed", **EVA}, r"per-head RoPE frequencies .*rope_type='cat'"),
    ],
)
def test_per_head_tensors_shared_by_all_blocks_are_refused(name, kwargs, message):
    model = timm.create_model(name, pretrained=False, **SMALL, **kwargs)
    with pytest.raises(ValueError, match=message):
        find_blocks(model)
