"""Latency tables: measured forward time of every block's structures as a function of the units kept.

For each structure (attention for heads, MLP for neurons) and each distinct block shape, the table holds
the time of that sub-module on ``[batch, tokens, dim]`` input at sampled kept counts (all head counts; a
few MLP widths, multiples of ``round_to``), measured on the chosen device, dtype and batch size with
``torch.utils.benchmark``. The rest of the model (patch embedding, norms, residual adds, head) is one
fixed time: the dense model's measured time minus its blocks' parts. A plan's latency is the fixed time
plus every block's interpolated parts; the projection (``Budget(unit="latency")``) removes a unit at its
block's average cost per unit, so ``pruning.sparsity`` is the fraction of the dense latency removed.

Blocks of the same shape run the same kernels, so each distinct shape is timed once (a dense ViT: once).
Tables are cached as JSON keyed by model, device name, dtype, batch size, input size and torch version.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import benchmark

from .files import atomic_write_json
from .plan import PrunePlan
from .projection import Budget
from .structures import STRUCTURES
from .units import BlockUnits, block_units, find_blocks, num_tokens

# a table times each block's sub-modules: residual channels cross every block and are not in it
BLOCK_STRUCTURES = {name: s for name, s in STRUCTURES.items() if not s.shared}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class LatencyTable:
    """Seconds per batch: ``times[structure][block][i]`` at ``widths[structure][block][i]`` kept units."""

    key: dict[str, Any]
    widths: dict[str, list[list[int]]]
    times: dict[str, list[list[float]]]
    fixed: float

    def part(self, structure: str, block: int, kept: int) -> float:
        """Time of ``structure``'s sub-module of ``block`` with ``kept`` units (linear between samples)."""
        return float(np.interp(kept, self.widths[structure][block], self.times[structure][block]))

    def predict(self, counts: dict[str, list[int]]) -> float:
        """Predicted seconds per batch of a model whose block i keeps ``counts[structure][i]`` units."""
        return self.fixed + sum(
            self.part(name, block, kept) for name, per_block in counts.items() for block, kept in enumerate(per_block)
        )

    def predict_plan(self, plan: PrunePlan) -> float:
        dense = {name: [w[-1] for w in self.widths[name]] for name in self.widths}
        return self.predict({**dense, **{name: plan.counts(name) for name in plan.kept if name in self.widths}})

    @property
    def dense(self) -> float:
        return self.predict({name: [w[-1] for w in self.widths[name]] for name in self.widths})

    @property
    def fewest(self) -> float:
        """Predicted seconds with every structure at its fewest sampled units: ``1 - fewest / dense`` is the
        most of the latency any plan can remove on this device (the rest is the model's fixed part)."""
        return self.predict({name: [w[0] for w in self.widths[name]] for name in self.widths})

    def unit_cost(self, structure: str, block: int) -> float:
        """Average seconds one unit of ``structure`` costs in ``block`` (between the fewest and all units sampled)."""
        widths, times = self.widths[structure][block], self.times[structure][block]
        if widths[-1] == widths[0]:
            return max(times[-1], 0.0) / max(widths[-1], 1)
        return max((times[-1] - times[0]) / (widths[-1] - widths[0]), 0.0)

    def check(self, blocks: list[BlockUnits]) -> None:
        """Raise a one-line ValueError if the table was measured on other block shapes than ``blocks``."""
        for name, s in BLOCK_STRUCTURES.items():
            have = [w[-1] for w in self.widths.get(name, [])]
            want = [s.size(b) for b in blocks]
            if have != want:
                raise ValueError(f"latency table {self.key.get('model')!r} has {name} {have}, the model has {want}")

    def save(self, path: str | Path) -> Path:
        atomic_write_json(Path(path), asdict(self))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(key=data["key"], widths=data["widths"], times=data["times"], fixed=float(data["fixed"]))
        except FileNotFoundError:
            raise FileNotFoundError(f"pruning.latency_table={str(path)!r}: no such file") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"pruning.latency_table={str(path)!r} is not a latency table ({err})") from None


