import networkx as nx
import numpy as np
import pytest
import torch

from gohsp_lightning.pruning import attention_similarity, find_blocks, head_graph, stationary_scores


def power_iteration(similarities, heads, damping):
    """Hand-written PageRank: row-normalised weights, dangling rows teleport uniformly."""
    offsets = np.cumsum([0, *heads])
    n = offsets[-1]
    p = np.zeros((n, n))
    for block, sim in enumerate(similarities):
        w = np.clip(sim.numpy(), 0, None)
        p[offsets[block] : offsets[block + 1], offsets[block + 1] : offsets[block + 2]] = w
    rows = p.sum(axis=1, keepdims=True)
    p = np.where(rows > 0, p / np.where(rows > 0, rows, 1), 1.0 / n)
    pi = np.full(n, 1.0 / n)
    for _ in range(10_000):
        new = damping * pi @ p + (1 - damping) / n
        if np.abs(new - pi).sum() < 1e-15:
            break
        pi = new
    return [torch.tensor(pi[offsets[b] : offsets[b + 1]]) for b in range(len(heads))]


@pytest.mark.parametrize("heads", [[3, 3, 3], [4, 2, 5, 1]])
def test_stationary_scores_match_hand_power_iteration(heads):
    gen = torch.Generator().manual_seed(0)
    sims = [torch.rand(heads[i], heads[i + 1], generator=gen, dtype=torch.float64) - 0.2 for i in range(len(heads) - 1)]
    expected = power_iteration(sims, heads, 0.85)
    got = stationary_scores(sims, heads, damping=0.85, normalize="global")
    total = sum(heads)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g / total, e, atol=1e-9, rtol=1e-7)
    assert abs(sum(float(g.sum()) for g in got) / total - 1.0) < 1e-9


def test_block_normalisation_keeps_order_and_gives_mean_one():
    sims = [torch.tensor([[0.9, 0.1], [0.2, 0.3]], dtype=torch.float64)]
    glob = stationary_scores(sims, [2, 2], normalize="global")
    block = stationary_scores(sims, [2, 2], normalize="block")
    for g, b in zip(glob, block, strict=True):
        assert torch.argsort(g).tolist() == torch.argsort(b).tolist()
        assert float(b.mean()) == pytest.approx(1.0)
    # head 0 of block 1 receives the most similar (heaviest) edges: it ranks first in its block
    assert block[1][0] > block[1][1]


def test_graph_links_consecutive_blocks_only():
    sims = [torch.ones(2, 3, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64)]
    g = head_graph(sims, [2, 3, 2])
    assert isinstance(g, nx.DiGraph)
    assert g.number_of_nodes() == 7
    assert g.number_of_edges() == 2 * 3 + 3 * 2
    assert all(v[0] == u[0] + 1 for u, v in g.edges)


def test_attention_similarity_on_real_images(model, images):
    blocks = find_blocks(model)
    sims = attention_similarity(model, blocks, [images[:8], images[8:]])
    assert [tuple(s.shape) for s in sims] == [(4, 4), (4, 4)]
    # attention maps are non-negative, so cosine similarities are in [0, 1]
    assert all(float(s.min()) >= 0 and float(s.max()) <= 1 + 1e-6 for s in sims)
    one_batch = attention_similarity(model, blocks, [images])
    for a, b in zip(sims, one_batch, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_damping_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="damping"):
        stationary_scores([torch.ones(1, 1)], [1, 1], damping=1.0)
