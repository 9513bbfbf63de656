"""Entry point: ``python run.py [experiment=NAME] [key=value ...]`` (Hydra; ``-m`` for sweeps)."""

import sys

import hydra
from omegaconf import DictConfig

from gohsp_lightning.cli import main_from_hydra, require_optional_plugins


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return main_from_hydra(cfg)


if __name__ == "__main__":
    require_optional_plugins(sys.argv[1:])
    main()