def table_key(
    model_name: str,
    device: torch.device,
    dtype: str,
    batch_size: int,
    input_size: tuple[int, ...],
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a table depends on; tables measured under another key do not transfer."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    return {
        "model": model_name,
        "model_kwargs": dict(model_kwargs or {}),
        "device": name,
        "dtype": dtype,
        "batch_size": batch_size,
        "input_size": list(input_size),
        "torch": torch.__version__,
    }


def cache_path(cache_dir: str | Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{key['model']}-{digest}.json"


def _time(fn: Any, min_run_time: float) -> float:
    """Median seconds per call (``torch.utils.benchmark`` synchronises CUDA and picks the repeat count)."""
    fn()  # warm-up
    return float(benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median)


def _sampled_counts(size: int, aligned: bool, round_to: int, samples: int) -> list[int]:
    if not aligned or size <= samples:
        return list(range(1, size + 1))
    step = max(round_to, 1)
    counts = {min(size, max(step, int(round(size * (i + 1) / samples / step)) * step)) for i in range(samples)}
    return sorted(counts | {min(step, size), size})  # the narrowest width a block may keep, and the full one


@torch.no_grad()
def measure_latency_table(
    model: nn.Module,
    key: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int,
    input_size: tuple[int, ...],
    round_to: int = 1,
    samples: int = 8,
    min_run_time: float = 0.2,
) -> LatencyTable:
    """Time every structure's sub-module of every distinct block shape at sampled kept counts, and the model."""
    model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    blocks = find_blocks(model)
    tokens = num_tokens(model)
    measured: dict[tuple[Any, ...], tuple[list[int], list[float]]] = {}
    widths: dict[str, list[list[int]]] = {name: [] for name in BLOCK_STRUCTURES}
    times: dict[str, list[list[float]]] = {name: [] for name in BLOCK_STRUCTURES}
    for b in blocks:
        x = torch.randn(batch_size, tokens, b.dim, device=device, dtype=dtype)
        for name, s in BLOCK_STRUCTURES.items():
            shape = (name, b.dim, b.num_heads, b.head_dim, b.hidden)
            if shape not in measured:
                counts = _sampled_counts(s.size(b), s.aligned, round_to, samples)
                seconds = []
                for kept in counts:
                    part = copy.deepcopy(nn.ModuleDict({"attn": b.attn, "mlp": b.mlp}))
                    units = block_units(b.index, part["attn"], part["mlp"])
                    if kept < s.size(b):
                        s.cut(units, torch.arange(kept))
                    seconds.append(_time(lambda m=s.module(units): m(x), min_run_time))
                measured[shape] = (counts, seconds)
            counts, seconds = measured[shape]
            widths[name].append(list(counts))
            times[name].append(list(seconds))
    images = torch.randn(batch_size, *input_size, device=device, dtype=dtype)
    whole = _time(lambda: model(images), min_run_time)
    parts = sum(t[b.index][-1] for t in times.values() for b in blocks)
    return LatencyTable(key=key, widths=widths, times=times, fixed=whole - parts)


def measure_model(
    model: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int,
    input_size: tuple[int, ...],
    min_run_time: float = 0.5,
) -> float:
    """Median seconds per batch of ``model`` (a copy, in eval mode) on random input."""
    model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    images = torch.randn(batch_size, *input_size, device=device, dtype=dtype)
    with torch.no_grad():
        return _time(lambda: model(images), min_run_time)


def latency_budget(sparsity: float, table: LatencyTable, tokens: int = 0) -> Budget:
    """Remove ``sparsity`` of the dense model's predicted latency (costs in ns, from ``table``)."""
    return Budget(sparsity, max(1, round(table.dense * 1e9)), "latency", tokens, latency=table)
