"""The GOHSP pipeline: (dense) -> rank + ADMM -> hard prune -> KD fine-tune -> export + summary.

Every stage is its own ``Trainer.fit``; hard pruning happens between two fits, never inside one.
Each finished stage leaves its weights and a marker in ``<run dir>/stages/`` (see :mod:`.stages`), so a
run killed anywhere resumes with ``resume_dir=<run dir>`` (or ``ckpt_path=last`` in the same run dir) and
ends with the same plan and summary as a run that was not killed. Each stage is seeded on its own
(``seed + stage index``), and checkpoints carry the RNG states, so a resumed stage draws what the
uninterrupted one drew.

Under DDP every rank runs every stage (ddp_spawn: the main process runs the pipeline and each fit
spawns the ranks); only rank 0 writes stage files, summary and export, and
:class:`~.callbacks.RankAgreementCallback` checks at runtime that all ranks agree.

Why ~500 lines: the stage order and the resume rules are one state machine over one run dir; what has a
job of its own lives beside it (:mod:`.stages` the files, :mod:`.summary` the result, :mod:`.console` the output).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra.utils
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import nn

from .callbacks import HeadRankingCallback, RankAgreementCallback
from .config import ConfigError, RunConfig, to_dict
from .console import quiet_third_party, stage_header, stage_result, summary_table
from .data import CalibrationBatches, ImageDataModule, check_data_root, resolve_data_config
from .errors import one_line
from .models import create_student, create_teacher, freeze
from .module import GohspModule, projection_options
from .pruning import (
    Budget,
    PrunePlan,
    apply_plan,
    check_feasible,
    count_flops,
    count_params,
    find_blocks,
    num_tokens,
    project,
    save_pruned,
)
from .pruning.files import atomic_write_json
from .pruning.gates import fold_gates, plan_from_gates
from .pruning.latency import DTYPES as LATENCY_DTYPES
from .pruning.latency import LatencyTable, cache_path, latency_budget, measure_latency_table, measure_models, table_key
from .pruning.rankers import rank_heads
from .pruning.structures import block_weights
from .stages import LAST, ResumePoint, StageFiles, flat_settings, stage_order
from .summary import SUMMARY_FILE, Top1, build_summary
from .tracking import build_loggers, closing_loggers

CHECKPOINT_TARGET = "lightning.pytorch.callbacks.ModelCheckpoint"
# Each stage is seeded on its own, so a stage restarted from its beginning repeats the uninterrupted one.
# gates shares admm's seed: both search stages see the same batches, so the methods compare on equal terms
STAGE_SEEDS = {"dense": 0, "admm": 1, "gates": 1, "finetune": 2}


def check_devices(trainer: dict[str, Any]) -> None:
    """One-line errors for a trainer that this machine cannot run, before anything is built or written."""
    accelerator, devices = str(trainer.get("accelerator", "auto")), trainer.get("devices", "auto")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU; use trainer=cpu "
            "(or trainer=ddp_sim for DDP on CPU processes)"
        )
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and gpus == 0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    available = cores if on_cpu else gpus
    if isinstance(devices, int) and devices > available:
        kind = "CPU cores (one process each)" if on_cpu else "GPUs"
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {available} {kind}; use 1..{available}, or -1 for all"
        )


def ddp_without_buffer_broadcast(strategy: Any) -> dict[str, Any]:
    """``trainer.strategy=ddp`` (or another DDP name) as a DDPStrategy with ``broadcast_buffers=False``.

    Lightning's named DDP strategies keep torch's default, which re-sends every buffer (Z and U are
    weight-sized) from rank 0 before each forward; conf/trainer/ddp.yaml sets it off explicitly.
    """
    if not isinstance(strategy, str) or strategy not in StrategyRegistry:
        return {}
    entry = StrategyRegistry[strategy]
    if not issubclass(entry["strategy"], DDPStrategy):
        return {}
    return {"strategy": entry["strategy"](**{**entry["init_params"], "broadcast_buffers": False})}


def run_name(cfg: RunConfig) -> str:
    """The logger run name: what tells a sweep's runs apart at a glance in the W&B UI.

    In a multirun, :func:`~gohsp_lightning.tracking.build_loggers` appends ``#<job>``, which tells apart
    jobs that differ only in other keys (an Optuna trial's alpha, rho, lr).
    """
    p = cfg.pruning
    if p.method == "dense":
        return f"{cfg.name}-dense-seed{cfg.seed}"
    return f"{cfg.name}-{p.method}-{p.ranker}-{p.allocation}-{p.structures_label}-{p.budget}{p.sparsity}-seed{cfg.seed}"


class Pipeline:
    """Runs one experiment in ``cfg.resume_dir`` or else ``cfg.output_dir``; :meth:`run` returns the summary."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.resume_dir or cfg.output_dir)
        self.files = StageFiles(self.run_dir)
        self.resume = ResumePoint()
        self.loggers: list = []
        self.input_size: tuple[int, ...] = ()  # (C, H, W), from the data config once run() has resolved it
        self.latency: LatencyTable | None = None  # pruning.budget=latency: the table the budget is counted in

    # ----------------------------------------------------------------- building blocks
    def _trainer(self, stage: str, epochs: int, extra_callbacks: list | None = None) -> L.Trainer:
        """A fresh Trainer per stage; its checkpoints (and a SLURM requeue's hpc_ckpt) go to checkpoints/<stage>."""
        stage_dir = self.run_dir / "checkpoints" / stage
        self._sync_csv_columns()
        callbacks = []
        for spec in self.cfg.callbacks.values():
            if not spec or "_target_" not in spec:
                continue
            overrides = {"dirpath": str(stage_dir)} if spec["_target_"] == CHECKPOINT_TARGET else {}
            callbacks.append(hydra.utils.instantiate(spec, **overrides))
        extra = list(extra_callbacks or [])
        ranking = next((c for c in extra if isinstance(c, HeadRankingCallback)), None)
        agreement = RankAgreementCallback(self.run_dir / "ranks", ranking=ranking)
        try:
            return hydra.utils.instantiate(
                self.cfg.trainer,
                max_epochs=epochs,
                logger=self.loggers or False,
                callbacks=[*callbacks, *extra, agreement],
                default_root_dir=str(stage_dir),
                **ddp_without_buffer_broadcast(self.cfg.trainer.get("strategy")),
            )
        except InstantiationException as err:
            raise ConfigError(f"trainer: {one_line(err.__cause__ or err)}") from None

    def _sync_csv_columns(self) -> None:
        """Teach each CSVLogger the columns its metrics.csv already has.

        Under ddp_spawn the stages log from child processes, so the main process's writer never learns
        their columns, and the next stage's child would rewrite metrics.csv with its own columns only
        (and fail on the earlier rows).
        """
        for lg in self.loggers:
            if not isinstance(lg, CSVLogger) or rank_zero_only.rank != 0:
                continue
            path = Path(lg.log_dir) / "metrics.csv"
            if path.is_file():
                with path.open(newline="") as f:
                    header = next(csv.reader(f), [])
                writer = lg.experiment
                writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))

    def _fit(self, module: GohspModule, dm: ImageDataModule, epochs: int, callbacks: list | None = None) -> float:
        """Train ``epochs`` epochs (or only evaluate when 0), resuming from the stage's checkpoint if there is one.

        Returns val top-1 of the result.
        """
        trainer = self._trainer(module.stage, epochs, callbacks)
        module.forward_flops_per_batch = count_flops(module.model, self.input_size) * self.cfg.data.batch_size
        key = f"{module.stage}/val_top1"
        L.seed_everything(self.cfg.seed + STAGE_SEEDS[module.stage], workers=True, verbose=False)
        try:
            if epochs > 0:
                stage_header(module.stage, epochs)
                start = time.monotonic()
                trainer.fit(module, datamodule=dm, ckpt_path=self.resume.ckpt_for(module.stage), weights_only=True)
                if key in trainer.callback_metrics:
                    top1 = float(trainer.callback_metrics[key])
                    stage_result(module.stage, top1, time.monotonic() - start)
                    return top1
            return float(trainer.validate(module, datamodule=dm, verbose=False)[0][key])
        except SIGTERMException:
            # Lightning stops cleanly on SIGTERM, with exit status 0; a scheduler must see the kill
            rank_zero_warn(
                f"SIGTERM in the {module.stage} stage: resume with `python run.py ... resume_dir={self.run_dir}`"
            )
            raise SystemExit(128 + signal.SIGTERM) from None

    def _finish(self, stage: str, model: nn.Module, info: dict[str, Any]) -> None:
        """Make a stage durable (rank 0): its weights, then its marker with the settings it depended on."""
        if rank_zero_only.rank == 0:
            self.files.save(stage, model, {**info, "settings": flat_settings(to_dict(self.cfg))})

    def _log_dir(self) -> Path:
        """The loggers' save_dir: the run dir, or a new ``resume-<n>`` in it when resuming.

        A resumed run logs apart because CSVLogger deletes a ``metrics.csv`` it finds in its directory.
        """
        if self.cfg.ckpt_path is None and self.cfg.resume_dir is None:
            return self.run_dir
        n = 1
        while (self.run_dir / f"resume-{n}").exists():
            n += 1
        return self.run_dir / f"resume-{n}"

    def _ranks_report(self, order: list[str]) -> dict[str, Any]:
        """The rank-agreement verdicts the stages left in ``ranks/`` (see RankAgreementCallback)."""
        stages = {}
        for stage in order:
            path = self.run_dir / "ranks" / f"{stage}.json"
            if path.is_file():
                report = json.loads(path.read_text())
                keys = ("agree", "world_size", "local_scores_max_gap", "broadcast_buffers")
                stages[stage] = {k: report[k] for k in keys}
        return {"checked": sorted(stages), "agree": all(r["agree"] for r in stages.values()), "stages": stages}

    def _teacher(self, dense: nn.Module) -> nn.Module | None:
        d = self.cfg.distill
        if not d.enabled:
            return None
        if d.teacher == "dense":
            return freeze(copy.deepcopy(dense))
        return create_teacher(d.teacher, self.cfg.model.num_classes, d.teacher_checkpoint)

    def _calibration(self, dm: ImageDataModule) -> CalibrationBatches:
        r = self.cfg.ranking
        return CalibrationBatches(dm, r.calibration_images, r.batch_size)

    # ----------------------------------------------------------------- stages
    def _admm_plan(self, model: nn.Module, dm: ImageDataModule, budget: Budget) -> PrunePlan:
        cfg = self.cfg
        module = GohspModule(model, cfg, "admm", budget=budget)
        ranking = HeadRankingCallback(self._calibration(dm), cfg.ranking, cfg.pruning.ranker)
        self._fit(module, dm, cfg.pruning.admm_epochs, [ranking])
        plan = module.final_plan()
        z_plan = module.masks.plan()
        pairs = [(a, b) for name in plan.kept for a, b in zip(plan.kept[name], z_plan.kept[name], strict=True)]
        agree = sum(a == b for a, b in pairs)
        rank_zero_info(f"[gohsp] final plan matches the support of Z in {agree}/{len(pairs)} layers")
        return plan

    def _latency_table(self, model: nn.Module) -> LatencyTable:
        """``pruning.latency_table``, else the cached table of this model and device, else a new measurement."""
        p = self.cfg.pruning
        if p.latency_table is not None:
            table = LatencyTable.load(p.latency_table)
            table.check(find_blocks(model))
            return table
        device = torch.device(p.latency_device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"pruning.latency_device={p.latency_device} but this machine has no CUDA device")
        m = self.cfg.model
        key = table_key(m.name, device, p.latency_dtype, p.latency_batch_size, self.input_size, dict(m.kwargs))
        key["round_to"] = p.round_to  # the sampled MLP widths are multiples of it
        path = cache_path(Path(p.latency_cache_dir).expanduser(), key)
        if path.is_file():
            rank_zero_info(f"[gohsp] latency table from {path}")
            table = LatencyTable.load(path)
            table.check(find_blocks(model))
            return table
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                "pruning.budget=latency: every rank would measure its own table; measure it once in a single process "
                f"(same command with trainer.devices=1) or pass pruning.latency_table=<file> (cache: {path.parent})"
            )
        rank_zero_info(
            f"[gohsp] measuring the latency table on {key['device']} ({p.latency_dtype}, batch {p.latency_batch_size})"
        )
        table = measure_latency_table(
            model, key, device, LATENCY_DTYPES[p.latency_dtype], p.latency_batch_size, self.input_size, p.round_to
        )
        table.save(path)
        return table

    def _gates_plan(self, model: nn.Module, dm: ImageDataModule, budget: Budget) -> PrunePlan:
        """Train learnable gates with the weights, cut at the budget (lowest gates first), fold the kept gates."""
        cfg, p = self.cfg, self.cfg.pruning
        module = GohspModule(model, cfg, "gates", budget=budget)
        if cfg.gates.seed_spread > 0:
            blocks = find_blocks(model)
            with torch.random.fork_rng():  # the ranking pass leaves the training's random stream as it was
                scores = rank_heads(p.ranker, model, blocks, self._calibration(dm), cfg.ranking.graph_options())
            if scores is not None:
                module.gates.seed({"heads": scores}, cfg.gates.seed_spread)
        self._fit(module, dm, p.admm_epochs)
        plan = plan_from_gates(module.gates, module.blocks, budget, p.round_to, p.allocation)
        fold_gates(module.gates, module.blocks, plan)
        return plan

    def _oneshot_plan(self, model: nn.Module, dm: ImageDataModule, budget: Budget) -> PrunePlan:
        cfg = self.cfg
        blocks = find_blocks(model)
        scores = rank_heads(
            cfg.pruning.ranker,
            model,
            blocks,
            self._calibration(dm),
            cfg.ranking.graph_options(),
        )
        weights = [block_weights(b) for b in blocks]
        return project(blocks, weights, budget, scores, **projection_options(cfg, blocks, budget))

    # ----------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.cfg.pruning
        check_devices(cfg.trainer)
        if cfg.resume_dir is not None and not self.run_dir.is_dir():
            raise FileNotFoundError(f"resume_dir={cfg.resume_dir!r}: no such directory")
        order = stage_order(p.method)
        ckpt_path = cfg.ckpt_path or (LAST if cfg.resume_dir is not None else None)
        self.resume = self.files.resume_point(order, ckpt_path, to_dict(cfg))
        done = self.resume.done
        check_data_root(cfg.data)  # before the model: a missing root is not reported as a hub or network error
        L.seed_everything(cfg.seed, workers=True)
        model = create_student(cfg.model, weights="dense" not in done)
        data_config = resolve_data_config(cfg.data, model)
        dm = ImageDataModule(cfg.data, data_config, cfg.model.num_classes)
        dm.setup()
        input_size = self.input_size = tuple(data_config["input_size"])
        dense_params, dense_flops = count_params(model), count_flops(model, input_size)
        if p.budget == "latency":
            self.latency = self._latency_table(model)
            budget = latency_budget(p.sparsity, self.latency, num_tokens(model))
        else:
            budget = Budget(
                sparsity=p.sparsity,
                total=dense_params if p.budget == "params" else dense_flops,
                unit=p.budget,
                tokens=num_tokens(model),
            )
        if p.method != "dense":
            check_feasible(find_blocks(model), budget, p.structures, p.round_to)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.loggers = build_loggers(cfg.logger, self._log_dir(), name=run_name(cfg), verbose=cfg.verbose)
        with closing_loggers(self.loggers):
            for lg in self.loggers:
                lg.log_hyperparams(to_dict(cfg))
            if self.resume.resumed:
                pending = next((s for s in order if s not in done), None)
                rank_zero_info(
                    f"[gohsp] resuming {self.run_dir}: finished {list(done) or 'nothing'}; next {pending or 'summary'} "
                    f"from {self.resume.ckpt or 'its start'}"
                )
            elif ckpt_path == LAST:
                rank_zero_warn(f"ckpt_path=last: {self.run_dir} holds no finished stage or checkpoint; starting anew")
            top1 = self._dense_stage(model, dm)
            if p.method == "dense":
                plan = PrunePlan.dense(find_blocks(model))
                top1["pruned"] = top1["dense"]
            else:
                teacher = self._teacher(model)  # the dense model, before ADMM
                plan, top1["before_finetune"] = self._plan_stage(model, dm, budget, order[1])
                top1["pruned"] = self._finetune_stage(model, dm, teacher, plan)
            return self._summary(model, plan, data_config, dense_params, dense_flops, top1)

    def _stage(
        self,
        stage: str,
        model: nn.Module,
        produce: Callable[[], dict[str, Any]],
        shape: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """A stage's marker info: a finished stage's, its weights loaded into ``model`` (``shape`` first fits
        the model to them, e.g. applies the stage's plan); else ``produce()`` runs the stage, which is finished."""
        marker = self.resume.done.get(stage)
        if marker is not None:
            if shape is not None:
                shape(marker)
            self.files.load_weights(stage, model)
            return marker
        info = produce()
        self._finish(stage, model, info)
        return info

    def _plan_stage(
        self, model: nn.Module, dm: ImageDataModule, budget: Budget, stage: str
    ) -> tuple[PrunePlan, float | None]:
        """Load or make the plan (``admm``, ``gates`` or ``oneshot``) and cut ``model`` to it; returns the plan
        and the cut model's val top-1 before any fine-tuning (what the cut itself costs)."""
        make_plan = {"admm": self._admm_plan, "gates": self._gates_plan, "oneshot": self._oneshot_plan}[stage]

        def cut() -> dict[str, Any]:
            plan = make_plan(model, dm, budget)
            apply_plan(model, plan)
            return {
                "plan": plan.to_dict(),
                "val_top1": self._fit(GohspModule(model, self.cfg, "finetune", plan=plan), dm, 0),
            }

        info = self._stage(
            stage, model, cut, shape=lambda marker: apply_plan(model, PrunePlan.from_dict(marker["plan"]))
        )
        return PrunePlan.from_dict(info["plan"]), info.get("val_top1")

    def _finetune_stage(
        self, model: nn.Module, dm: ImageDataModule, teacher: nn.Module | None, plan: PrunePlan
    ) -> float:
        """Load or run the KD fine-tune of the cut model; returns its val top-1."""

        def train() -> dict[str, Any]:
            finetune = GohspModule(model, self.cfg, "finetune", teacher=teacher, plan=plan)
            return {"val_top1": self._fit(finetune, dm, self.cfg.pruning.finetune_epochs)}

        return float(self._stage("finetune", model, train)["val_top1"])

    def _dense_stage(self, model: nn.Module, dm: ImageDataModule) -> dict[str, float | None]:
        """Load or run the dense stage; returns val top-1 of the starting weights (``pretrained``, None when
        training starts from random init) and after the dense epochs (``dense``)."""
        cfg, p = self.cfg, self.cfg.pruning
        dense_epochs = p.dense_epochs + (p.admm_epochs + p.finetune_epochs if p.method == "dense" else 0)

        def train() -> dict[str, Any]:
            pretrained = None
            if cfg.model.has_weights and dense_epochs > 0:
                pretrained = self._fit(GohspModule(model, cfg, "dense"), dm, 0)
            dense = self._fit(GohspModule(model, cfg, "dense"), dm, dense_epochs)
            if cfg.model.has_weights and dense_epochs == 0:
                pretrained = dense
            return {"val_top1": dense, "pretrained_top1": pretrained}

        info = self._stage("dense", model, train)
        return {"pretrained": info.get("pretrained_top1"), "dense": float(info["val_top1"])}

    def _summary(
        self,
        model: nn.Module,
        plan: PrunePlan,
        data_config: dict[str, Any],
        dense_params: int,
        dense_flops: int,
        top1: dict[str, float | None],
    ) -> dict[str, Any]:
        """``summary.json``; ``top1`` holds val top-1 ``pretrained`` (None from random init), ``dense``,
        ``before_finetune`` (the hard-pruned model, pruning methods only) and ``pruned``."""
        cfg = self.cfg
        model = model.cpu().eval()
        params, flops = count_params(model), count_flops(model, tuple(data_config["input_size"]))
        export_dir = self.run_dir / "pruned"
        summary = build_summary(
            cfg,
            plan,
            dense=(dense_params, dense_flops),
            pruned=(params, flops),
            top1=Top1(**top1),
            embed_dim=model.embed_dim,
            export_dir=str(export_dir),
            ranks_agree=self._ranks_report(stage_order(cfg.pruning.method)),
            latency=self._latency_summary(model, plan),
        )
        if rank_zero_only.rank == 0:
            kwargs = {**cfg.model.kwargs, "num_classes": cfg.model.num_classes}
            save_pruned(export_dir, model, plan, cfg.model.name, kwargs, data_config, extra={"summary": summary})
            atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
            rank_zero_info(summary_table(summary))
        return summary

    def _latency_summary(self, pruned: nn.Module, plan: PrunePlan) -> dict[str, Any] | None:
        """With a latency table: predicted and measured seconds per batch, dense and pruned, side by side."""
        if self.latency is None or rank_zero_only.rank != 0:  # one process times: ranks would share the cores
            return None
        p, table = self.cfg.pruning, self.latency
        device, dtype = torch.device(p.latency_device), LATENCY_DTYPES[p.latency_dtype]
        dense = create_student(self.cfg.model, weights=False)  # the architecture: weights do not change the time
        measured = measure_models(
            {"dense": dense, "pruned": pruned}, device, dtype, p.latency_batch_size, self.input_size
        )
        predicted = table.predict_plan(plan)
        speedup, predicted_speedup = measured["dense"] / measured["pruned"], table.dense / predicted
        return {
            "device": table.key.get("device"),
            "dtype": p.latency_dtype,
            "batch_size": p.latency_batch_size,
            "dense_s": measured["dense"],
            "pruned_s": measured["pruned"],
            "speedup": speedup,
            "predicted_dense_s": table.dense,
            "predicted_pruned_s": predicted,
            "predicted_speedup": predicted_speedup,
            # seconds drift with the machine's load between the table and now; the speedup is timed in turns
            "prediction_error": predicted / measured["pruned"] - 1,
            "speedup_prediction_error": predicted_speedup / speedup - 1,
        }


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run the configured experiment; returns the summary (also written to ``<output_dir>/summary.json``)."""
    quiet_third_party(cfg.verbose)
    torch.set_float32_matmul_precision("high")
    # the frozen KD teacher is in eval mode on purpose
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    return Pipeline(cfg).run()
