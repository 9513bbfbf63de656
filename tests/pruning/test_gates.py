"""Learnable gates on the structure seam: exact at 0, folded exactly into the export, budget met exactly at
the cut, and they train on real images."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from gohsp_lightning.pruning import (
    Budget,
    PrunePlan,
    apply_plan,
    count_params,
    find_blocks,
    load_pruned,
    save_pruned,
)
from gohsp_lightning.pruning.gates import (
    GATE_KINDS,
    LearnableGates,
    budget_penalty,
    expected_removed,
    fold_gates,
    plan_from_gates,
)
from gohsp_lightning.pruning.projection import removed_cost

from ..conftest import SUBSET, tiny_vit
from .test_export import DATA, KWARGS
from .test_surgery import PLAN


def force(gates: LearnableGates, plan: PrunePlan, kept: float | None) -> None:
    """Gates of the units ``plan`` drops to exactly 0; kept ones to exactly 1 (``kept=inf``) or left as they are."""
    keep = plan.keep_masks(find_blocks(tiny_vit()))  # shapes only
    with torch.no_grad():
        for name in gates.names:
            for i, k in enumerate(keep[name]):
                logit = gates.logits[f"{name}_{i}"]
                logit[k == 0] = -torch.inf
                if kept is not None:
                    logit[k == 1] = kept


def test_a_gate_at_exactly_zero_is_the_structure_removed(images):
    model = tiny_vit(seed=2)
    blocks = find_blocks(model)
    gates = LearnableGates(blocks)
    force(gates, PLAN, kept=torch.inf)
    gates.attach(blocks)
    with torch.no_grad():
        gated = model(images)
    gates.detach()
    with torch.no_grad():
        pruned = apply_plan(model, PLAN)(images)
    assert (gated - pruned).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", GATE_KINDS)
def test_folded_export_computes_what_the_gated_model_computed(kind, images, tmp_path):
    model = tiny_vit(seed=2)
    blocks = find_blocks(model)
    gates = LearnableGates(blocks, kind=kind).eval()  # hard-concrete: the deterministic evaluation gates
    torch.manual_seed(1)
    with torch.no_grad():
        for logit in gates.logits.values():
            logit.copy_(torch.randn_like(logit) * 2)
    budget = Budget(0.4, count_params(model))
    plan = plan_from_gates(gates, blocks, budget)
    force(gates, plan, kept=None)  # the gated model at the cut: dropped units at exactly 0
    gates.attach(blocks)
    with torch.no_grad():
        gated = model(images)
    fold_gates(gates, blocks, plan)
    apply_plan(model, plan)
    save_pruned(tmp_path / "pruned", model, plan, "vit_tiny_patch16_224", KWARGS, DATA)
    with torch.no_grad():
        exported = load_pruned(tmp_path / "pruned")(images)
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert (gated - exported).abs().max() <= 1e-5


@pytest.mark.parametrize("sparsity", [0.2, 0.4, 0.6])
def test_the_cut_meets_the_budget_exactly_and_drops_the_lowest_gates(sparsity):
    model = tiny_vit()
    blocks = find_blocks(model)
    gates = LearnableGates(blocks)
    torch.manual_seed(0)
    with torch.no_grad():
        for logit in gates.logits.values():
            logit.copy_(torch.randn_like(logit))
    budget = Budget(sparsity, count_params(model))
    plan = plan_from_gates(gates, blocks, budget)
    smallest = min(budget.cost(name, b) for name in gates.names for b in blocks)
    assert budget.target <= removed_cost(blocks, plan, budget) < budget.target + smallest
    # within a block and structure, every dropped unit's gate is below every kept unit's
    for name in gates.names:
        for b, kept in zip(blocks, plan.kept[name], strict=True):
            g = gates.value(name, b.index).detach()
            dropped = [j for j in range(g.numel()) if j not in kept]
            if dropped:
                assert g[dropped].max() <= g[list(kept)].min()


def real_batches(n: int = 128, batch: int = 32):
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)])
    dataset = ImageFolder(str(SUBSET / "train"), transform=transform)
    picks = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    xs, ys = zip(*(dataset[int(i)] for i in picks), strict=True)
    x, y = torch.stack(xs), torch.tensor(ys)
    return list(zip(x.split(batch), y.split(batch), strict=True))


@pytest.mark.parametrize(("kind", "epochs"), [("sigmoid", 3), ("hard_concrete", 5)])
def test_gates_train_toward_the_budget_on_real_images(kind, epochs):
    """Hard-concrete gates start further from their threshold (P(gate != 0) = 0.996 at logit 3): more steps."""
    torch.manual_seed(0)
    model = tiny_vit().train()
    blocks = find_blocks(model)
    gates = LearnableGates(blocks, kind=kind)
    gates.attach(blocks)
    budget = Budget(0.4, count_params(model))
    start = float(expected_removed(gates, blocks, budget).detach())
    optimizer = torch.optim.Adam(
        [{"params": model.parameters(), "lr": 1e-3}, {"params": gates.parameters(), "lr": 0.3}]
    )
    before = {k: v.detach().clone() for k, v in gates.logits.items()}
    for _ in range(epochs):
        for x, y in real_batches():
            loss = F.cross_entropy(model(x), y) + 50.0 * budget_penalty(gates, blocks, budget)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    end = float(expected_removed(gates, blocks, budget).detach())
    assert start < 0.2 * budget.target and end > 0.5 * budget.target  # the expected cost fell toward the budget
    moved = [float((gates.logits[k].detach() - before[k]).abs().max()) for k in before]
    assert min(moved) > 0.1  # every gate group moved
    assert float(budget_penalty(gates, blocks, budget).detach()) < (budget.target - start) / budget.total


def test_seeding_from_a_ranking_orders_the_starting_gates():
    blocks = find_blocks(tiny_vit())
    gates = LearnableGates(blocks)
    heads = [torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64) for _ in blocks]
    gates.seed({"heads": heads})
    g = gates.value("heads", 0).detach()
    assert torch.all(g[1:] > g[:-1])
    assert torch.equal(gates.value("neurons", 0), torch.sigmoid(torch.full((256,), 3.0)))


def test_only_the_competing_structures_are_gated(images):
    model = tiny_vit(seed=2)
    blocks = find_blocks(model)
    gates = LearnableGates(blocks, structures="heads")
    assert set(gates.logits) == {"heads_0", "heads_1", "heads_2"}
    budget = Budget(0.1, count_params(model))
    plan = plan_from_gates(gates, blocks, budget)
    assert plan.mlp_hidden_per_block == [256, 256, 256]  # neurons neither gated nor cut
    fold_gates(gates, blocks, plan)
    assert torch.equal(model.blocks[0].mlp.fc2.weight, tiny_vit(seed=2).blocks[0].mlp.fc2.weight)
    uniform = plan_from_gates(LearnableGates(blocks), blocks, Budget(0.4, budget.total), allocation="uniform")
    assert len(set(uniform.heads_per_block)) == 1  # the same share in every block


def test_hard_concrete_gates_are_exactly_0_or_1_at_the_ends_and_their_keep_probability_is_the_sampled_one():
    blocks = find_blocks(tiny_vit())
    gates = LearnableGates(blocks, kind="hard_concrete", structures="heads")
    with torch.no_grad():
        gates.logits["heads_0"].copy_(torch.tensor([-6.0, -0.5, 0.5, 6.0]))
    gates.eval()
    assert gates.value("heads", 0)[0] == 0 and gates.value("heads", 0)[3] == 1  # exact, not 0.002 / 0.998
    assert torch.equal(gates.forward_gate("heads", 0), gates.value("heads", 0))  # evaluation: no noise
    gates.train()
    torch.manual_seed(0)
    samples = torch.stack([gates.forward_gate("heads", 0).detach() for _ in range(20000)])
    assert samples.min() == 0 and samples.max() == 1
    middle = samples[:, 1:3]
    assert ((middle > 0) & (middle < 1)).any() and (middle == 0).any() and (middle == 1).any()
    # the expected cost's keep probability is what the sampler does: P(gate != 0)
    observed = (samples > 0).double().mean(0)
    expected = gates.keep_probability("heads", 0).detach().double()
    assert torch.allclose(observed, expected, atol=0.01), (observed, expected)
    # and the cut orders by it: no ties where both ends are clamped
    assert torch.all(expected[1:] > expected[:-1])
