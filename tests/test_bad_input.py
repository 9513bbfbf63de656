"""Bad input through ``python run.py``: one ``error:`` line naming the key or file, exit 2, nothing lost.

Every case runs the real entry point in a subprocess, in a run dir that already holds a finished run's
``summary.json`` (and is resumed with ``ckpt_path=last`` unless the case says otherwise); afterwards that
file must be byte-for-byte intact. The cases run a few at a time (each is mostly interpreter start-up).
Export-dir errors (missing files, config.json not matching the weights) have no run.py path; they are
covered through ``load_pruned`` in tests/pruning/test_export.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gohsp_lightning.config import to_dict
from gohsp_lightning.stages import flat_settings

from .conftest import ROOT, SHORT_RUN, SUBSET, compose_run

FAST_RUN = [
    *SHORT_RUN,
    "pruning.dense_epochs=1",
    "pruning.admm_epochs=1",
    "pruning.finetune_epochs=1",
]
EARLIER_SUMMARY = {"experiment": "earlier run", "pruned": {"val_top1": 0.5}}
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@dataclass
class Outcome:
    code: int
    errors: list[str]
    stderr: str
    kept: bool


def truncated(path: Path, source: Path, size: int = 4096) -> str:
    path.write_bytes(source.read_bytes()[:size])
    return str(path)


def empty_imagefolder(root: Path) -> str:
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            (root / split / name / "notes.txt").write_text("no images here")
    return str(root)


def stage_marker(run_dir: Path, sparsity: float) -> None:
    """A real dense-stage marker, as a run with ``pruning.sparsity=sparsity`` would have left it."""
    settings = flat_settings(to_dict(compose_run([*FAST_RUN, f"pruning.sparsity={sparsity}"], run_dir)))
    (run_dir / "stages").mkdir(parents=True)
    (run_dir / "stages" / "dense.json").write_text(
        json.dumps({"stage": "dense", "val_top1": 0.3, "settings": settings})
    )


def build_cases(base: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (overrides, pattern the error line must match); files the cases need are made here."""
    some_weights = next(SUBSET.rglob("*.png"))  # any real file: truncated, it is no checkpoint
    (base / "files").mkdir()
    files = base / "files"
    return {
        "sparsity-out-of-range": (["pruning.sparsity=1.5"], r"^pruning\.sparsity=1\.5 is outside \[0, 1\)"),
        "budget-infeasible": (
            ["pruning.sparsity=0.99"],
            r"^pruning\.sparsity=0\.99 asks to remove .* 1 head and 1 neuron",
        ),
        "unknown-model": (["model.name=deit_gigantic"], r"^model\.name='deit_gigantic' is not a timm model"),
        "unknown-ranker": (["pruning.ranker=pagerankish"], r"^pruning\.ranker='pagerankish' is not allowed; choose"),
        "missing-data-root": ([f"data.root={files / 'nowhere'}"], r"^data\.root='.*nowhere' does not exist"),
        "unsupported-family": (
            ["model.name=swin_tiny_patch4_window7_224", "model.kwargs={}"],
            r"^model\.name='swin_tiny_patch4_window7_224' is a timm swin_transformer model, .* supported: vision_trans",
        ),
        "imagefolder-without-images": (
            [f"data.root={empty_imagefolder(files / 'empty')}"],
            r"^data\.root='.*empty': .*train holds no images",
        ),
        "class-count-mismatch": (["model.num_classes=5"], r"^data\.root='.*' has 10 classes .* model\.num_classes=5"),
        "corrupt-model-checkpoint": (
            [f"model.checkpoint={truncated(files / 'weights.pth', some_weights)}"],
            r"^could not build model\.name='vit_tiny_patch16_224' from model\.checkpoint='.*weights\.pth'",
        ),
        "corrupt-model-safetensors": (
            [f"model.checkpoint={truncated(files / 'weights.safetensors', some_weights)}"],
            r"^could not build model\.name=.* from model\.checkpoint='.*weights\.safetensors'",
        ),
        "corrupt-ckpt-path": (
            [f"ckpt_path={truncated(files / 'stage.ckpt', some_weights)}"],
            r"^ckpt_path='.*stage\.ckpt' is not a readable checkpoint \(truncated or corrupt\?\)",
        ),
        "missing-ckpt-path": ([f"ckpt_path={files / 'gone.ckpt'}"], r"^ckpt_path='.*gone\.ckpt': no such file"),
        "truncated-last-ckpt": (["ckpt_path=last"], r"^ckpt_path='.*checkpoints/dense/last\.ckpt' is not a readable"),
        "changed-settings-on-resume": (
            ["ckpt_path=last", "pruning.sparsity=0.5"],
            r"^pruning\.sparsity=0\.5 but .*stages/dense\.json was made with pruning\.sparsity=0\.4",
        ),
        "fresh-run-over-a-finished-one": (
            [],
            r"^output dir .* already holds a run \(.*summary\.json\); pass ckpt_path",
        ),
        "missing-resume-dir": ([f"resume_dir={files / 'no-run'}"], r"^resume_dir='.*no-run': no such directory"),
        "gpu-on-cpu-machine": (["trainer.accelerator=gpu"], r"^trainer\.accelerator=gpu but this machine has no CUDA"),
        "too-many-devices": (["trainer.devices=64"], r"^trainer\.devices=64 but this machine has \d+ CPU cores"),
        "nan-loss": (
            ["optim.lr=1e30", "optim.opt=sgd"],
            r"^non-finite loss \((nan|inf)\) in stage 'dense' at epoch 0, step \d+",
        ),
    }


