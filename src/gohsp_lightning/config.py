"""Typed run configuration: one dataclass per Hydra config group, and one-line validation.

Hydra composes YAML from ``conf/``; :func:`from_hydra` merges it into these schemas (unknown keys and
wrong types fail there) and :func:`validate` checks values. Everything downstream receives plain
dataclasses, never a DictConfig, so nothing OmegaConf-shaped reaches a checkpoint.

Over 300 lines because the schema is: one dataclass per group, each knob documented where it is declared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from .errors import one_line
from .pruning.gates import GATE_KINDS, check_gateable
from .pruning.latency import DTYPES
from .pruning.projection import Allocation, Compete, Unit, check_shared
from .pruning.rankers import RANKERS
from .pruning.ranking import GraphOptions
from .pruning.structures import structure_names, structures_label
from .pruning.units import check_family

METHODS = ("gohsp", "oneshot", "gates", "dense")
# the core's own choices, not copies: a value added there is allowed here
ALLOCATIONS: tuple[str, ...] = get_args(Allocation)
COMPETE: tuple[str, ...] = get_args(Compete)
BUDGET_UNITS: tuple[str, ...] = get_args(Unit)
LATENCY_DTYPES = tuple(DTYPES)
DATASETS = ("imagefolder", "cifar10")
TEACHERS_KD = ("soft", "hard")
STEP_ON = ("epoch", "step")


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the key, the value and what is allowed."""


@dataclass
class ModelConfig:
    name: str = "vit_tiny_patch16_224"
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    checkpoint: str | None = None
    num_classes: int = 10
    # a model shipped in the package (gohsp_lightning.list_pretrained()); name/kwargs must be its architecture
    shipped: str | None = None

    @property
    def has_weights(self) -> bool:
        """True when the model starts from trained weights (hub, local file or shipped), not random init."""
        return self.pretrained or self.checkpoint is not None or self.shipped is not None


@dataclass
class DataConfig:
    dataset: str = "imagefolder"
    root: str = "data/cifar10_subset"
    download: bool = False
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 2
    input_size: list[int] | None = None
    crop_pct: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    auto_augment: str | None = None
    re_prob: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0


@dataclass
class PruningConfig:
    method: str = "gohsp"
    sparsity: float = 0.4
    budget: str = "params"
    allocation: str = "global"
    # the structures that compete for the budget: a list of names (pruning.structures.STRUCTURES), one name,
    # or "both" (heads and neurons)
    structures: Any = field(default_factory=lambda: ["heads", "neurons"])
    ranker: str = "graph"
    alpha: float = 1.0
    round_to: int = 1
    compete: str = "balanced"
    # budget=latency: a measured table (JSON) to use; None = measure on latency_device (cached in latency_cache_dir)
    latency_table: str | None = None
    latency_device: str = "cpu"
    latency_dtype: str = "fp32"
    latency_batch_size: int = 32
    latency_cache_dir: str = "~/.cache/gohsp_lightning/latency"
    dense_epochs: int = 0
    admm_epochs: int = 2
    finetune_epochs: int = 2

    @property
    def structures_label(self) -> str:
        """``pruning.structures`` as run names and sweep tables spell it (``both``, ``heads``, ``heads+neurons``...)."""
        return structures_label(self.structures)

    def __post_init__(self) -> None:
        """Fairness: ``oneshot`` has no ADMM stage, so it fine-tunes for ``admm_epochs + finetune_epochs``.

        Every method then trains the same total number of epochs for the same ``pruning.*_epochs``
        (``dense`` likewise trains all of them dense, in the pipeline).
        """
        if self.budget == "latency" and self.latency_device.startswith("cuda") and self.round_to == 1:
            self.round_to = 8  # tensor cores run MLP widths in multiples of 8 (fp16/bf16) at full speed
        if self.method == "oneshot" and self.admm_epochs > 0:
            self.finetune_epochs += self.admm_epochs
            self.admm_epochs = 0


@dataclass
class RankingConfig:
    calibration_images: int = 512
    batch_size: int = 64
    every_n_epochs: int = 0
    # the graph formulation, defaults from the core's GraphOptions: what an edge measures, which way the
    # chain walks, where it teleports, how sharp its transitions are, how pi meets the weight norm
    damping: float = GraphOptions.damping
    normalize: str = GraphOptions.normalize
    similarity: str = GraphOptions.similarity
    chain: str = GraphOptions.chain
    teleport: str = GraphOptions.teleport
    temperature: float = GraphOptions.temperature
    combine: str = GraphOptions.combine
    beta: float = GraphOptions.beta

    def graph_options(self) -> GraphOptions:
        """The core's :class:`GraphOptions` for these settings (raises ValueError on a bad value)."""
        return GraphOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GraphOptions)})


