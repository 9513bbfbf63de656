"""ONNX export of a real pruned timm ViT: onnxruntime computes what PyTorch computes, at any batch size."""

import sys

import pytest
import torch

from gohsp_lightning import export_onnx, load_pruned
from gohsp_lightning.onnx_cli import main as onnx_cli
from gohsp_lightning.pruning import StructuredMasks, apply_plan, save_pruned

from .conftest import tiny_vit
from .pruning.test_export import DATA, KWARGS
from .pruning.test_surgery import PLAN

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A pruned tiny ViT saved with save_pruned, then exported from its directory (once per module)."""
    root = tmp_path_factory.mktemp("onnx")
    model = tiny_vit(seed=1)
    apply_plan(model, PLAN)
    directory = save_pruned(root / "pruned", model, PLAN, "vit_tiny_patch16_224", KWARGS, DATA)
    return directory, export_onnx(directory, root / "pruned.onnx")


def test_onnxruntime_matches_pytorch_on_real_images_at_any_batch_size(exported, images):
    directory, path = exported
    model = load_pruned(directory)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str), "the batch dimension must be symbolic"
    for batch in (1, 5, 16):
        (logits,) = session.run(["logits"], {"images": images[:batch].numpy()})
        with torch.no_grad():
            expected = model(images[:batch])
        assert logits.shape == (batch, 10)
        torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)


def test_graph_holds_the_pruned_widths(exported):
    _, path = exported
    dims = {init.name: tuple(init.dims) for init in onnx.load(str(path)).graph.initializer}
    for block, (heads, neurons) in enumerate(zip(PLAN.heads, PLAN.neurons, strict=True)):
        assert dims[f"blocks.{block}.attn.qkv.bias"] == (3 * 16 * len(heads),)
        assert dims[f"blocks.{block}.mlp.fc1.bias"] == (len(neurons),)


def test_exported_model_has_no_masks_or_hooks(exported):
    """The pruned model is plain timm modules: nothing multiplies a mask per call, attention stays fused."""
    directory, _ = exported
    model = load_pruned(directory)
    dense = tiny_vit()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any(isinstance(m, StructuredMasks) for m in model.modules())
    assert all(p.is_contiguous() for p in model.parameters())
    assert [b.attn.fused_attn for b in model.blocks] == [b.attn.fused_attn for b in dense.blocks]
    assert [b.attn.num_heads for b in model.blocks] == [len(h) for h in PLAN.heads]


def test_cli_reports_a_bad_directory_in_one_line(tmp_path, capsys):
    assert onnx_cli([str(tmp_path / "missing"), str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: export dir") and "missing model.safetensors" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()


def test_missing_optional_package_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r"'onnxscript'.*gohsp-lightning\[onnx\]"):
        export_onnx(tiny_vit(), tmp_path / "model.onnx")
