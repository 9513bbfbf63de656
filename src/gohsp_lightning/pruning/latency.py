"""Latency tables: measured forward time of every block's structures as a function of the units kept.

For each structure (attention for heads, MLP for neurons) and each distinct block shape, the table holds
the time of that sub-module on ``[batch, tokens, dim]`` input at sampled kept counts (all head counts; a
few MLP widths, multiples of ``round_to``), measured on the chosen device, dtype and batch size at the
process's thread count, fitted non-decreasing in width (isotonic regression of the medians). The rest of
the model (patch embedding, norms, residual adds, head) is one fixed time, measured as the model with
every block's attention and MLP answering zeros. Inside the model the parts do not run exactly as alone
(DeiT-Small on a CPU: 3-7% slower), so one ``scale`` maps their isolated times onto the model:
``fixed + scale * parts`` is the dense model's measured time. Every part, the rest and the whole model are
timed in the same interleaved rounds (``timing.interleaved``), so a machine whose speed drifts while the
table is measured shifts them alike. A plan's latency is the fixed time plus ``scale`` times every block's
interpolated parts; the projection (``Budget(unit="latency")``) removes a unit at its block's average cost
per unit, so ``pruning.sparsity`` is the fraction of the dense latency removed.

Blocks of the same shape run the same kernels, so each distinct shape is timed once (a dense ViT: once).
Tables are cached as JSON keyed by table format, model, device name, dtype, batch size, input size and torch
version.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import isotonic_regression
from torch import nn

from .files import atomic_write_json
from .plan import PrunePlan
from .projection import Budget
from .structures import STRUCTURES
from .timing import interleaved
from .units import BlockUnits, block_units, find_blocks, num_tokens

# a table times each block's sub-modules: residual channels cross every block and are not in it
BLOCK_STRUCTURES = {name: s for name, s in STRUCTURES.items() if not s.shared}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# 2: timed at the process's threads, in interleaved rounds, with a measured rest and a scale (a cache key with
# another format, or none, is another table: cached tables of format 1 are measured again)
TABLE_FORMAT = 2


@dataclass(frozen=True)
class LatencyTable:
    """Seconds per batch: ``times[structure][block][i]`` (timed alone; ``scale`` times that inside the model) at
    ``widths[structure][block][i]`` kept units, and the model's ``fixed`` rest."""

    key: dict[str, Any]
    widths: dict[str, list[list[int]]]
    times: dict[str, list[list[float]]]
    fixed: float
    scale: float = 1.0  # in-model time of a part / its isolated time (tables of format 1 had none)

    def part(self, structure: str, block: int, kept: int) -> float:
        """In-model time of ``structure``'s sub-module of ``block`` with ``kept`` units (linear between samples)."""
        return self.scale * float(np.interp(kept, self.widths[structure][block], self.times[structure][block]))

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
            return self.scale * max(times[-1], 0.0) / max(widths[-1], 1)
        return self.scale * max((times[-1] - times[0]) / (widths[-1] - widths[0]), 0.0)

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
            return cls(
                key=data["key"],
                widths=data["widths"],
                times=data["times"],
                fixed=float(data["fixed"]),
                scale=float(data.get("scale", 1.0)),
            )
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
        "format": TABLE_FORMAT,
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


def _shape(structure: str, block: BlockUnits) -> tuple[Any, ...]:
    """What a structure's part's time depends on: blocks alike in it are timed once."""
    return structure, block.dim, block.num_heads, block.head_dim, block.hidden


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
    min_sample_s: float = 0.05,
    repeats: int = 7,
) -> LatencyTable:
    """Time every structure's sub-module of every distinct block shape at sampled kept counts, and the model,
    in ``repeats`` interleaved rounds (medians)."""
    model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    blocks = find_blocks(model)
    tokens = num_tokens(model)
    counts: dict[tuple[Any, ...], list[int]] = {}
    fns: dict[str, Any] = {}
    for b in blocks:
        x = torch.randn(batch_size, tokens, b.dim, device=device, dtype=dtype)
        for name, s in BLOCK_STRUCTURES.items():
            shape = _shape(name, b)
            if shape in counts:
                continue
            counts[shape] = _sampled_counts(s.size(b), s.aligned, round_to, samples)
            for kept in counts[shape]:
                part = copy.deepcopy(nn.ModuleDict({"attn": b.attn, "mlp": b.mlp}))
                units = block_units(b.index, part["attn"], part["mlp"])
                if kept < s.size(b):
                    s.cut(units, torch.arange(kept))
                fns[repr((shape, kept))] = lambda m=s.module(units), x=x: m(x)
    images = torch.randn(batch_size, *input_size, device=device, dtype=dtype)
    rest = without_parts(copy.deepcopy(model))
    fns["model"] = lambda: model(images)
    fns["rest"] = lambda: rest(images)
    seconds = interleaved(fns, device, repeats, warmup=1, min_sample_s=min_sample_s, balanced=False)
    # more units never run faster: noise that says so would give units a negative cost
    fitted = {
        shape: isotonic_regression([seconds[repr((shape, kept))] for kept in kept_counts]).x.tolist()
        for shape, kept_counts in counts.items()
    }
    widths = {name: [list(counts[_shape(name, b)]) for b in blocks] for name in BLOCK_STRUCTURES}
    times = {name: [list(fitted[_shape(name, b)]) for b in blocks] for name in BLOCK_STRUCTURES}
    parts = sum(t[b.index][-1] for t in times.values() for b in blocks)
    scale = (seconds["model"] - seconds["rest"]) / parts if parts > 0 else 1.0
    if not (math.isfinite(scale) and scale > 0):
        # timing noise left no time for the blocks (a model that is nearly all fixed overhead): the parts count
        # as measured alone and the fixed part takes the rest, so the dense prediction is still the model's time
        return LatencyTable(key=key, widths=widths, times=times, fixed=seconds["model"] - parts)
    return LatencyTable(key=key, widths=widths, times=times, fixed=seconds["rest"], scale=scale)


class _Zeros(nn.Module):
    """Stands in for a block's attention or MLP: zeros of the input's shape, so the rest of the block (norms,
    residual adds, LayerScale) runs as it does around the real part."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(x)


def without_parts(model: nn.Module) -> nn.Module:
    """``model`` (modified in place) with every block's timed sub-modules (attention, MLP) answering zeros:
    what remains is the table's fixed part."""
    names = {id(module): name for name, module in model.named_modules()}
    for b in find_blocks(model):
        for s in BLOCK_STRUCTURES.values():
            parent, _, attr = names[id(s.module(b))].rpartition(".")
            setattr(model.get_submodule(parent), attr, _Zeros())
    return model


@torch.no_grad()
def measure_models(
    models: dict[str, nn.Module],
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int,
    input_size: tuple[int, ...],
    repeats: int = 7,
    min_sample_s: float = 0.2,
    warmup: int = 1,
) -> dict[str, float]:
    """Median seconds per batch of each model (a copy, in eval mode) on the same random input, timed in turns."""
    copies = {name: copy.deepcopy(m).to(device=device, dtype=dtype).eval() for name, m in models.items()}
    images = torch.randn(batch_size, *input_size, device=device, dtype=dtype)
    fns = {name: (lambda m=m: m(images)) for name, m in copies.items()}
    return interleaved(fns, device, repeats, warmup, min_sample_s)


def latency_budget(sparsity: float, table: LatencyTable, tokens: int = 0) -> Budget:
    """Remove ``sparsity`` of the dense model's predicted latency (costs in ns, from ``table``)."""
    return Budget(sparsity, max(1, round(table.dense * 1e9)), "latency", tokens, latency=table)