@dataclass
class AdmmConfig:
    rho: float = 1e-3
    rho_growth: float = 1.0
    rho_max: float = 1.0
    update_every_n_epochs: int = 1
    # > 0: update Z and U every N optimizer steps instead (short schedules: 1 update per epoch is too few)
    update_every_n_steps: int = 0


@dataclass
class GatesConfig:
    """``pruning.method=gates``: learnable gates trained with the loss for ``pruning.admm_epochs`` epochs."""

    kind: str = "sigmoid"  # sigmoid | hard_concrete (stochastic in training, exactly 0 or 1 at the ends)
    init: float = 3.0  # starting logit of every gate: sigmoid(3) = 0.95, the model nearly unchanged
    lr: float = 0.1  # the gates' learning rate (their own optimizer group, no weight decay)
    penalty: float = 20.0  # weight of the budget penalty: the expected removal's shortfall / the dense total
    temperature_end: float = 0.5  # gate temperature, annealed linearly from 1 over the stage (sharper gates)
    seed_spread: float = 0.0  # > 0: start the logits from pruning.ranker's head scores (this many logits per std)


@dataclass
class DistillConfig:
    enabled: bool = True
    teacher: str = "dense"
    teacher_checkpoint: str | None = None
    kind: str = "soft"
    temperature: float = 4.0
    weight: float = 0.5


@dataclass
class OptimConfig:
    opt: str = "adamw"
    lr: float = 1e-3
    finetune_lr: float | None = None
    weight_decay: float = 0.05
    momentum: float = 0.9
    sched: str = "cosine"
    warmup_epochs: int = 0
    min_lr: float = 1e-6
    # "epoch": the learning rate changes once per epoch; "step": after every optimizer step (smooth warm-up
    # and decay, what short schedules such as the pretraining need)
    step_on: str = "epoch"


@dataclass
class RunConfig:
    name: str = "cifar10_subset"
    seed: int = 0
    output_dir: str = "outputs/run"
    # resume: None = fresh run; "last" = the newest checkpoint of the first unfinished stage; or a .ckpt file
    ckpt_path: str | None = None
    # the run dir of an interrupted run, to continue there (implies ckpt_path=last); None = output_dir
    resume_dir: str | None = None
    # print every third-party notice (Lightning's hardware lines and tips, W&B's banner); errors always show
    verbose: bool = False
    # torch.compile backend for the training stages' model (e.g. "inductor"); None = eager
    compile: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    admm: AdmmConfig = field(default_factory=AdmmConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)


def project_dir() -> str:
    """The folder holding the ``conf/`` that Hydra composed from (the clone's root): the ``${project_dir:}``
    resolver, so the embedded data set is found whatever the working directory."""
    from hydra.core.hydra_config import HydraConfig

    for source in HydraConfig.get().runtime.config_sources:
        if source.provider == "main" and source.schema == "file":
            return str(Path(source.path).resolve().parent)
    raise ConfigError("${project_dir:} needs the configs loaded from a folder (conf/), not from a package")


