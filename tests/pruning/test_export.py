import json

import pytest
import torch

from gohsp_lightning import load_pruned
from gohsp_lightning.pruning import apply_plan, count_params, save_pruned

from .test_surgery import PLAN

KWARGS = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, num_classes=10, qkv_bias=True)
DATA = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic", "crop_pct": 1.0}


@pytest.fixture
def exported(tmp_path, model):
    apply_plan(model, PLAN)
    save_pruned(tmp_path / "pruned", model, PLAN, "vit_tiny_patch16_224", KWARGS, DATA)
    return tmp_path / "pruned", model


def test_round_trip_gives_the_same_logits(exported, images):
    directory, model = exported
    loaded = load_pruned(directory)
    assert not loaded.training
    assert count_params(loaded) == count_params(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    config = json.loads((directory / "config.json").read_text())
    assert config["heads_per_block"] == [2, 1, 4]
    assert config["data_config"]["input_size"] == [3, 32, 32]


def test_weights_are_safetensors_not_pickle(exported):
    directory, _ = exported
    from safetensors.torch import load_file

    assert "blocks.0.attn.qkv.weight" in load_file(str(directory / "model.safetensors"))


def test_missing_file_is_named(exported):
    directory, _ = exported
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        load_pruned(directory)


def test_config_that_does_not_match_the_weights_is_rejected(exported):
    directory, _ = exported
    config = json.loads((directory / "config.json").read_text())
    config["plan"]["heads"][0] = [0, 1, 2]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match model.safetensors"):
        load_pruned(directory)


def test_truncated_weights_are_reported(exported):
    directory, _ = exported
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_pruned(directory)


def test_exported_files_get_normal_permissions(exported, tmp_path):
    directory, _ = exported
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    expected = reference.stat().st_mode & 0o777
    assert (directory / "model.safetensors").stat().st_mode & 0o777 == expected
    assert (directory / "config.json").stat().st_mode & 0o777 == expected
