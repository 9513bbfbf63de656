"""HeadRankingCallback: rank attention heads from real activations at the start of each ADMM stage.

Every rank computes the scores on the same calibration images (fixed order, not sharded); the result
is then broadcast from rank 0 so that float noise cannot split a tie differently on two ranks.
The scores before the broadcast are kept in ``local_scores`` so that agreement can be checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from .config import RankingConfig
from .pruning.rankers import rank_heads


class HeadRankingCallback(Callback):
    """Ranks heads on ``on_train_start`` (and every ``every_n_epochs`` if > 0), then hands them to the module."""

    def __init__(
        self,
        batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
        cfg: RankingConfig,
        ranker: str,
        seed: int = 0,
    ) -> None:
        self.batches, self.cfg, self.ranker, self.seed = batches, cfg, ranker, seed
        self.ranked_epochs: list[int] = []
        self.local_scores: list[torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return f"HeadRankingCallback[{self.ranker}]"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch not in self.ranked_epochs:
            self.rank(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        every, epoch = self.cfg.every_n_epochs, trainer.current_epoch
        if every > 0 and epoch > 0 and epoch % every == 0 and epoch not in self.ranked_epochs:
            self.rank(trainer, pl_module)

    def rank(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scores = rank_heads(
            self.ranker,
            pl_module.model,
            pl_module.blocks,
            self.batches,
            damping=self.cfg.damping,
            normalize=self.cfg.normalize,
            seed=self.seed + trainer.current_epoch,
        )
        self.ranked_epochs.append(trainer.current_epoch)
        if scores is None:
            pl_module.set_head_scores(None)
            return
        self.local_scores = [s.clone() for s in scores]
        flat = torch.cat(scores).to(device=pl_module.device, dtype=torch.float64)
        flat = trainer.strategy.broadcast(flat, src=0)
        pl_module.set_head_scores(flat)
        per_block = [s.tolist() for s in flat.cpu().split([b.num_heads for b in pl_module.blocks])]
        self.history.append({"epoch": trainer.current_epoch, "scores": per_block})
        rank_zero_info(
            f"[gohsp] ranked heads ({self.ranker}) at epoch {trainer.current_epoch}: "
            f"min {flat.min().item():.3f}, max {flat.max().item():.3f}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"ranked_epochs": list(self.ranked_epochs), "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.ranked_epochs = list(state_dict.get("ranked_epochs", []))
        self.history = list(state_dict.get("history", []))