def from_hydra(cfg: Any) -> RunConfig:
    """Merge a composed Hydra config into :class:`RunConfig` and validate it; raises :class:`ConfigError`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not OmegaConf.has_resolver("project_dir"):
        OmegaConf.register_new_resolver("project_dir", project_dir)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
        run = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        first = one_line(err)
        raise ConfigError(f"config key {key!r}: {first}" if key else f"config: {first}") from None
    validate(run)
    return run


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def validate(cfg: RunConfig) -> None:
    """Check values that types cannot; the first problem raises a one-line :class:`ConfigError`."""
    import timm

    if cfg.compile is not None:
        import torch

        _check_choice("compile", cfg.compile, (*torch.compiler.list_backends(), "eager", "aot_eager"))
    p = cfg.pruning
    _check_choice("pruning.method", p.method, METHODS)
    _check_choice("pruning.ranker", p.ranker, RANKERS)
    _check_choice("pruning.allocation", p.allocation, ALLOCATIONS)
    _check_choice("pruning.budget", p.budget, BUDGET_UNITS)
    _check_choice("pruning.latency_dtype", p.latency_dtype, LATENCY_DTYPES)
    if p.latency_batch_size < 1:
        raise ConfigError(f"pruning.latency_batch_size={p.latency_batch_size} must be >= 1")
    if p.latency_table is not None and not Path(p.latency_table).is_file():
        raise ConfigError(f"pruning.latency_table={p.latency_table!r}: no such file")
    _check_choice("data.dataset", cfg.data.dataset, DATASETS)
    _check_choice("distill.kind", cfg.distill.kind, TEACHERS_KD)
    _check_choice("optim.step_on", cfg.optim.step_on, STEP_ON)
    if not 0.0 <= p.sparsity < 1.0:
        raise ConfigError(f"pruning.sparsity={p.sparsity} is outside [0, 1): it is the fraction of parameters removed")
    _check_choice("pruning.compete", p.compete, COMPETE)
    if p.round_to < 1:
        raise ConfigError(f"pruning.round_to={p.round_to} must be >= 1 (1 = no rounding of kept MLP neurons)")
    try:
        names = structure_names(p.structures)
        check_shared(names, p.budget, p.allocation, p.round_to)
        if p.method == "gates":
            check_gateable(names)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for key in ("dense_epochs", "admm_epochs", "finetune_epochs"):
        if getattr(p, key) < 0:
            raise ConfigError(f"pruning.{key}={getattr(p, key)} must be >= 0")
    if p.method == "gohsp" and p.admm_epochs < 1:
        raise ConfigError("pruning.admm_epochs=0 with pruning.method=gohsp; use >= 1 or pruning.method=oneshot")
    if p.method == "gates" and p.admm_epochs < 1:
        raise ConfigError("pruning.admm_epochs=0 with pruning.method=gates: the gates train for admm_epochs; use >= 1")
    for key in ("lr", "temperature_end"):
        if getattr(cfg.gates, key) <= 0:
            raise ConfigError(f"gates.{key}={getattr(cfg.gates, key)} must be > 0")
    _check_choice("gates.kind", cfg.gates.kind, GATE_KINDS)
    if cfg.gates.penalty < 0 or cfg.gates.seed_spread < 0:
        raise ConfigError(
            f"gates.penalty={cfg.gates.penalty} and gates.seed_spread={cfg.gates.seed_spread} must be >= 0"
        )
    if not timm.is_model(cfg.model.name):
        raise ConfigError(
            f"model.name={cfg.model.name!r} is not a timm model; e.g. deit_tiny_patch16_224, deit_small_patch16_224, "
            "deit_base_patch16_224, vit_small_patch16_224 (see timm.list_models('*vit*'))"
        )
    if p.method != "dense":
        try:
            check_family(cfg.model.name)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if cfg.model.checkpoint is not None and not Path(cfg.model.checkpoint).is_file():
        raise ConfigError(f"model.checkpoint={cfg.model.checkpoint!r}: no such file")
    if cfg.model.shipped is not None:
        check_shipped(cfg.model)
    if cfg.model.num_classes < 2:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} must be >= 2")
    try:  # the graph formulation checks its own values (ranking.chain, .similarity, .damping, ...)
        cfg.ranking.graph_options()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cfg.ranking.calibration_images < 1:
        raise ConfigError(f"ranking.calibration_images={cfg.ranking.calibration_images} must be >= 1")
    if cfg.admm.rho <= 0:
        raise ConfigError(f"admm.rho={cfg.admm.rho} must be > 0")
    if cfg.admm.update_every_n_steps < 0:
        raise ConfigError(
            f"admm.update_every_n_steps={cfg.admm.update_every_n_steps} must be >= 0 (0 = every update_every_n_epochs)"
        )
    if cfg.admm.update_every_n_epochs < 1:
        raise ConfigError(f"admm.update_every_n_epochs={cfg.admm.update_every_n_epochs} must be >= 1")
    if cfg.distill.enabled and cfg.distill.teacher != "dense" and not timm.is_model(cfg.distill.teacher):
        raise ConfigError(f"distill.teacher={cfg.distill.teacher!r} must be 'dense' or a timm model name")
    if not 0.0 <= cfg.distill.weight <= 1.0:
        raise ConfigError(f"distill.weight={cfg.distill.weight} must be in [0, 1]")
    if cfg.data.batch_size < 1:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} must be >= 1")


def check_shipped(cfg: ModelConfig) -> None:
    """A shipped model must be asked for with its own architecture (the export rebuilds it from model.*)."""
    from .pretrained import pretrained_card

    if cfg.pretrained or cfg.checkpoint is not None:
        raise ConfigError(
            f"model.shipped={cfg.shipped!r} with model.pretrained/model.checkpoint: choose one source of weights"
        )
    try:
        arch = pretrained_card(cfg.shipped)["model"]
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for key, value in (("name", cfg.name), ("kwargs", dict(cfg.kwargs)), ("num_classes", cfg.num_classes)):
        if arch[key] != value:
            raise ConfigError(
                f"model.{key}={value!r} but the shipped model {cfg.shipped!r} has {key} {arch[key]!r}; "
                f"use model=tiny_cifar_pretrained (or leave model.{key} as the shipped model has it)"
            )


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain-dict copy (for hyperparameters, summaries and W&B config)."""
    return dataclasses.asdict(cfg)
