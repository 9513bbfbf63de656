import pytest
import torch

from gohsp_lightning.pruning import AdmmState, Budget, StructuredProjector, count_params, find_blocks, prunable_weights


def test_penalty_value_and_gradient(model):
    weights = prunable_weights(find_blocks(model))
    state = AdmmState(weights, rho=0.5)
    gen = torch.Generator().manual_seed(0)
    for n in state.names:
        state.z(n).copy_(torch.randn(state.z(n).shape, generator=gen))
        state.u(n).copy_(torch.randn(state.u(n).shape, generator=gen))
    penalty = state.penalty(weights)
    expected = sum(0.25 * (weights[n] - state.z(n) + state.u(n)).pow(2).sum() for n in state.names)
    torch.testing.assert_close(penalty, expected.to(penalty.dtype))
    penalty.backward()
    w = model.blocks[1].mlp.fc1.weight
    torch.testing.assert_close(w.grad, 0.5 * (w - state.z("1.fc1.weight") + state.u("1.fc1.weight")).detach())


def test_z_is_structured_sparse_and_u_accumulates_the_gap(model):
    blocks = find_blocks(model)
    weights = prunable_weights(blocks)
    projector = StructuredProjector(blocks, Budget(0.4, count_params(model)))
    state = AdmmState(weights, rho=1e-3)
    state.reset(weights, projector)
    assert bool(state.initialized)
    assert all(float(state.u(n).abs().sum()) == 0 for n in state.names)
    state.update(weights, projector)
    plan = projector.last_plan
    dropped = [n for n in range(256) if n not in plan.neurons[0]]
    assert dropped, "the projection must drop neurons of block 0 at 40%"
    z = state.z("0.fc1.weight")
    assert float(z[dropped].abs().sum()) == 0
    kept = list(plan.neurons[0])
    torch.testing.assert_close(z[kept], weights["0.fc1.weight"].detach()[kept])
    # U = 0 + W - Z: the removed groups' weights, zero elsewhere
    torch.testing.assert_close(state.u("0.fc1.weight")[dropped], weights["0.fc1.weight"].detach()[dropped])
    assert int(state.updates) == 1


def test_rho_growth_keeps_the_unscaled_dual(model):
    weights = prunable_weights(find_blocks(model))
    state = AdmmState(weights, rho=1e-3)
    state.u("0.fc2.weight").fill_(2.0)
    state.scale_rho(10.0, limit=1.0)
    assert float(state.rho) == 1e-2
    torch.testing.assert_close(
        state.u("0.fc2.weight") * state.rho.float(), torch.full_like(state.u("0.fc2.weight"), 2e-3)
    )


def _random_state(weights, rho):
    state = AdmmState(weights, rho=rho)
    gen = torch.Generator().manual_seed(1)
    for n in state.names:
        state.z(n).copy_(torch.randn(state.z(n).shape, generator=gen))
        state.u(n).copy_(torch.randn(state.u(n).shape, generator=gen))
    return state


def test_penalty_gradient_adds_to_the_task_gradient_and_leaves_z_u_alone(model, images):
    weights = prunable_weights(find_blocks(model))
    state = _random_state(weights, rho=0.1)
    z_u = {n: (state.z(n).clone(), state.u(n).clone()) for n in state.names}
    model(images).logsumexp(-1).mean().backward()
    task_grads = {n: w.grad.clone() for n, w in weights.items()}
    model.zero_grad()
    (model(images).logsumexp(-1).mean() + state.penalty(weights)).backward()
    for n, w in weights.items():
        z, u = z_u[n]
        torch.testing.assert_close(w.grad, task_grads[n] + 0.1 * (w.detach() - z + u))
        assert torch.equal(state.z(n), z) and torch.equal(state.u(n), u)


def test_penalty_without_grad_and_with_frozen_weights(model):
    weights = prunable_weights(find_blocks(model))
    state = _random_state(weights, rho=0.5)
    with torch.no_grad():
        value = state.penalty(weights)
    assert not value.requires_grad
    expected = sum(0.25 * (weights[n] - state.z(n) + state.u(n)).pow(2).sum() for n in state.names)
    torch.testing.assert_close(value, expected.detach())
    model.blocks[0].mlp.fc1.weight.requires_grad_(False)
    state.penalty(weights).backward()
    assert model.blocks[0].mlp.fc1.weight.grad is None
    assert model.blocks[1].mlp.fc1.weight.grad is not None


def test_second_backward_through_the_penalty_is_refused(model):
    weights = prunable_weights(find_blocks(model))
    penalty = _random_state(weights, rho=0.5).penalty(weights)
    penalty.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass per call"):
        penalty.backward()
