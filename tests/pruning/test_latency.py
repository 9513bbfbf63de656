"""Latency tables and the latency budget: mechanics on a measured tiny table and on hand-made tables.

No assertion here depends on how fast this machine is: speed claims are checked by scripts/benchmark.py.
"""

import copy
import json

import pytest
import torch

from gohsp_lightning.pruning import PrunePlan, count_params, find_blocks, latency, num_tokens, project
from gohsp_lightning.pruning.latency import (
    BLOCK_STRUCTURES,
    TABLE_FORMAT,
    LatencyTable,
    cache_path,
    latency_budget,
    measure_latency_table,
    table_key,
    without_parts,
)
from gohsp_lightning.pruning.projection import removed_cost
from gohsp_lightning.pruning.structures import block_weights

from ..conftest import tiny_vit


@pytest.fixture(scope="module")
def measured():
    model = tiny_vit()
    key = table_key("tiny", torch.device("cpu"), "fp32", 4, (3, 32, 32))
    table = measure_latency_table(model, key, torch.device("cpu"), torch.float32, 4, (3, 32, 32), 16, 4, 0.005, 3)
    return model, table


def test_the_table_is_timed_at_the_threads_the_model_will_run_with():
    """The key says ``cpu xN threads``: every part and the whole model must run with N threads (a timer that
    drops to one thread, as ``torch.utils.benchmark.Timer`` does by default, measures another machine)."""
    model = tiny_vit(depth=1)
    seen: set[int] = set()
    for module in model.modules():
        module.register_forward_pre_hook(lambda *_: seen.add(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        key = table_key("tiny", torch.device("cpu"), "fp32", 2, (3, 32, 32))
        assert key["device"] == "cpu x2 threads"
        measure_latency_table(model, key, torch.device("cpu"), torch.float32, 2, (3, 32, 32), 16, 2, 0.0, 1)
    finally:
        torch.set_num_threads(before)
    assert seen == {2}


def test_a_measured_table_covers_every_structure_and_block(measured, tmp_path):
    model, table = measured
    blocks = find_blocks(model)
    table.check(blocks)
    assert table.widths["heads"] == [[1, 2, 3, 4]] * 3  # every head count
    assert all(w[-1] == 256 and all(c % 16 == 0 for c in w) for w in table.widths["neurons"])
    assert all(t > 0 for per_block in table.times.values() for times in per_block for t in times)
    # monotone in width, whatever the timing noise (the medians are fitted non-decreasing)
    assert all(a <= b for per_block in table.times.values() for t in per_block for a, b in zip(t, t[1:]))
    parts = sum(t[-1] for p in table.times.values() for t in p)
    assert table.dense == pytest.approx(table.fixed + table.scale * parts)
    assert table.fixed > 0 and table.scale > 0 and table.key["format"] == TABLE_FORMAT
    again = LatencyTable.load(table.save(cache_path(tmp_path, table.key)))
    assert again == table and again.key["device"].startswith("cpu")
    with pytest.raises(ValueError, match=r"latency table 'tiny' has heads \[4, 4, 4\], the model has \[6, 6\]"):
        table.check(find_blocks(tiny_vit(depth=2, num_heads=6, embed_dim=96)))


def test_the_fixed_part_is_the_model_whose_attention_and_mlp_answer_zeros():
    """Every block reduces to its residual path (x + 0 + 0), so the rest is the embedding, final norm and head."""
    model = tiny_vit().eval()
    rest = without_parts(copy.deepcopy(model))
    attn_mlp = sum(count_params(m) for b in find_blocks(model) for m in (b.attn, b.mlp))
    assert count_params(rest) == count_params(model) - attn_mlp
    images = torch.randn(2, 3, 32, 32)
    no_blocks = copy.deepcopy(model)
    no_blocks.blocks = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(rest(images), no_blocks(images))


def test_a_model_timed_no_slower_than_its_rest_keeps_the_parts_as_timed_alone(monkeypatch):
    """Noise can time the whole model no slower than its fixed rest; the scale would then be 0 or negative and
    every unit free. The table falls back to the parts as timed alone, and still predicts the model's time."""

    def clock(fns, *args, **kwargs):
        return {name: 0.010 if name in ("model", "rest") else 0.001 for name in fns}

    monkeypatch.setattr(latency, "interleaved", clock)
    key = table_key("tiny", torch.device("cpu"), "fp32", 2, (3, 32, 32))
    table = measure_latency_table(tiny_vit(), key, torch.device("cpu"), torch.float32, 2, (3, 32, 32), 16, 2)
    assert table.scale == 1.0 and table.dense == pytest.approx(0.010)
    assert all(table.unit_cost("heads", b) >= 0 for b in range(3))


def test_a_table_without_a_scale_loads_as_format_1(measured, tmp_path):
    _, table = measured
    data = json.loads(table.save(tmp_path / "t.json").read_text())
    del data["scale"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = LatencyTable.load(tmp_path / "old.json")
    assert old.scale == 1.0 and old.dense == pytest.approx(
        old.fixed + sum(t[-1] for p in old.times.values() for t in p)
    )


def handmade(blocks, head_cost: list[float], neuron_cost: list[float], fixed: float = 1e-4) -> LatencyTable:
    """A table linear in kept units, with the given seconds per head and per neuron in every block."""
    widths = {name: [list(range(1, s.size(b) + 1)) for b in blocks] for name, s in BLOCK_STRUCTURES.items()}
    per_unit = {"heads": head_cost, "neurons": neuron_cost}
    times = {name: [[c * k for k in w] for c, w in zip(per_unit[name], widths[name], strict=True)] for name in widths}
    return LatencyTable(key={"model": "handmade"}, widths=widths, times=times, fixed=fixed)


def test_prediction_interpolates_and_the_budget_is_met_in_latency(tmp_path):
    model = tiny_vit()
    blocks = find_blocks(model)
    table = handmade(blocks, [4e-5, 1e-5, 1e-5], [1e-7, 1e-7, 4e-7])
    plan = PrunePlan(heads=((0,), (0, 1), (0, 1, 2, 3)), neurons=(tuple(range(128)), tuple(range(256)), (0,)))
    expected = 1e-4 + (4e-5 * 1 + 1e-5 * 2 + 1e-5 * 4) + (1e-7 * 128 + 1e-7 * 256 + 4e-7 * 1)
    assert table.predict_plan(plan) == pytest.approx(expected)
    budget = latency_budget(0.3, table, num_tokens(model))
    planned = project(blocks, [block_weights(b) for b in blocks], budget)
    smallest = min(budget.cost(name, b) for name in BLOCK_STRUCTURES for b in blocks)
    assert budget.target <= removed_cost(blocks, planned, budget) < budget.target + smallest
    removed = 1 - table.predict_plan(planned) / table.dense
    assert removed == pytest.approx(0.3, abs=smallest / budget.total + 1e-9)


def test_latency_costs_steer_the_cut_to_where_time_is():
    model = tiny_vit()
    blocks = find_blocks(model)
    weights = [block_weights(b) for b in blocks]
    # the same weights; only the latency of block 2's MLP differs between the two tables
    slow_mlp = latency_budget(0.3, handmade(blocks, [1e-5] * 3, [1e-7, 1e-7, 1e-6]))
    even = latency_budget(0.3, handmade(blocks, [1e-5] * 3, [1e-7, 1e-7, 1e-7]))
    assert (
        project(blocks, weights, slow_mlp).mlp_hidden_per_block[2]
        < project(blocks, weights, even).mlp_hidden_per_block[2]
    )


def test_a_latency_budget_without_a_table_is_refused():
    from gohsp_lightning.pruning import Budget

    blocks = find_blocks(tiny_vit())
    with pytest.raises(ValueError, match="pruning.budget=latency needs a latency table"):
        Budget(0.3, count_params(tiny_vit()), "latency").cost("heads", blocks[0])


def test_a_table_file_that_is_not_one_is_named(tmp_path):
    bad = tmp_path / "table.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match=r"pruning.latency_table='.*table.json' is not a latency table"):
        LatencyTable.load(bad)
    with pytest.raises(FileNotFoundError, match="no such file"):
        LatencyTable.load(tmp_path / "missing.json")
