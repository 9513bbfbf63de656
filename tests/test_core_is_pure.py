"""The pruning core must stay free of Lightning, Hydra, OmegaConf and W&B."""

import ast
import subprocess
import sys
from pathlib import Path

import gohsp_lightning.pruning

FORBIDDEN = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb")


def test_core_sources_import_no_framework():
    core = Path(gohsp_lightning.pruning.__file__).parent
    offenders = []
    for path in sorted(core.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_the_core_loads_no_training_framework():
    # timm itself may import wandb when installed, so only the frameworks we could pull in are checked here
    code = (
        "import sys, gohsp_lightning.pruning; "
        "print(','.join(m for m in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
