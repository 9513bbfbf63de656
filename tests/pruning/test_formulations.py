"""Graph formulations (ranking.*) against hand computations, and the head statistics against a reference
forward that materialises timm's own attention probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gohsp_lightning.pruning import find_blocks
from gohsp_lightning.pruning.activations import head_statistics
from gohsp_lightning.pruning.ranking import (
    GraphOptions,
    block_zscores,
    graph_head_factor,
    head_factor,
    head_graph,
    stationary_scores,
)


def pagerank_by_hand(adjacency: np.ndarray, damping: float, teleport: np.ndarray | None = None) -> np.ndarray:
    """Power iteration: rows normalised, dangling rows and teleport jump by ``teleport`` (uniform if None)."""
    n = adjacency.shape[0]
    v = np.full(n, 1.0 / n) if teleport is None else teleport / teleport.sum()
    rows = adjacency.sum(axis=1, keepdims=True)
    p = np.where(rows > 0, adjacency / np.where(rows > 0, rows, 1), v[None, :])
    pi = v.copy()
    for _ in range(20_000):
        new = damping * pi @ p + (1 - damping) * v
        if np.abs(new - pi).sum() < 1e-15:
            break
        pi = new
    return pi


SIMS = [torch.tensor([[0.9, 0.2, 0.4], [0.1, 0.7, 0.3]], dtype=torch.float64)]  # block 0: 2 heads, block 1: 3
HEADS = [2, 3]


def adjacency(chain: str, power: float = 1.0) -> np.ndarray:
    s = SIMS[0].numpy() ** power
    a = np.zeros((5, 5))
    if chain in ("forward", "undirected"):
        a[:2, 2:] = s
    if chain in ("backward", "undirected"):
        a[2:, :2] = s.T
    return a


def as_blocks(pi: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(pi[:2]), torch.tensor(pi[2:])]


@pytest.mark.parametrize("chain", ["forward", "backward", "undirected"])
def test_chain_directions_match_hand_pagerank(chain):
    got = stationary_scores(SIMS, HEADS, damping=0.85, normalize="global", chain=chain)
    expected = as_blocks(pagerank_by_hand(adjacency(chain), 0.85))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g / 5, e, atol=1e-9, rtol=1e-7)


def test_backward_and_undirected_chains_give_block_0_an_order():
    forward = stationary_scores(SIMS, HEADS, normalize="block")
    assert torch.allclose(forward[0], torch.ones(2, dtype=torch.float64))  # no incoming edges: a tie
    for chain in ("backward", "undirected"):
        scores = stationary_scores(SIMS, HEADS, normalize="block", chain=chain)
        assert not torch.allclose(scores[0], torch.ones(2, dtype=torch.float64))


def test_graph_edges_follow_the_chain():
    assert set(head_graph(SIMS, HEADS, "backward").edges) == {((1, g), (0, h)) for h in range(2) for g in range(3)}
    assert head_graph(SIMS, HEADS, "undirected").number_of_edges() == 12


def test_temperature_sharpens_the_transitions():
    got = stationary_scores(SIMS, HEADS, damping=0.85, normalize="global", chain="undirected", temperature=0.25)
    expected = as_blocks(pagerank_by_hand(adjacency("undirected", power=4.0), 0.85))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g / 5, e, atol=1e-9, rtol=1e-7)


def test_energy_teleport_is_personalised_pagerank():
    energy = [torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([0.5, 0.5, 2.0], dtype=torch.float64)]
    got = stationary_scores(SIMS, HEADS, damping=0.7, normalize="global", teleport=energy)
    expected = as_blocks(pagerank_by_hand(adjacency("forward"), 0.7, np.array([1.0, 3.0, 0.5, 0.5, 2.0])))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g / 5, e, atol=1e-9, rtol=1e-7)
    # with teleport by energy, block 0 of a forward chain is no longer a tie: the high-energy head ranks first
    factor, _ = graph_head_factor(SIMS, HEADS, GraphOptions(chain="forward", teleport="energy"), energy)
    assert factor[0][1] > factor[0][0]


def test_exp_combination_uses_the_block_zscore_of_pi():
    pi = [torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([5.0, 5.0], dtype=torch.float64)]
    z = math.sqrt(1.5)  # population std of (1, 2, 3) is sqrt(2/3): z = (-1, 0, 1) / sqrt(2/3)
    zs = block_zscores(pi)
    torch.testing.assert_close(zs[0], torch.tensor([-z, 0.0, z], dtype=torch.float64))
    assert torch.equal(zs[1], torch.zeros(2, dtype=torch.float64))  # a tie carries no information
    factor = head_factor(pi, "exp", beta=-0.5)
    torch.testing.assert_close(factor[0], torch.exp(torch.tensor([0.5 * z, 0.0, -0.5 * z], dtype=torch.float64)))
    assert torch.equal(head_factor(pi, "pow")[0], pi[0])
    # the z-score does not depend on pi's raw spread: scaling the spread leaves the factor as it was
    spread = [1 + 0.01 * (p - p.mean()) for p in pi]
    torch.testing.assert_close(head_factor(spread, "exp", 2.0)[0], head_factor(pi, "exp", 2.0)[0])


def test_bad_formulation_values_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^ranking.chain='sideways' is not allowed; choose one of forward"):
        GraphOptions(chain="sideways")
    with pytest.raises(ValueError, match=r"^ranking.temperature=0"):
        GraphOptions(temperature=0)


def reference_maps(model, images):
    """timm's own attention probabilities: the unfused path's attn_drop receives softmax(QK^T * scale)."""
    maps, outputs = [], []
    handles = []
    for block in model.blocks:
        block.attn.fused_attn = False
        handles.append(block.attn.attn_drop.register_forward_hook(lambda _m, inp, out: maps.append(inp[0].detach())))
        handles.append(block.attn.proj.register_forward_pre_hook(lambda _m, inp: outputs.append(inp[0].detach())))
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    for block in model.blocks:
        block.attn.fused_attn = True
    return maps, outputs


def test_head_statistics_match_timms_attention(model, images):
    blocks = find_blocks(model)
    stats = head_statistics(model, blocks, [images[:8], images[8:]])
    maps, outputs = reference_maps(model, images)
    n, tokens = images.shape[0], maps[0].shape[-1]
    assert stats.images == n and stats.tokens == tokens
    for i, b in enumerate(blocks):
        a = maps[i].double()
        entropy = -(a * a.log()).sum(-1).mean(-1).mean(0)
        torch.testing.assert_close(stats.entropy[i], entropy, atol=1e-5, rtol=1e-5)
        # contributions of each head to the residual stream: its slice of proj's input times its proj columns
        o = outputs[i].double().reshape(n, tokens, b.num_heads, b.head_dim)
        w = b.attn.proj.weight.detach().double().reshape(b.dim, b.num_heads, b.head_dim)
        x = torch.einsum("nthd,ehd->hnte", o, w).reshape(b.num_heads, n * tokens, b.dim)
        torch.testing.assert_close(stats.energy[i], x.pow(2).sum(-1).mean(-1), atol=1e-6, rtol=1e-4)
        if i + 1 == len(blocks):
            continue
        nxt = maps[i + 1].double()
        flat_a, flat_b = a.flatten(2), nxt.flatten(2)
        unit = torch.nn.functional.normalize
        cos = torch.einsum("nhx,ngx->hg", unit(flat_a, dim=-1), unit(flat_b, dim=-1)) / n
        torch.testing.assert_close(stats.cosine[i], cos, atol=1e-6, rtol=1e-5)
        ca, cb = flat_a - 1 / tokens, flat_b - 1 / tokens
        centered = torch.einsum("nhx,ngx->hg", unit(ca, dim=-1), unit(cb, dim=-1)) / n
        torch.testing.assert_close(stats.centered[i], centered, atol=1e-6, rtol=1e-5)
        o2 = outputs[i + 1].double().reshape(n, tokens, blocks[i + 1].num_heads, blocks[i + 1].head_dim)
        w2 = blocks[i + 1].attn.proj.weight.detach().double().reshape(b.dim, blocks[i + 1].num_heads, -1)
        y = torch.einsum("nthd,ehd->hnte", o2, w2).reshape(blocks[i + 1].num_heads, n * tokens, b.dim)
        xc, yc = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
        cka = torch.empty(b.num_heads, blocks[i + 1].num_heads, dtype=torch.float64)
        for h in range(b.num_heads):
            for g in range(blocks[i + 1].num_heads):
                cross = (xc[h].T @ yc[g]).pow(2).sum()
                cka[h, g] = cross / ((xc[h].T @ xc[h]).pow(2).sum() * (yc[g].T @ yc[g]).pow(2).sum()).sqrt()
        torch.testing.assert_close(stats.cka[i], cka, atol=1e-6, rtol=1e-4)
    # linear CKA is a similarity in [0, 1]
    assert all(float(c.min()) >= 0 and float(c.max()) <= 1 + 1e-9 for c in stats.cka)