def run_case(base: Path, name: str, overrides: list[str]) -> Outcome:
    run_dir = base / name
    run_dir.mkdir()
    earlier = json.dumps(EARLIER_SUMMARY)
    (run_dir / "summary.json").write_text(earlier)
    if name == "truncated-last-ckpt":
        (run_dir / "checkpoints" / "dense").mkdir(parents=True)
        (run_dir / "checkpoints" / "dense" / "last.ckpt").write_bytes(b"PK\x03\x04 cut off")
    if name == "changed-settings-on-resume":
        stage_marker(run_dir, 0.4)
    resume = [] if any(o.startswith(("ckpt_path", "resume_dir")) for o in overrides) else ["ckpt_path=last"]
    if name == "fresh-run-over-a-finished-one":
        resume = []
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *FAST_RUN, f"hydra.run.dir={run_dir}", *resume, *overrides],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    kept = (run_dir / "summary.json").read_text() == earlier
    return Outcome(result.returncode, errors, result.stderr, kept)


CASE_NAMES = [  # the keys of build_cases, in its order (the fixture checks)
    "sparsity-out-of-range",
    "budget-infeasible",
    "unknown-model",
    "unknown-ranker",
    "missing-data-root",
    "unsupported-family",
    "imagefolder-without-images",
    "class-count-mismatch",
    "corrupt-model-checkpoint",
    "corrupt-model-safetensors",
    "corrupt-ckpt-path",
    "missing-ckpt-path",
    "truncated-last-ckpt",
    "changed-settings-on-resume",
    "fresh-run-over-a-finished-one",
    "missing-resume-dir",
    "gpu-on-cpu-machine",
    "too-many-devices",
    "nan-loss",
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Outcome, str]]:
    base = tmp_path_factory.mktemp("bad_input")
    cases = build_cases(base)
    assert list(cases) == CASE_NAMES
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_case, base, name, overrides) for name, (overrides, _) in cases.items()}
        return {name: (future.result(), cases[name][1]) for name, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_line_and_loses_nothing(outcomes, name):
    outcome, pattern = outcomes[name]
    assert outcome.code == 2, outcome.stderr[-3000:]
    assert len(outcome.errors) == 1, outcome.stderr[-3000:]
    message = outcome.errors[0].removeprefix("error: ")
    assert re.search(pattern, message), message
    assert "Traceback" not in outcome.stderr
    assert outcome.kept, "the earlier summary.json was changed"
