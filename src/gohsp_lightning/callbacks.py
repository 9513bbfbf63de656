"""Callbacks: head ranking at the start of the ADMM stage, and the runtime check that all ranks agree.

:class:`HeadRankingCallback`: every rank computes the scores on the same calibration images (fixed order,
not sharded); the result is then broadcast from rank 0 so that float noise cannot split a tie differently
on two ranks. The scores before the broadcast are kept in ``local_scores`` so that agreement can be checked.

:class:`RankAgreementCallback`: all-gathers digests of what must be identical on every rank (plan, head
scores, Z/U, masks, weights) and fails loudly when they differ, leaving per-rank evidence in ``ranks/``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.nn.parallel import DistributedDataParallel

from .config import RankingConfig
from .pruning.files import atomic_write_json
from .pruning.rankers import rank_heads


def broadcast_from_rank_zero(strategy: Strategy, tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``tensor`` on every rank, on the caller's own device.

    A CPU copy travels: Lightning's ``broadcast`` pickles objects, and a CUDA tensor would unpickle onto rank 0's
    device on every rank (an extra CUDA context and memory on GPU 0 per rank)."""
    return strategy.broadcast(tensor.detach().cpu(), src=0).to(tensor.device)


class HeadRankingCallback(Callback):
    """Ranks heads on ``on_train_start`` (and every ``every_n_epochs`` if > 0), then hands them to the module."""

    def __init__(
        self,
        batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
        cfg: RankingConfig,
        ranker: str,
    ) -> None:
        self.batches, self.cfg, self.ranker = batches, cfg, ranker
        self.ranked_epochs: list[int] = []
        self.local_scores: list[torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return f"HeadRankingCallback[{self.ranker}]"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a stage resumed mid-way restored ranked_epochs (and the module its scores): no re-ranking then
        if not self.ranked_epochs:
            self.rank(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        every, epoch = self.cfg.every_n_epochs, trainer.current_epoch
        if every > 0 and epoch > 0 and epoch % every == 0 and epoch not in self.ranked_epochs:
            self.rank(trainer, pl_module)

    def rank(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Score the heads and hand them to the module, leaving the RNGs as they were.

        Iterating the calibration loader draws from torch's global RNG; without the fork, a ranker that reads
        data (graph, taylor) would train on other batches and augmentations than one that does not
        (magnitude, random), and a comparison of rankers would also compare random streams.
        """
        device = pl_module.device
        # under the stage's own precision (bf16-mixed: autocast), like its training steps; statistics stay float64
        with (
            torch.random.fork_rng(devices=[] if device.type == "cpu" else [device], device_type=device.type),
            trainer.precision_plugin.forward_context(),
        ):
            scores = rank_heads(
                self.ranker,
                pl_module.model,
                pl_module.blocks,
                self.batches,
                self.cfg.graph_options(),
            )
        self.ranked_epochs.append(trainer.current_epoch)
        if scores is None:
            pl_module.set_head_scores(None)
            return
        self.local_scores = [s.clone() for s in scores]
        flat = broadcast_from_rank_zero(trainer.strategy, torch.cat(scores).to(torch.float64))
        pl_module.set_head_scores(flat)
        per_block = [s.tolist() for s in flat.cpu().split([b.num_heads for b in pl_module.blocks])]
        self.history.append({"epoch": trainer.current_epoch, "scores": per_block})
        rank_zero_info(
            f"[gohsp] ranked heads ({self.ranker}) at epoch {trainer.current_epoch}: "
            f"min {flat.min().item():.3f}, max {flat.max().item():.3f}"
        )

    def state_dict(self) -> dict[str, Any]:
        local = None if self.local_scores is None else [s.tolist() for s in self.local_scores]
        return {"ranked_epochs": list(self.ranked_epochs), "history": list(self.history), "local_scores": local}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.ranked_epochs = list(state_dict.get("ranked_epochs", []))
        self.history = list(state_dict.get("history", []))
        local = state_dict.get("local_scores")
        self.local_scores = None if local is None else [torch.tensor(s, dtype=torch.float64) for s in local]


def digest(*parts: torch.Tensor | dict[str, Any] | list[Any] | None) -> str:
    """sha256 over tensors (dtype, shape and bytes) and JSON-safe values: equal digests mean equal bits."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.flatten().view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()


class RankAgreementCallback(Callback):
    """Checks at runtime, on every rank, that the ranks hold the same plan, head scores, Z/U, masks and weights.

    * ``setup`` (before DDP wraps the model): the plan the stage starts from, i.e. the pruned shapes, so a
      mismatch is named here rather than surfacing as a DDP shape error;
    * ``on_train_end``: exact digests of the final plan (the projection of the trained weights), the
      broadcast head scores, every module buffer (Z, U, masks, scores) and the weights; the head scores
      each rank computed *before* the broadcast are compared within ``tolerance`` (a warning: the broadcast
      makes them agree, but a large gap means the calibration data or the model differs between ranks).

    Every rank writes ``<directory>/<stage>.rank<r>.json`` (its plan and scores); rank 0 writes
    ``<directory>/<stage>.json`` with the verdict, which the summary reports. A mismatch raises
    RuntimeError on every rank (all see the same gathered digests, so none waits on another).
    """

    def __init__(
        self, directory: str | Path, ranking: HeadRankingCallback | None = None, tolerance: float = 1e-4
    ) -> None:
        self.directory, self.ranking, self.tolerance = Path(directory), ranking, tolerance

    def _gather(self, trainer: L.Trainer, values: torch.Tensor) -> torch.Tensor:
        """``values`` from every rank as a (world_size, ...) tensor."""
        gathered = trainer.strategy.all_gather(values.to(trainer.strategy.root_device))
        return (gathered if gathered.dim() > values.dim() else gathered.unsqueeze(0)).cpu()

    def _compare(self, trainer: L.Trainer, digests: dict[str, str]) -> dict[str, list[str]]:
        """Per-rank digests of every entry; the entries whose digests differ between ranks are returned."""
        as_ints = torch.tensor([int(d[:15], 16) for d in digests.values()], dtype=torch.int64)
        gathered = self._gather(trainer, as_ints)
        return {
            name: [f"{int(v):015x}" for v in gathered[:, i]]
            for i, name in enumerate(digests)
            if not bool((gathered[:, i] == gathered[0, i]).all())
        }

    @staticmethod
    def _fail(stage: str, where: str, differ: dict[str, list[str]]) -> None:
        detail = "; ".join(f"{name}: {', '.join(per_rank)}" for name, per_rank in differ.items())
        raise RuntimeError(f"ranks disagree {where} of the {stage} stage on {', '.join(differ)} ({detail})")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        plan = getattr(pl_module, "plan", None)
        if stage == "fit" and plan is not None:
            differ = self._compare(trainer, {"plan": digest(plan.to_dict())})
            if differ:
                self._fail(pl_module.stage, "at the start", differ)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = trainer.strategy.model
        if isinstance(model, DistributedDataParallel) and model.broadcast_buffers:
            rank_zero_warn(
                "DDP broadcast_buffers=True re-sends every module buffer (Z, U and masks: weight-sized) from rank 0 "
                "on each forward; they are identical on every rank by construction: set "
                "trainer.strategy.broadcast_buffers=false (conf/trainer/ddp.yaml does)"
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stage = pl_module.stage
        plan = pl_module.final_plan() if stage == "admm" else pl_module.plan
        plan_dict = None if plan is None else plan.to_dict()
        scores = pl_module.head_scores if bool(pl_module.head_scores_set) else None
        buffers = dict(pl_module.named_buffers())
        digests = {
            "plan": digest(plan_dict),
            "head_scores": digest(scores),
            "buffers": digest(*(buffers[k] for k in sorted(buffers))),
            "weights": digest(*(p for _, p in sorted(pl_module.model.named_parameters()))),
        }
        gates = getattr(pl_module, "gates", None)
        if gates is not None:  # learnable gates are parameters: DDP must keep them equal like the weights
            digests["gates"] = digest(*(p for _, p in sorted(gates.named_parameters())))
        differ = self._compare(trainer, digests)
        local = self.ranking.local_scores if self.ranking is not None else None
        max_gap = None
        if local is not None:
            gathered = self._gather(trainer, torch.cat(local).to(torch.float64))
            max_gap = float((gathered - gathered[0]).abs().max())
        ddp = trainer.strategy.model
        report = {
            "stage": stage,
            "world_size": trainer.world_size,
            "agree": not differ,
            "digests": digests,
            "differ": differ,
            "local_scores_max_gap": max_gap,
            "broadcast_buffers": ddp.broadcast_buffers if isinstance(ddp, DistributedDataParallel) else None,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        evidence = {
            **report,
            "rank": trainer.global_rank,
            "plan": plan_dict,
            "head_scores": None if scores is None else scores.tolist(),
            "local_scores": None if local is None else torch.cat(local).tolist(),
        }
        atomic_write_json(self.directory / f"{stage}.rank{trainer.global_rank}.json", evidence)
        if trainer.is_global_zero:
            atomic_write_json(self.directory / f"{stage}.json", report)
        trainer.strategy.barrier("rank-agreement")
        if max_gap is not None and max_gap > self.tolerance:
            rank_zero_warn(
                f"head scores computed on different ranks differ by up to {max_gap:.3g} before the broadcast "
                f"(tolerance {self.tolerance}); check that every rank sees the same calibration images"
            )
        if differ:
            self._fail(stage, "at the end", differ)
        rank_zero_info(f"[gohsp] {stage}: the {trainer.world_size} rank(s) agree on plan, scores, Z/U and weights")
